//! libiscsi's tools against an in-process target: discovery, INQUIRY,
//! READ CAPACITY(16), CHAP, header digests, and the iSCSI conformance suites.

use std::time::Duration;

use iet::target::ChapAccount;
use iet_tests::inprocess::{InProcessTarget, TARGET, mem_config};
use iet_tests::libiscsi::{run, test_cu};

fn url(t: &InProcessTarget, auth: &str, lun: u32, args: &str) -> String {
    format!("iscsi://{auth}{}/{TARGET}/{lun}{args}", t.addr)
}

#[test]
fn ls_inq_readcapacity16_without_chap() {
    let t = InProcessTarget::start(mem_config(&["mem:64M", "mem:32M"]));
    let ls = run(
        "iscsi-ls",
        &["-s", &format!("iscsi://{}", t.addr)],
        Duration::from_secs(20),
    );
    assert!(ls.success, "iscsi-ls failed: {ls:?}");
    assert!(
        ls.stdout.contains(TARGET),
        "iscsi-ls lists the target: {}",
        ls.stdout
    );
    assert!(
        ls.stdout.contains("Lun:1"),
        "iscsi-ls lists LUN 1: {}",
        ls.stdout
    );

    let inq = run("iscsi-inq", &[&url(&t, "", 0, "")], Duration::from_secs(20));
    assert!(inq.success, "iscsi-inq failed: {inq:?}");
    assert!(
        inq.stdout.contains("Peripheral Device Type"),
        "{}",
        inq.stdout
    );

    let cap = run(
        "iscsi-readcapacity16",
        &[&url(&t, "", 1, "")],
        Duration::from_secs(20),
    );
    assert!(cap.success, "iscsi-readcapacity16 failed: {cap:?}");
    let total = 32u64 << 20;
    assert!(
        cap.stdout.contains(&format!("Total capacity:{total}"))
            || cap.stdout.contains(&format!("{total}")),
        "capacity of a 32 MiB LUN: {}",
        cap.stdout
    );
}

#[test]
fn tools_with_chap_and_header_digest() {
    let mut cfg = mem_config(&["mem:16M"]);
    cfg.targets[0].incoming = vec![ChapAccount {
        user: "libiscsi".into(),
        secret: "libiscsi-secret".into(),
    }];
    let t = InProcessTarget::start(cfg);
    let inq = run(
        "iscsi-inq",
        &[&url(&t, "libiscsi%libiscsi-secret@", 0, "")],
        Duration::from_secs(20),
    );
    assert!(inq.success, "iscsi-inq with CHAP failed: {inq:?}");
    let bad = run(
        "iscsi-inq",
        &[&url(&t, "libiscsi%wrong-secret@", 0, "")],
        Duration::from_secs(20),
    );
    assert!(!bad.success, "a wrong CHAP secret must be refused: {bad:?}");
    let none = run("iscsi-inq", &[&url(&t, "", 0, "")], Duration::from_secs(20));
    assert!(
        !none.success,
        "no CHAP where CHAP is required must be refused"
    );
    let digest = run(
        "iscsi-readcapacity16",
        &[&url(
            &t,
            "libiscsi%libiscsi-secret@",
            0,
            "?header_digest=crc32c",
        )],
        Duration::from_secs(20),
    );
    assert!(
        digest.success,
        "iscsi-readcapacity16 with CRC32C header digest failed: {digest:?}"
    );
}

#[test]
fn iscsi_conformance_suites_pass() {
    let t = InProcessTarget::start(mem_config(&["mem:128M"]));
    let u = url(&t, "", 0, "");
    for suite in [
        "iSCSI.iSCSIcmdsn",
        "iSCSI.iSCSIdatasn",
        "iSCSI.iSCSIResiduals",
        "iSCSI.iSCSITMF",
    ] {
        let (summary, out) = test_cu(suite, &[&u], Duration::from_mins(5));
        assert!(summary.ran > 0, "{suite} ran nothing:\n{out}");
        assert_eq!(summary.failed, 0, "{suite} failures:\n{out}");
    }
}
