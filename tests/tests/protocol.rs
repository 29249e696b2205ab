//! iSCSI protocol behaviour (RFC 7143) driven by the scripted initiator
//! against an in-process target on loopback.

use std::time::{Duration, Instant};

use iet::config::Config;
use iet::proto::pdu::{Bhs, Opcode};
use iet::target::ChapAccount;
use iet_tests::initiator::{Conn, LoginError, LoginOptions, garbage};
use iet_tests::inprocess::{InProcessTarget, TARGET, mem_config};

const BS: u32 = 512;

fn login(t: &InProcessTarget, opts: &LoginOptions) -> Conn {
    let mut c = Conn::connect(t.addr).expect("connect");
    c.login(opts)
        .unwrap_or_else(|e| panic!("login failed: {e:?}"));
    if opts.target.is_some() {
        let ua = c.clear_unit_attention(0).expect("TEST UNIT READY");
        assert!(
            ua.contains(&(0x29, 0x00)),
            "a new I_T nexus reports POWER ON, RESET: {ua:?}"
        );
    }
    c
}

fn login_status(t: &InProcessTarget, opts: &LoginOptions) -> u16 {
    let mut c = Conn::connect(t.addr).expect("connect");
    match c.login(opts) {
        Err(LoginError::Status(s)) => s.code(),
        other => panic!("expected a login failure, got {other:?}"),
    }
}

fn chap_config() -> Config {
    let mut cfg = mem_config(&["mem:16M"]);
    cfg.targets[0].incoming = vec![ChapAccount {
        user: "alice".into(),
        secret: "alice-secret-123".into(),
    }];
    cfg.targets[0].outgoing = Some(ChapAccount {
        user: "target".into(),
        secret: "target-secret-456".into(),
    });
    cfg
}

#[test]
fn login_failures_carry_the_rfc_status() {
    let mut cfg = chap_config();
    let mut open = iet::config::TargetConfig::new("iqn.2026-11.io.iet:acl");
    open.luns = vec![iet::config::LunSpec::new(0, "mem:1M")];
    open.allow = vec!["iqn.2026-11.io.iet:someone-else".into()];
    open.deny = vec!["ALL".into()];
    cfg.targets.push(open);
    let t = InProcessTarget::start(cfg);

    assert_eq!(
        login_status(&t, &LoginOptions::normal("iqn.2026-11.io.iet:nope")),
        0x0203,
        "unknown target"
    );
    assert_eq!(
        login_status(&t, &LoginOptions::normal("iqn.2026-11.io.iet:acl")),
        0x0202,
        "ACL deny"
    );
    let mut wrong = LoginOptions::normal(TARGET);
    wrong.chap = Some(("alice".into(), "not-the-secret!".into()));
    assert_eq!(login_status(&t, &wrong), 0x0201, "wrong CHAP secret");
    let mut unknown_user = LoginOptions::normal(TARGET);
    unknown_user.chap = Some(("mallory".into(), "alice-secret-123".into()));
    assert_eq!(login_status(&t, &unknown_user), 0x0201, "unknown CHAP user");
    assert_eq!(
        login_status(&t, &LoginOptions::normal(TARGET)),
        0x0201,
        "CHAP required, None offered"
    );
    let mut bad_tsih = LoginOptions::normal(TARGET);
    bad_tsih.chap = Some(("alice".into(), "alice-secret-123".into()));
    bad_tsih.tsih = 0x7777;
    assert_eq!(
        login_status(&t, &bad_tsih),
        0x020a,
        "session does not exist"
    );

    // Missing InitiatorName: 0x0207.
    let mut c = Conn::connect(t.addr).unwrap();
    let mut bhs = Bhs::new(Opcode::LoginRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x81;
    bhs.set_itt(1);
    let keys = iet_tests::initiator::encode_keys(&[("TargetName", TARGET), ("AuthMethod", "None")]);
    match c.login_exchange(&bhs, &keys) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0207, "missing parameter"),
        other => panic!("expected 0x0207, got {other:?}"),
    }

    // Unsupported version: 0x0205.
    let mut c = Conn::connect(t.addr).unwrap();
    let mut bhs = Bhs::new(Opcode::LoginRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x81;
    bhs.0[2] = 0x10;
    bhs.0[3] = 0x10;
    bhs.set_itt(1);
    let keys = iet_tests::initiator::encode_keys(&[
        ("InitiatorName", "iqn.2026-11.io.iet:x"),
        ("TargetName", TARGET),
    ]);
    match c.login_exchange(&bhs, &keys) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0205, "unsupported version"),
        other => panic!("expected 0x0205, got {other:?}"),
    }

    // Invalid stage transition (CSG=FullFeature): 0x020b.
    let mut c = Conn::connect(t.addr).unwrap();
    let mut bhs = Bhs::new(Opcode::LoginRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x80 | (3 << 2) | 3;
    bhs.set_itt(1);
    match c.login_exchange(&bhs, &keys) {
        Err(LoginError::Status(s)) => assert_eq!(
            s.class,
            0x02,
            "initiator error class, got {:#06x}",
            s.code()
        ),
        other => panic!("expected an initiator error, got {other:?}"),
    }
}

