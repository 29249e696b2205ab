//! The eBPF data plane on the live kernel (needs root; in CI a skip is a
//! failure): the verifier accepts both programs, sock_ops tunes and records
//! a loopback connection in the pinned map (read through aya and through
//! bpftool), the close arrives through the ring buffer, names are stable,
//! and a restart keeps the global counters without duplicate attachments.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use iet::dataplane::{Dataplane, DataplaneConfig, EbpfMode, EventKind};
use iet_common::{
    ConnKey, ConnRecord, MAP_CONNECTIONS, PINNED_MAPS, PROG_SK_MSG, PROG_SOCK_OPS, ROLE_TARGET,
};
use iet_tests::process::require_root;

/// The tests attach to the same cgroup: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pin_dir(tag: &str) -> std::path::PathBuf {
    let dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/iet-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(pin: &std::path::Path, portal: SocketAddr) -> Dataplane {
    Dataplane::start(&DataplaneConfig {
        mode: EbpfMode::On,
        pin_dir: pin.to_path_buf(),
        cgroup: None,
        portals: vec![portal],
    })
    .unwrap_or_else(|e| panic!("the data plane must attach as root: {e:#}"))
}

fn sock_int(s: &TcpStream, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid socket fd and out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt");
    v
}

fn nodelay(s: &TcpStream) -> bool {
    sock_int(s, libc::IPPROTO_TCP, libc::TCP_NODELAY) != 0
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool (Debian package bpftool) runs");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        // Nothing attached: bpftool prints nothing at all.
        return serde_json::json!([]);
    }
    serde_json::from_slice(&out.stdout).expect("bpftool prints JSON")
}

#[test]
fn sock_ops_records_tunes_and_reports_a_loopback_connection() {
    if !require_root("sock_ops_records_tunes_and_reports_a_loopback_connection") {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = runtime();
    let _guard = rt.enter();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let portal = listener.local_addr().unwrap();
    let pin = pin_dir("record");
    let dp = start(&pin, portal);
    let mut events = dp.take_events().expect("an event stream");

    dp.set_portal_tcp(portal, 0, 300_000, 0, "reno").unwrap();
    let client = TcpStream::connect(portal).unwrap();
    let (mut accepted, peer) = listener.accept().unwrap();
    assert_eq!(
        sock_int(&accepted, libc::SOL_SOCKET, libc::SO_RCVBUF),
        600_000,
        "the portal's receive buffer, applied by sock_ops (the kernel doubles it)"
    );
    let mut cc = [0u8; 16];
    let mut len = 16 as libc::socklen_t;
    // SAFETY: valid socket fd, buffer and length.
    let rc = unsafe {
        libc::getsockopt(
            accepted.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            cc.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0);
    assert!(
        cc.starts_with(b"reno"),
        "the portal's congestion control: {cc:?}"
    );
    assert!(
        nodelay(&accepted),
        "sock_ops set TCP_NODELAY on the accepted socket, as IET did"
    );
    assert!(
        !nodelay(&client),
        "a socket we never touched keeps Nagle (control)"
    );

    // Through aya: the pinned map, opened by path.
    let key = ConnKey {
        local_addr: iet_common::v4_mapped([127, 0, 0, 1]),
        remote_addr: iet_common::v4_mapped([127, 0, 0, 1]),
        local_port: portal.port(),
        remote_port: peer.port(),
    };
    let data = MapData::from_pin(pin.join(MAP_CONNECTIONS)).expect("pinned connections map");
    let map: BpfHashMap<MapData, ConnKey, ConnRecord> =
        BpfHashMap::try_from(Map::HashMap(data)).unwrap();
    let rec = map
        .get(&key, 0)
        .expect("the accepted connection is recorded");
    assert_eq!(rec.role, ROLE_TARGET);
    assert_eq!(rec.state, 1, "TCP_ESTABLISHED");
    assert!(
        dp.connection(portal, peer).is_some(),
        "and through the data plane's own view"
    );

    // Through bpftool: named fields.
    let dump = bpftool_json(&[
        "map",
        "dump",
        "pinned",
        pin.join(MAP_CONNECTIONS).to_str().unwrap(),
    ]);
    let entries = dump.as_array().expect("a list of entries");
    // With BTF, bpftool adds the named form under "formatted".
    // With BTF, bpftool adds the named form under "formatted".
    let found = entries.iter().any(|e| {
        let k = &e["formatted"]["key"];
        k["local_port"] == portal.port()
            && k["remote_port"] == peer.port()
            // IPv4 keys are v4-mapped IPv6 (::ffff:127.0.0.1).
            && k["local_addr"] == serde_json::json!(iet_common::v4_mapped([127, 0, 0, 1]))
    });
    assert!(found, "bpftool shows the 4-tuple with named fields: {dump}");
    assert!(
        entries
            .iter()
            .any(|e| e["formatted"]["value"]["role"] == ROLE_TARGET),
        "{dump}"
    );

    // Names are a public interface.
    for m in PINNED_MAPS {
        assert!(
            pin.join(m).exists(),
            "{m} is pinned under {}",
            pin.display()
        );
    }
    let progs = bpftool_json(&["prog", "show"]);
    let names: Vec<&str> = progs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&PROG_SOCK_OPS) && names.contains(&PROG_SK_MSG),
        "loaded programs: {names:?}"
    );

    // The close travels through the ring buffer.
    drop(client);
    let mut buf = [0u8; 16];
    let _ = accepted.read(&mut buf);
    drop(accepted);
    let ev = rt.block_on(async {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("a close event within 5 s")
                .expect("the event stream stays open");
            if ev.kind == EventKind::Closed && ev.local == portal && ev.peer == peer {
                break ev;
            }
        }
    });
    assert!(
        matches!(ev.tcp_state, 7 | 8 | 4),
        "a closing state, got {}",
        ev.tcp_state
    );
    dp.shutdown();
    let _ = std::fs::remove_dir_all(&pin);
}

#[test]
fn restart_keeps_counters_and_does_not_duplicate_attachments() {
    if !require_root("restart_keeps_counters_and_does_not_duplicate_attachments") {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = runtime();
    let _guard = rt.enter();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let portal = listener.local_addr().unwrap();
    let pin = pin_dir("restart");
    let cgroup = iet::dataplane::default_cgroup().unwrap();
    let attached = || {
        let v = bpftool_json(&["cgroup", "show", cgroup.to_str().unwrap()]);
        v.as_array().map_or(0, |a| {
            a.iter().filter(|p| p["name"] == PROG_SOCK_OPS).count()
        })
    };
    let before = attached();
    let first = start(&pin, portal);
    for _ in 0..3 {
        let _c = TcpStream::connect(portal).unwrap();
        let _ = listener.accept().unwrap();
    }
    let accepted = first.global_counters().expect("counters").accepted;
    assert!(
        accepted >= 3,
        "three accepted connections counted, got {accepted}"
    );
    assert_eq!(attached(), before + 1, "one attachment while running");
    drop(first);
    assert_eq!(attached(), before, "no leftover attachment after exit");
    let second = start(&pin, portal);
    assert_eq!(attached(), before + 1, "a restart attaches once");
    let carried = second.global_counters().expect("counters").accepted;
    assert!(
        carried >= accepted,
        "the global counters survive a restart ({carried} < {accepted})"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&pin);
}
