//! ietd with `--ebpf on` (root, live kernel; in CI a skip is a failure):
//! sessions appear in the pinned connection map, sk_msg accounting matches
//! the daemon's own PDU counters exactly, a killed initiator connection is
//! ended through the ring-buffer event within 100 ms, and same-host
//! redirect returns the same data.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use iet::control::client::Client;
use iet::control::protocol::{Request, SessionView};
use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir, require_root};

const IQN: &str = "iqn.2026-11.io.iet:dataplane";
const BS: u32 = 512;

fn start(tag: &str) -> (TempDir, Ietd, String) {
    let dir = TempDir::new(tag);
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let pin = format!("/sys/fs/bpf/iet-dp-{tag}-{}", std::process::id());
    let ietd = Ietd::start(
        &dir,
        portal,
        &[
            "--portal",
            &portal.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:64M",
            "--ebpf",
            "on",
            "--pin-dir",
            &pin,
        ],
    );
    (dir, ietd, pin)
}

fn sessions(ietd: &Ietd) -> Vec<SessionView> {
    let mut c = Client::connect(&ietd.control).expect("control socket");
    let resp = c.call(Request::ShowSessions).expect("show sessions");
    assert!(resp.ok, "{resp:?}");
    serde_json::from_value(resp.data.unwrap_or_default()).expect("session views")
}

fn login(ietd: &Ietd, isid: u8) -> Conn {
    let mut c = Conn::connect(ietd.portal).expect("connect");
    let mut opts = LoginOptions::normal(IQN);
    opts.isid[5] = isid;
    c.login(&opts)
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

fn local_of(c: &Conn) -> SocketAddr {
    c.sock.local_addr().expect("local address")
}

#[test]
fn accounting_matches_the_daemons_counters_exactly() {
    if !require_root("accounting_matches_the_daemons_counters_exactly") {
        return;
    }
    let (_dir, ietd, pin) = start("acct");
    ietd.adm_ok(&[
        "portal",
        "set",
        &ietd.portal.to_string(),
        "--accounting",
        "true",
    ]);
    let mut c = login(&ietd, 1);
    let me = local_of(&c);
    let data = vec![0x5au8; 4096];
    for i in 0..5 {
        assert_eq!(c.write10(0, i * 8, &data, BS).unwrap().status, 0);
    }
    for i in 0..20 {
        let r = c.read10(0, (i % 5) * 8, 8, BS).unwrap();
        assert_eq!(r.status, 0);
        assert_eq!(r.data, data);
    }
    assert_eq!(c.nop(b"sync").unwrap(), b"sync");
    let view = sessions(&ietd);
    let conn = view
        .iter()
        .flat_map(|s| &s.connections)
        .find(|c| c.peer == me)
        .unwrap_or_else(|| panic!("our connection {me} in {view:?}"));
    let kernel = conn
        .kernel
        .as_ref()
        .expect("the kernel's record with --ebpf on");
    assert_eq!(kernel.state, 1, "ESTABLISHED");
    let mut ours = conn.tx_pdus_by_opcode.clone();
    let mut theirs = kernel.pdus_by_opcode.clone();
    ours.sort();
    theirs.sort();
    assert_eq!(
        theirs, ours,
        "sk_msg counts equal the daemon's own, opcode by opcode"
    );
    let data_in = ours
        .iter()
        .find(|(k, _)| k == "DataIn")
        .map_or(0, |(_, n)| *n);
    assert!(
        data_in >= 20,
        "20 reads of 4 KiB each sent Data-In ({data_in})"
    );
    let log = ietd.log();
    let line = format!(
        "iSCSI connection 127.0.0.1:{} -> port {} tuned and tracked",
        me.port(),
        ietd.portal.port()
    );
    assert!(
        log.contains(&line),
        "sock_ops's aya-log record reaches the daemon's log:\n{log}"
    );
    // bpftool sees the same connection under the pin dir.
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned", &format!("{pin}/connections")])
        .output()
        .expect("bpftool");
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        dump.as_array()
            .unwrap()
            .iter()
            .any(|e| e["formatted"]["key"]["remote_port"] == me.port()
                && e["formatted"]["key"]["local_port"] == ietd.portal.port()),
        "the session's 4-tuple is in the pinned map: {dump}"
    );
}

#[test]
fn a_killed_connection_ends_its_session_through_the_event_path() {
    if !require_root("a_killed_connection_ends_its_session_through_the_event_path") {
        return;
    }
    let (_dir, ietd, _pin) = start("kill");
    let c = login(&ietd, 2);
    let me = local_of(&c);
    assert!(
        sessions(&ietd)
            .iter()
            .any(|s| s.connections.iter().any(|x| x.peer == me))
    );
    let sock: TcpStream = c.sock;
    // An abortive close (RST), as when the initiator's host kills it.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    let killed = Instant::now();
    drop(sock);
    loop {
        if !sessions(&ietd)
            .iter()
            .any(|s| s.connections.iter().any(|x| x.peer == me))
        {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "session still there:\n{}",
            ietd.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "session gone after {took:?}"
    );
    let log = ietd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("kernel event: connection closing")
                && l.contains(&format!("peer={me}"))),
        "the ring-buffer event reached the daemon:\n{log}"
    );
}