#[test]
fn chap_one_way_and_mutual() {
    let t = InProcessTarget::start(chap_config());
    let mut opts = LoginOptions::normal(TARGET);
    opts.chap = Some(("alice".into(), "alice-secret-123".into()));
    let mut c = login(&t, &opts);
    assert_eq!(c.nop(b"ping").unwrap(), b"ping");
    opts.isid[5] ^= 1;
    opts.mutual = Some(("target".into(), "target-secret-456".into()));
    let mut c = login(&t, &opts);
    assert_eq!(c.nop(b"mutual").unwrap(), b"mutual");
}

#[test]
fn read_write_with_and_without_digests() {
    let t = InProcessTarget::start(mem_config(&["mem:16M"]));
    for digests in [false, true] {
        let mut opts = LoginOptions::normal(TARGET);
        opts.digests = digests;
        let mut c = login(&t, &opts);
        assert_eq!(c.digests.header, digests);
        let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        let w = c.write10(0, 100, &data, BS).unwrap();
        assert_eq!(w.status, 0, "write status, sense {:02x?}", w.sense);
        let r = c
            .read10(0, 100, (data.len() / BS as usize) as u16, BS)
            .unwrap();
        assert_eq!(r.status, 0);
        assert!(
            r.data == data,
            "read back what was written (digests={digests})"
        );
        assert_eq!(c.logout().unwrap(), 0);
    }
}

#[test]
fn bad_header_digest_is_never_executed() {
    let t = InProcessTarget::start(mem_config(&["mem:4M"]));
    let mut opts = LoginOptions::normal(TARGET);
    opts.digests = true;
    let mut c = login(&t, &opts);
    let zeros = vec![0u8; BS as usize];
    assert_eq!(c.write10(0, 7, &zeros, BS).unwrap().status, 0);
    // A WRITE(10) with immediate data whose header digest is wrong.
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[5] = 7;
    cdb[8] = 1;
    let bhs = c.command_bhs(0, &cdb, false, true, BS);
    let mut wire = bytes::BytesMut::new();
    iet::proto::pdu::encode_pdu(&bhs, &[], &vec![0xee; BS as usize], c.digests, &mut wire);
    wire[48] ^= 0xff;
    c.send_raw(&wire).unwrap();
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection must drop on a header digest error"
    );
    opts.isid[5] ^= 1;
    let mut c2 = login(&t, &opts);
    let r = c2.read10(0, 7, 1, BS).unwrap();
    assert_eq!(r.data, zeros, "the corrupted command must not have run");
}

