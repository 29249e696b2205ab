//! Abuse limits: sessions per target and per initiator, CHAP failure
//! throttling, slow logins, logins in progress, oversized login text.

use std::io::Read;
use std::time::{Duration, Instant};

use iet::config::Config;
use iet::proto::pdu::{Bhs, Opcode};
use iet::target::ChapAccount;
use iet::target::limits::LimitSettings;
use iet_tests::initiator::{Conn, LoginError, LoginOptions};
use iet_tests::inprocess::{InProcessTarget, TARGET, mem_config};

fn status(t: &InProcessTarget, opts: &LoginOptions) -> Result<Conn, u16> {
    let mut c = Conn::connect(t.addr).expect("connect");
    match c.login(opts) {
        Ok(()) => Ok(c),
        Err(LoginError::Status(s)) => Err(s.code()),
        Err(e) => panic!("login: {e:?}"),
    }
}

fn isid(opts: &LoginOptions, last: u8) -> LoginOptions {
    let mut o = opts.clone();
    o.isid[5] = last;
    o
}

#[test]
fn the_session_after_the_limit_is_refused_with_out_of_resources() {
    let mut cfg = mem_config(&["mem:1M"]);
    cfg.targets[0].params.max_sessions = Some(2);
    cfg.limits = LimitSettings {
        max_sessions_per_initiator: 1,
        ..LimitSettings::default()
    };
    let t = InProcessTarget::start(cfg);
    let a = LoginOptions::normal(TARGET);
    let mut b = LoginOptions::normal(TARGET);
    b.initiator = "iqn.2026-11.io.iet:other".into();
    let mut c = LoginOptions::normal(TARGET);
    c.initiator = "iqn.2026-11.io.iet:third".into();
    let _s1 = status(&t, &a).expect("first session");
    assert_eq!(
        status(&t, &isid(&a, 9)).err(),
        Some(0x0302),
        "a second session of one initiator"
    );
    let _s2 = status(&t, &b).expect("another initiator's session");
    assert_eq!(
        status(&t, &c).err(),
        Some(0x0302),
        "the target's third session"
    );
    // Reinstating an existing session (same ISID) is no new session.
    let _again = status(&t, &a).expect("reinstatement");
}

fn chap_config() -> Config {
    let mut cfg = mem_config(&["mem:1M"]);
    cfg.targets[0].incoming = vec![ChapAccount {
        user: "alice".into(),
        secret: "alice-secret-123".into(),
    }];
    cfg
}

#[test]
fn chap_failures_slow_down_and_lock_out_one_initiator_only() {
    let t = InProcessTarget::start(chap_config());
    let mut bad = LoginOptions::normal(TARGET);
    bad.initiator = "iqn.2026-11.io.iet:guesser".into();
    bad.chap = Some(("alice".into(), "wrong-guess-0000".into()));
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(status(&t, &bad).err(), Some(0x0201));
        times.push(started.elapsed());
    }
    assert!(
        times[3] > times[0] + Duration::from_millis(200),
        "answers come later and later: {times:?}"
    );
    // Locked out: even the right secret is refused now.
    bad.chap = Some(("alice".into(), "alice-secret-123".into()));
    assert_eq!(status(&t, &bad).err(), Some(0x0201), "locked out");
    // Another initiator logs in at once.
    let mut good = LoginOptions::normal(TARGET);
    good.chap = Some(("alice".into(), "alice-secret-123".into()));
    let started = Instant::now();
    status(&t, &good).expect("another initiator is not locked out");
    assert!(started.elapsed() < Duration::from_millis(500));
}

fn login_pdu(itt: u32, data: &[u8]) -> (Bhs, Vec<u8>) {
    let mut bhs = Bhs::new(Opcode::LoginRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x81; // T=1, CSG 0, NSG 1
    bhs.0[8] = 0x80;
    bhs.set_itt(itt);
    (bhs, data.to_vec())
}

#[test]
fn slow_logins_time_out_and_busy_portals_answer_service_unavailable() {
    let mut cfg = mem_config(&["mem:1M"]);
    cfg.limits = LimitSettings {
        max_logins_in_progress: 2,
        login_timeout_secs: 2,
        ..LimitSettings::default()
    };
    let t = InProcessTarget::start(cfg);
    // A silent connection holds no place, but is closed at the deadline.
    let mut silent = Conn::connect(t.addr).unwrap();
    // Two that start their login (security stage, T=0) and stall hold both.
    let stall = || {
        let mut c = Conn::connect(t.addr).unwrap();
        let text = format!(
            "InitiatorName=iqn.2026-11.io.iet:slow\0TargetName={TARGET}\0AuthMethod=None\0"
        );
        let (mut bhs, data) = login_pdu(1, text.as_bytes());
        bhs.0[1] = 0x00;
        c.send(&bhs, &data).unwrap();
        assert_eq!(
            c.recv().expect("a Login Response").bhs.0[36],
            0,
            "continuing"
        );
        c
    };
    let mut idle1 = stall();
    let mut idle2 = stall();
    std::thread::sleep(Duration::from_millis(200));
    // A third is answered with 0x0301 (service unavailable).
    let mut third = Conn::connect(t.addr).unwrap();
    match third.login(&LoginOptions::normal(TARGET)) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0301),
        other => panic!("expected service unavailable, got {other:?}"),
    }
    // The slow ones are closed at the login deadline.
    let started = Instant::now();
    assert!(silent.closed_within(Duration::from_secs(4)));
    assert!(idle1.closed_within(Duration::from_secs(4)));
    assert!(idle2.closed_within(Duration::from_secs(4)));
    assert!(started.elapsed() < Duration::from_secs(4));
    // Places free again.
    status(&t, &LoginOptions::normal(TARGET)).expect("a login after the slow ones went");
}

#[test]
fn oversized_login_text_is_refused_with_initiator_error() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut c = Conn::connect(t.addr).unwrap();
    let mut text = b"InitiatorName=iqn.2026-11.io.iet:big\0".to_vec();
    text.resize(9000, b'x');
    let (bhs, data) = login_pdu(1, &text);
    c.send(&bhs, &data).unwrap();
    let resp = c.recv().expect("a Login Response");
    assert_eq!(resp.bhs.opcode(), Some(Opcode::LoginResponse));
    assert_eq!((resp.bhs.0[36], resp.bhs.0[37]), (0x02, 0x00));
    let mut rest = [0u8; 1];
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(c.sock.read(&mut rest).unwrap_or(0), 0, "then closed");
}
