//! iSNS (RFC 4171) against Debian's open-isns server: ietd registers its
//! targets, portals and portal groups with an `isnsd` this test starts on
//! loopback (private config, database and sockets; stopped by PID), keeps
//! the registration current as `ietadm` changes things, and deregisters
//! on shutdown; `isnsadm` is the witness. With iSNSAccessControl only initiators in a
//! discovery domain of the target log in.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iet_tests::initiator::{Conn, LoginError, LoginOptions};
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

/// isnsd on `port`; with `default_dd` every node is in one default discovery domain.
fn start_isnsd(dir: &TempDir, port: u16, default_dd: bool) -> Isnsd {
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
             Security = 0\nSLPRegister = 0\nESIRetries = 0\nDefaultDiscoveryDomain = {}\n",
            db.display(),
            dir.path("isnsd.pid").display(),
            dir.path("isnsctl").display(),
            u8::from(default_dd),
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
    let _isnsd = start_isnsd(&dir, isns_port, true);
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

/// `isnsadm` as the node `source` (its own config), through the server's control socket
/// with `local` (discovery domains are an administrator's business).
fn isnsadm(dir: &TempDir, port: u16, source: &str, local: bool, args: &[&str]) {
    let conf = dir.path(&format!("isnsadm-{}.conf", source.replace(':', "_")));
    std::fs::write(
        &conf,
        format!(
            "SourceName = {source}\nServerAddress = 127.0.0.1:{port}\n\
             ControlSocket = {}\nSecurity = 0\n",
            dir.path("isnsctl").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(tool("isnsadm"));
    cmd.arg("-c").arg(&conf);
    if local {
        cmd.arg("--local");
    }
    let out = cmd.args(args).output().expect("run isnsadm");
    assert!(out.status.success(), "isnsadm {args:?}: {out:?}");
}

const T: &str = "iqn.2026-12.io.iet:isns-guarded";
const IN: &str = "iqn.2026-12.io.iet:in-the-domain";
const OUT: &str = "iqn.2026-12.io.iet:not-in-it";

fn login(portal: SocketAddr, initiator: &str) -> Result<Conn, LoginError> {
    let mut c = Conn::connect(portal).expect("connect");
    let mut opts = LoginOptions::normal(T);
    initiator.clone_into(&mut opts.initiator);
    c.login(&opts).map(|()| c)
}

/// The target names SendTargets=All gives `initiator`.
fn discovered(portal: SocketAddr, initiator: &str) -> Vec<String> {
    let mut c = Conn::connect(portal).expect("connect");
    let mut opts = LoginOptions::discovery();
    initiator.clone_into(&mut opts.initiator);
    c.login(&opts)
        .unwrap_or_else(|e| panic!("discovery login of {initiator}: {e:?}"));
    let answer = c.text(&[("SendTargets", "All")]).expect("SendTargets");
    answer.get("TargetName").cloned().unwrap_or_default()
}

/// The login's failure status (RFC 7143 §11.13.5), panicking on success.
fn refused(portal: SocketAddr, initiator: &str) -> u16 {
    match login(portal, initiator) {
        Err(LoginError::Status(s)) => s.code(),
        Err(e) => panic!("login of {initiator}: {e:?}"),
        Ok(_) => panic!("{initiator} logged in"),
    }
}

/// Retries the login of `initiator` until it succeeds (the target's first answer from
/// the server, or a domain change, takes a moment); refusals meanwhile are 0x0202.
fn logs_in_soon(portal: SocketAddr, initiator: &str, ietd: &Ietd) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match login(portal, initiator) {
            Ok(_) => return,
            Err(LoginError::Status(s)) if s.code() == 0x0202 => {}
            Err(e) => panic!("login of {initiator}: {e:?}\n{}", ietd.log()),
        }
        assert!(
            Instant::now() < deadline,
            "{initiator} never logged in:\n{}",
            ietd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_guarded(dir: &TempDir, isns_port: u16, access_control: bool) -> (Ietd, SocketAddr) {
    let p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf = dir.path("iet.toml");
    std::fs::write(
        &conf,
        format!(
            "isns_server = \"127.0.0.1:{isns_port}\"\nisns_access_control = {access_control}\n\
             [[portal]]\nlisten = \"{p}\"\n\n\
             [[target]]\nname = \"{T}\"\n[[target.lun]]\nnumber = 0\npath = \"mem:1M\"\n"
        ),
    )
    .unwrap();
    let ietd = Ietd::start(
        dir,
        p,
        &["--config", conf.to_str().unwrap(), "--ebpf", "off"],
    );
    (ietd, p)
}

/// iSNSAccessControl: the server puts IN and the target in one discovery domain (and no
/// default domain exists); IN logs in, OUT is refused with Authorization failure
/// (0x0202) until it joins the domain; with access control off both log in.
#[test]
fn access_control_admits_initiators_of_the_targets_discovery_domains() {
    let dir = TempDir::new("isns-access");
    let isns_port = free_port();
    let _isnsd = start_isnsd(&dir, isns_port, false);
    for i in [IN, OUT] {
        isnsadm(&dir, isns_port, i, false, &["--register", "initiator"]);
    }
    isnsadm(
        &dir,
        isns_port,
        IN,
        true,
        &[
            "--dd-register",
            "dd-name=guarded",
            &format!("member-name={IN}"),
            &format!("member-name={T}"),
        ],
    );

    let (mut ietd, p) = start_guarded(&dir, isns_port, true);
    logs_in_soon(p, IN, &ietd);
    assert_eq!(refused(p, OUT), 0x0202, "{}", ietd.log());
    // SendTargets names the target only to initiators that may log in to it.
    assert_eq!(discovered(p, IN), [T]);
    assert!(discovered(p, OUT).is_empty());
    assert!(
        ietd.log()
            .contains("shares no discovery domain with the target; login refused"),
        "{}",
        ietd.log()
    );
    // OUT joins the domain (by its numeric id, RFC 4171 §6.11.1): it gets in.
    isnsadm(
        &dir,
        isns_port,
        IN,
        true,
        &["--dd-register", "dd-id=1", &format!("member-name={OUT}")],
    );
    logs_in_soon(p, OUT, &ietd);
    assert!(ietd.stop(), "{}", ietd.log());

    // Access control off: an initiator in no domain with the target logs in at once.
    let stranger = "iqn.2026-12.io.iet:stranger";
    isnsadm(
        &dir,
        isns_port,
        stranger,
        false,
        &["--register", "initiator"],
    );
    let (ietd, p) = start_guarded(&dir, isns_port, false);
    for i in [IN, stranger] {
        login(p, i).unwrap_or_else(|e| panic!("{i} without access control: {e:?}\n{}", ietd.log()));
    }
}