#[test]
fn oversized_data_segment_is_refused_and_not_executed() {
    let t = InProcessTarget::start(mem_config(&["mem:4M"]));
    let opts = LoginOptions::normal(TARGET);
    let mut c = login(&t, &opts);
    let mrdsl = c.target_mrdsl;
    let blocks = (mrdsl / BS as usize + 1) as u16;
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[5] = 9;
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    let len = usize::from(blocks) * BS as usize;
    let bhs = c.command_bhs(0, &cdb, false, true, len as u32);
    c.send(&bhs, &vec![0xab; len]).unwrap();
    // Either a Reject or a dropped connection; never a SCSI Response.
    match c.recv() {
        Ok(pdu) => assert_eq!(pdu.bhs.opcode(), Some(Opcode::Reject), "got {:?}", pdu.bhs),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
    let mut c2 = login(
        &t,
        &LoginOptions {
            isid: [1, 2, 3, 4, 5, 6],
            ..opts
        },
    );
    let r = c2.read10(0, 9, 1, BS).unwrap();
    assert_eq!(
        r.data,
        vec![0u8; BS as usize],
        "the oversized write must not have run"
    );
}

#[test]
fn garbage_and_huge_segments_close_only_that_connection() {
    let t = InProcessTarget::start(mem_config(&["mem:4M"]));
    let mut good = login(&t, &LoginOptions::normal(TARGET));
    // Garbage during login.
    let mut bad = Conn::connect(t.addr).unwrap();
    bad.send_raw(&garbage()).unwrap();
    assert!(
        bad.closed_within(Duration::from_secs(5)),
        "garbage closes the connection"
    );
    // A BHS announcing a 16 MiB data segment in full-feature phase.
    let mut big = login(
        &t,
        &LoginOptions {
            isid: [9, 9, 9, 9, 9, 9],
            ..LoginOptions::normal(TARGET)
        },
    );
    let mut bhs = Bhs::new(Opcode::ScsiCommand);
    bhs.set_data_segment_len((16 << 20) - 1);
    big.send_raw(&bhs.0).unwrap();
    assert!(
        big.closed_within(Duration::from_secs(5)),
        "16 MiB segment closes the connection"
    );
    // The first session is unaffected.
    assert_eq!(good.nop(b"still here").unwrap(), b"still here");
}

#[test]
fn half_open_connections_do_not_delay_a_login() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let idle: Vec<_> = (0..200)
        .map(|_| std::net::TcpStream::connect(t.addr).expect("half-open connect"))
        .collect();
    let start = Instant::now();
    let mut c = login(&t, &LoginOptions::normal(TARGET));
    assert_eq!(c.nop(b"x").unwrap(), b"x");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "login took {:?}",
        start.elapsed()
    );
    drop(idle);
}

#[test]
fn sixty_four_sessions_each_keep_their_own_data() {
    let t = InProcessTarget::start(mem_config(&["mem:64M"]));
    let addr = t.addr;
    let threads: Vec<_> = (0..64u8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr).unwrap();
                let mut opts = LoginOptions::normal(TARGET);
                opts.isid = [0x80, 0, 0, 0, 1, i];
                c.login(&opts)
                    .unwrap_or_else(|e| panic!("session {i}: {e:?}"));
                c.clear_unit_attention(0).expect("TEST UNIT READY");
                let data = vec![i; 64 * 1024];
                let lba = u32::from(i) * 256;
                assert_eq!(c.write10(0, lba, &data, BS).unwrap().status, 0);
                let r = c.read10(0, lba, 128, BS).unwrap();
                assert!(r.data == data, "session {i} read back another's data");
                assert_eq!(c.logout().unwrap(), 0);
            })
        })
        .collect();
    for th in threads {
        th.join().expect("session thread");
    }
}

#[test]
fn reinstatement_closes_the_old_connection() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let opts = LoginOptions::normal(TARGET);
    let mut old = login(&t, &opts);
    let mut new = login(&t, &opts);
    assert!(
        old.closed_within(Duration::from_secs(5)),
        "old connection must be closed"
    );
    assert_eq!(new.nop(b"new").unwrap(), b"new");
}

#[test]
fn commands_outside_the_window_are_ignored() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut c = login(&t, &LoginOptions::normal(TARGET));
    let tur = [0u8; 6];
    let saved = c.cmd_sn;
    c.cmd_sn = c.max_cmd_sn.wrapping_add(1);
    let bhs = c.command_bhs(0, &tur, false, false, 0);
    c.send(&bhs, &[]).unwrap();
    c.sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        c.recv().is_err(),
        "a command beyond MaxCmdSN must get no answer"
    );
    c.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.cmd_sn = saved;
    c.rbuf.clear();
    let ok = c.scsi(0, &tur, &[], 0).unwrap();
    assert_eq!(ok.status, 0);
}

