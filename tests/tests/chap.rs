//! CHAP with every digest iet offers (RFC 7143 §12.1.3: MD5 = 5, SHA-1 = 6,
//! SHA-256 = 7, SHA3-256 = 8), one-way and mutual, by the scripted
//! initiator against a real ietd; and a target that allows only some.

use std::net::SocketAddr;

use iet_tests::initiator::{Conn, LoginError, LoginOptions};
use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir};

const ALL: &str = "iqn.2026-11.io.iet:chap-all";
const STRONG: &str = "iqn.2026-11.io.iet:chap-strong";

fn start(dir: &TempDir) -> Ietd {
    let p = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf = dir.path("iet.toml");
    let accounts = "incoming = [{ user = \"alice\", secret = \"alice-secret-1\" }]\n\
                    outgoing = { user = \"target\", secret = \"target-secret-1\" }\n";
    std::fs::write(
        &conf,
        format!(
            "[[portal]]\nlisten = \"{p}\"\n\n\
             [[target]]\nname = \"{ALL}\"\n{accounts}\
             [[target.lun]]\nnumber = 0\npath = \"mem:1M\"\n\n\
             [[target]]\nname = \"{STRONG}\"\n{accounts}\
             [target.params]\nchap_algorithms = [\"SHA3-256\", \"SHA-1\"]\n\
             [[target.lun]]\nnumber = 0\npath = \"mem:1M\"\n"
        ),
    )
    .unwrap();
    Ietd::start(
        dir,
        p,
        &["--config", conf.to_str().unwrap(), "--ebpf", "off"],
    )
}

fn login(
    ietd: &Ietd,
    target: &str,
    chap_a: &str,
    secret: &str,
    mutual: Option<&str>,
) -> Result<Conn, LoginError> {
    let mut c = Conn::connect(ietd.portal).unwrap();
    let mut opts = LoginOptions::normal(target);
    opts.chap = Some(("alice".into(), secret.into()));
    opts.mutual = mutual.map(|s| ("target".to_owned(), s.to_owned()));
    opts.extra.push(("CHAP_A".into(), chap_a.into()));
    c.login(&opts).map(|()| c)
}

#[test]
fn every_digest_one_way_and_mutual() {
    let dir = TempDir::new("chap");
    let mut ietd = start(&dir);
    for chap_a in ["5", "6", "7", "8"] {
        let mut c = login(&ietd, ALL, chap_a, "alice-secret-1", None)
            .unwrap_or_else(|e| panic!("one-way CHAP_A={chap_a}: {e:?}\n{}", ietd.log()));
        c.clear_unit_attention(0).expect("full feature phase");
        login(
            &ietd,
            ALL,
            chap_a,
            "alice-secret-1",
            Some("target-secret-1"),
        )
        .unwrap_or_else(|e| panic!("mutual CHAP_A={chap_a}: {e:?}\n{}", ietd.log()));
        // A wrong secret fails with Authentication failure (0x0201).
        match login(&ietd, ALL, chap_a, "alice-secret-2", None) {
            Err(LoginError::Status(s)) => assert_eq!(s.code(), 0x0201, "CHAP_A={chap_a}"),
            Err(e) => panic!("CHAP_A={chap_a}: wrong secret: {e:?}"),
            Ok(_) => panic!("CHAP_A={chap_a}: a wrong secret logged in"),
        }
        // The target's mutual answer is checked with the same digest.
        assert!(
            matches!(
                login(&ietd, ALL, chap_a, "alice-secret-1", Some("not-the-secret")),
                Err(LoginError::Protocol(_))
            ),
            "CHAP_A={chap_a}: mutual answer computed with another secret is refused"
        );
    }
    // The initiator's list, in any order, gets a common digest.
    login(
        &ietd,
        ALL,
        "8,7,6,5",
        "alice-secret-1",
        Some("target-secret-1"),
    )
    .expect("list");
    assert!(ietd.stop(), "{}", ietd.log());
}

#[test]
fn a_target_allows_only_its_listed_digests() {
    let dir = TempDir::new("chap-strong");
    let mut ietd = start(&dir);
    for chap_a in ["8", "6", "5,6", "7,8"] {
        login(
            &ietd,
            STRONG,
            chap_a,
            "alice-secret-1",
            Some("target-secret-1"),
        )
        .unwrap_or_else(|e| panic!("CHAP_A={chap_a}: {e:?}\n{}", ietd.log()));
    }
    for chap_a in ["5", "7", "5,7"] {
        match login(&ietd, STRONG, chap_a, "alice-secret-1", None) {
            Err(LoginError::Status(s)) => assert_eq!(s.class, 2, "CHAP_A={chap_a}: {s:?}"),
            other => panic!(
                "CHAP_A={chap_a} must be refused: {:?}",
                other.map(|_| "logged in")
            ),
        }
    }
    // ietadm changes the list for new logins, and shows it.
    ietd.adm_ok(&["target", "set", STRONG, "CHAP_A=MD5"]);
    login(&ietd, STRONG, "5", "alice-secret-1", None).expect("MD5 now allowed");
    assert!(login(&ietd, STRONG, "8", "alice-secret-1", None).is_err());
    let targets: serde_json::Value =
        serde_json::from_str(&ietd.adm_ok(&["--json", "show", "targets"])).unwrap();
    let strong = targets
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == STRONG))
        .expect("the target is shown");
    assert_eq!(
        strong["params"]["chap_algorithms"],
        serde_json::json!(["MD5"])
    );
    assert!(ietd.stop(), "{}", ietd.log());
}
