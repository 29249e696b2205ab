//! iSNS (RFC 4171) against Debian's open-isns server: ietd registers its
//! targets, portals and portal groups with an `isnsd` this test starts on
//! loopback (private config, database and sockets; stopped by PID), keeps
//! the registration current as `ietadm` changes things, and deregisters
//! on shutdown; `isnsadm` is the witness.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir};

const A: &str = "iqn.2026-11.io.iet:isns-a";
const B: &str = "iqn.2026-11.io.iet:isns-b";

/// isnsd in the foreground, killed by PID when dropped.
struct Isnsd(Child);

impl Drop for Isnsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> String {
    let path = format!("/usr/sbin/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: apt-get install open-isns-server open-isns-utils \
         (cargo xtask test installs them)"
    );
    path
}

fn start_isnsd(dir: &TempDir, port: u16) -> Isnsd {
    let db = dir.path("db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = dir.path("isnsd.conf");
    std::fs::write(
        &conf,
        format!(
            "SourceName = iqn.2026-11.io.iet:isns-test-server\n\
             BindAddress = 127.0.0.1:{port}\n\
             Database = {}\n\
             PIDFile = {}\n\
             ControlSocket = {}\n\
             Security = 0\nSLPRegister = 0\nESIRetries = 0\nDefaultDiscoveryDomain = 1\n",
            db.display(),
            dir.path("isnsd.pid").display(),
            dir.path("isnsctl").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path("isnsd.log")).unwrap();
    let child = Command::new(tool("isnsd"))
        .args(["-f", "-4", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start isnsd");
    let isnsd = Isnsd(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "isnsd did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    isnsd
}

/// `isnsadm --list <what>` as a client of the test server.
fn list(dir: &TempDir, port: u16, what: &str) -> String {
    let conf = dir.path("isnsadm.conf");
    std::fs::write(
        &conf,
        format!(
            "SourceName = iqn.2026-11.io.iet:isns-test-client\n\
             ServerAddress = 127.0.0.1:{port}\nSecurity = 0\n"
        ),
    )
    .unwrap();
    let out = Command::new(tool("isnsadm"))
        .arg("-c")
        .arg(&conf)
        .args(["--list", what])
        .output()
        .expect("run isnsadm");
    assert!(out.status.success(), "isnsadm --list {what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `isnsadm --list <what>` satisfies `ok`.
fn eventually(dir: &TempDir, port: u16, what: &str, ok: impl Fn(&str) -> bool, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = list(dir, port, what);
        if ok(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}; isnsadm --list {what}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn targets_are_registered_refreshed_and_deregistered() {
    let dir = TempDir::new("isns");
    let isns_port = free_port();
    let _isnsd = start_isnsd(&dir, isns_port);
    let p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf = dir.path("iet.toml");
    std::fs::write(
        &conf,
        format!(
            "isns_server = \"127.0.0.1:{isns_port}\"\n[[portal]]\nlisten = \"{p}\"\n\n\
             [[target]]\nname = \"{A}\"\nalias = \"first\"\n\
             [[target.lun]]\nnumber = 0\npath = \"mem:1M\"\n"
        ),
    )
    .unwrap();
    let mut ietd = Ietd::start(
        &dir,
        p,
        &["--config", conf.to_str().unwrap(), "--ebpf", "off"],
    );
    let port_line = format!("Portal TCP/UDP port = {}/tcp", p.port());
    eventually(
        &dir,
        isns_port,
        "nodes",
        |t| t.contains(A) && t.contains("Target"),
        "target A registered",
    );
    let nodes = list(&dir, isns_port, "nodes");
    assert!(nodes.contains("iSCSI alias = \"first\""), "{nodes}");
    eventually(
        &dir,
        isns_port,
        "portals",
        |t| t.contains(&port_line),
        "the portal registered",
    );
    eventually(
        &dir,
        isns_port,
        "portal-groups",
        |t| {
            t.contains(&format!("Portal group name = \"{A}\""))
                && t.contains("Portal group tag = 1")
        },
        "a portal group for A",
    );

    // Changes reach the server.
    ietd.adm_ok(&["target", "new", B, "--alias", "second"]);
    eventually(
        &dir,
        isns_port,
        "nodes",
        |t| t.contains(B),
        "target B registered after target new",
    );
    let p2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    ietd.adm_ok(&["portal", "add", &p2.to_string()]);
    let port2_line = format!("Portal TCP/UDP port = {}/tcp", p2.port());
    eventually(
        &dir,
        isns_port,
        "portals",
        |t| t.contains(&port2_line),
        "the new portal registered",
    );
    ietd.adm_ok(&["target", "delete", B]);
    eventually(
        &dir,
        isns_port,
        "nodes",
        |t| !t.contains(B) && t.contains(A),
        "B deregistered",
    );
    ietd.adm_ok(&["portal", "remove", &p2.to_string()]);
    eventually(
        &dir,
        isns_port,
        "portals",
        |t| !t.contains(&port2_line),
        "the removed portal gone",
    );

    // Shutdown deregisters the entity.
    assert!(ietd.stop(), "{}", ietd.log());
    assert!(ietd.log().contains("iSNS deregistered"), "{}", ietd.log());
    eventually(
        &dir,
        isns_port,
        "nodes",
        |t| !t.contains(A),
        "A gone after shutdown",
    );
    eventually(
        &dir,
        isns_port,
        "entities",
        |t| !t.contains("iet:"),
        "the entity gone",
    );
}