#[test]
fn discovery_lists_every_portal() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut c = login(&t, &LoginOptions::discovery());
    let answer = c.text(&[("SendTargets", "All")]).unwrap();
    assert_eq!(
        answer.get("TargetName").map(Vec::as_slice),
        Some(&[TARGET.to_owned()][..])
    );
    let addrs = answer.get("TargetAddress").cloned().unwrap_or_default();
    assert!(
        addrs.iter().any(|a| a.starts_with(&t.addr.to_string())),
        "TargetAddress {addrs:?} lists {}",
        t.addr
    );
}

#[test]
fn nop_in_keepalive_closes_dead_connections() {
    let mut cfg = mem_config(&["mem:1M"]);
    cfg.targets[0].params.nop_interval = Some(1);
    cfg.targets[0].params.nop_timeout = Some(1);
    let t = InProcessTarget::start(cfg);
    // A silent initiator: the target pings, gets no answer, and closes.
    let mut silent = login(&t, &LoginOptions::normal(TARGET));
    let start = Instant::now();
    let ping = silent.recv().expect("a NOP-In ping");
    assert_eq!(ping.bhs.opcode(), Some(Opcode::NopIn));
    assert_eq!(ping.bhs.itt(), 0xffff_ffff, "unsolicited NOP-In");
    assert_ne!(
        ping.bhs.u32_at(20),
        0xffff_ffff,
        "it asks for an answer (TTT)"
    );
    assert!(
        silent.closed_within(Duration::from_secs(5)),
        "dead connection closed"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // An initiator that answers stays connected across several intervals.
    let mut alive = login(
        &t,
        &LoginOptions {
            isid: [7, 7, 7, 7, 7, 7],
            ..LoginOptions::normal(TARGET)
        },
    );
    for _ in 0..3 {
        assert_eq!(
            alive.nop(b"x").unwrap(),
            b"x",
            "nop() answers pings while waiting"
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(alive.nop(b"still").unwrap(), b"still");
}

#[test]
fn two_connections_share_a_session() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let opts = LoginOptions::normal(TARGET);
    let mut first = login(&t, &opts);
    let mut second = Conn::connect(t.addr).unwrap();
    second.cmd_sn = first.cmd_sn;
    second
        .login(&LoginOptions {
            tsih: first.tsih,
            cid: 1,
            ..opts.clone()
        })
        .unwrap_or_else(|e| panic!("second connection: {e:?}"));
    assert_eq!(second.tsih, first.tsih, "joined the same session");
    assert_eq!(first.nop(b"one").unwrap(), b"one");
    assert_eq!(second.nop(b"two").unwrap(), b"two");
    // A TSIH nobody has is refused.
    let mut stray = Conn::connect(t.addr).unwrap();
    match stray.login(&LoginOptions {
        tsih: first.tsih.wrapping_add(100),
        cid: 2,
        ..opts
    }) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x020a),
        other => panic!("expected session does not exist, got {other:?}"),
    }
}

#[test]
fn shutdown_asks_initiators_to_log_out() {
    let mut t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut c = login(&t, &LoginOptions::normal(TARGET));
    let addr = t.addr;
    let stopper = std::thread::spawn(move || t.stop());
    let msg = c.recv().expect("an Async Message before the close");
    assert_eq!(msg.bhs.opcode(), Some(Opcode::AsyncMessage));
    assert_eq!(msg.bhs.0[36], 1, "AsyncEvent 1: logout requested");
    assert_eq!(c.logout().unwrap(), 0, "logout succeeds");
    stopper.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the portal is closed"
    );
}

#[test]
fn logout_closes_the_session() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut c = login(&t, &LoginOptions::normal(TARGET));
    let tsih = c.tsih;
    assert_eq!(c.logout().unwrap(), 0);
    assert!(c.closed_within(Duration::from_secs(2)));
    let mut again = Conn::connect(t.addr).unwrap();
    match again.login(&LoginOptions {
        tsih,
        cid: 1,
        ..LoginOptions::normal(TARGET)
    }) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x020a, "the session is gone"),
        other => panic!("expected session does not exist, got {other:?}"),
    }
}