#[test]
fn redirect_returns_the_same_data_as_plain_tcp() {
    if !require_root("redirect_returns_the_same_data_as_plain_tcp") {
        return;
    }
    let (_dir, ietd, _pin) = start("redir");
    let pattern: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut reads = Vec::new();
    for (isid, redirect) in [(3u8, "false"), (4u8, "true")] {
        ietd.adm_ok(&[
            "portal",
            "set",
            &ietd.portal.to_string(),
            "--accounting",
            "false",
            "--redirect",
            redirect,
        ]);
        let mut c = login(&ietd, isid);
        let lba = u32::from(isid) * 4096;
        for (i, chunk) in pattern.chunks(256 * 1024).enumerate() {
            let at = lba + (i as u32) * 512;
            assert_eq!(
                c.write10(0, at, chunk, BS).unwrap().status,
                0,
                "write with redirect={redirect}"
            );
        }
        let mut back = Vec::new();
        for i in 0..4u32 {
            let r = c.read10(0, lba + i * 512, 512, BS).unwrap();
            assert_eq!(r.status, 0, "read with redirect={redirect}");
            back.extend_from_slice(&r.data);
        }
        assert!(back == pattern, "data intact with redirect={redirect}");
        reads.push(back);
        assert_eq!(c.logout().unwrap(), 0);
    }
    assert_eq!(reads[0], reads[1]);
    let mut ctl = Client::connect(&ietd.control).unwrap();
    let stats = ctl.call(Request::Stats).unwrap().data.unwrap_or_default();
    assert!(
        stats["kernel"]["redirected_msgs"].as_u64().unwrap_or(0) > 0,
        "redirect was in use: {stats}"
    );
}

#[test]
fn same_host_redirect_is_on_by_default() {
    if !require_root("same_host_redirect_is_on_by_default") {
        return;
    }
    let (_dir, ietd, _pin) = start("default");
    let mut c = login(&ietd, 5);
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 199) as u8).collect();
    assert_eq!(c.write10(0, 64, &data, BS).unwrap().status, 0);
    assert!(
        c.read10(0, 64, 128, BS).unwrap().data == data,
        "data intact"
    );
    let mut ctl = Client::connect(&ietd.control).unwrap();
    let stats = ctl.call(Request::Stats).unwrap().data.unwrap_or_default();
    assert!(
        stats["kernel"]["redirected_msgs"].as_u64().unwrap_or(0) > 0,
        "a loopback initiator is redirected without any switch: {stats}"
    );
}

#[test]
fn ipv6_connections_are_tracked_and_redirected() {
    if !require_root("ipv6_connections_are_tracked_and_redirected") {
        return;
    }
    let dir = TempDir::new("v6");
    let portal: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let pin = format!("/sys/fs/bpf/iet-dp-v6-{}", std::process::id());
    let ietd = Ietd::start(
        &dir,
        portal,
        &[
            "--portal",
            &portal.to_string(),
            "--target",
            IQN,
            "--lun",
            "mem:64M",
            "--ebpf",
            "on",
            "--pin-dir",
            &pin,
        ],
    );
    let mut c = login(&ietd, 6);
    let me = local_of(&c);
    assert!(me.is_ipv6(), "an IPv6 connection: {me}");
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 193) as u8).collect();
    assert_eq!(c.write10(0, 32, &data, BS).unwrap().status, 0);
    assert!(
        c.read10(0, 32, 128, BS).unwrap().data == data,
        "data intact"
    );
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned", &format!("{pin}/connections")])
        .output()
        .expect("bpftool");
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let loopback6 = serde_json::json!(std::net::Ipv6Addr::LOCALHOST.octets());
    assert!(
        dump.as_array().unwrap().iter().any(|e| {
            let k = &e["formatted"]["key"];
            k["remote_port"] == me.port()
                && k["local_port"] == portal.port()
                && k["local_addr"] == loopback6
        }),
        "sock_ops tracks the IPv6 connection: {dump}"
    );
    let mut ctl = Client::connect(&ietd.control).unwrap();
    let stats = ctl.call(Request::Stats).unwrap().data.unwrap_or_default();
    assert!(
        stats["kernel"]["redirected_msgs"].as_u64().unwrap_or(0) > 0,
        "sk_msg redirects the ::1 peer: {stats}"
    );
    assert_eq!(c.logout().unwrap(), 0);
    drop(ietd);
    let _ = std::fs::remove_dir_all(&pin);
}