#[test]
fn discovery_chap_and_acl_filtering() {
    let mut cfg = mem_config(&["mem:1M"]);
    cfg.discovery.incoming = vec![ChapAccount {
        user: "disco".into(),
        secret: "disco-secret-1".into(),
    }];
    let mut hidden = iet::config::TargetConfig::new("iqn.2026-11.io.iet:hidden");
    hidden.allow = vec!["iqn.2026-11.io.iet:someone-else".into()];
    hidden.deny = vec!["ALL".into()];
    cfg.targets.push(hidden);
    let t = InProcessTarget::start(cfg);
    let mut no_chap = Conn::connect(t.addr).unwrap();
    match no_chap.login(&LoginOptions::discovery()) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0201, "discovery needs CHAP"),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    let mut opts = LoginOptions::discovery();
    opts.chap = Some(("disco".into(), "disco-secret-1".into()));
    let mut c = login(&t, &opts);
    let answer = c.text(&[("SendTargets", "All")]).unwrap();
    assert_eq!(
        answer.get("TargetName").cloned().unwrap_or_default(),
        vec![TARGET.to_owned()],
        "targets the initiator may not use are not listed"
    );
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_pdus_never_take_the_target_down() {
    let t = InProcessTarget::start(mem_config(&["mem:8M"]));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut witness = login(
        &t,
        &LoginOptions {
            isid: [3, 3, 3, 3, 3, 3],
            ..LoginOptions::normal(TARGET)
        },
    );
    for round in 0..60u8 {
        let mut c = login(
            &t,
            &LoginOptions {
                isid: [4, 4, 4, 4, 0, round],
                ..LoginOptions::normal(TARGET)
            },
        );
        for _ in 0..20 {
            let mut bhs = Bhs::default();
            for b in &mut bhs.0 {
                *b = rng.next() as u8;
            }
            // Mostly valid initiator opcodes, small segments, no AHS.
            let ops = [0x00u8, 0x01, 0x02, 0x04, 0x05, 0x06, 0x10, 0x1c];
            bhs.0[0] = (bhs.0[0] & 0x40) | ops[(rng.next() % ops.len() as u64) as usize];
            bhs.0[4] = 0;
            let len = (rng.next() % 1024) as usize;
            bhs.set_data_segment_len(len);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut wire = bytes::BytesMut::new();
            iet::proto::pdu::encode_pdu(&bhs, &[], &data, c.digests, &mut wire);
            if c.send_raw(&wire).is_err() {
                break;
            }
        }
        drop(c);
        assert_eq!(
            witness.nop(&[round]).expect("the target still answers"),
            vec![round]
        );
    }
}

#[test]
fn too_many_connections_and_unknown_session_types_are_refused() {
    let mut cfg = mem_config(&["mem:1M"]);
    cfg.targets[0].params.max_connections = Some(1);
    let t = InProcessTarget::start(cfg);
    let opts = LoginOptions::normal(TARGET);
    let first = login(&t, &opts);
    // MaxConnections=1: a second connection cannot join (0x0206).
    let mut second = Conn::connect(t.addr).unwrap();
    second.cmd_sn = first.cmd_sn;
    match second.login(&LoginOptions {
        tsih: first.tsih,
        cid: 1,
        ..opts.clone()
    }) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0206, "too many connections"),
        other => panic!("expected 0x0206, got {other:?}"),
    }
    // SessionType neither Normal nor Discovery (0x0209).
    let mut c = Conn::connect(t.addr).unwrap();
    let mut bhs = Bhs::new(Opcode::LoginRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x81;
    bhs.set_itt(1);
    let keys = iet_tests::initiator::encode_keys(&[
        ("InitiatorName", "iqn.2026-11.io.iet:x"),
        ("SessionType", "Maintenance"),
        ("AuthMethod", "None"),
    ]);
    match c.login_exchange(&bhs, &keys) {
        Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0209, "session type not supported"),
        other => panic!("expected 0x0209, got {other:?}"),
    }
}
