//! libiscsi's conformance suite, iscsi-test-cu, against ietd: the ALL
//! family on a file LUN (with the MultipathIO suite on a second URL to the
//! same LUN) and the SCSI family on a RAM LUN. Zero failures expected; the
//! summaries are printed so CI logs show the counts.

use std::time::Duration;

use iet::config::LunSpec;
use iet_tests::inprocess::{InProcessTarget, TARGET, mem_config};
use iet_tests::libiscsi::test_cu;
use iet_tests::process::TempDir;

#[test]
fn all_family_on_a_file_lun_has_no_failures() {
    let dir = TempDir::new("conformance-file");
    let image = dir.path("lun0.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let mut cfg = mem_config(&[]);
    cfg.targets[0].luns = vec![LunSpec::new(0, image.to_str().unwrap())];
    cfg.state_dir = dir.path("state");
    let t = InProcessTarget::start(cfg);
    let url = format!("iscsi://{}/{TARGET}/0", t.addr);
    let (summary, out) = test_cu("ALL", &[&url, &url], Duration::from_mins(20));
    assert_eq!(summary.total, summary.ran, "every test ran:\n{out}");
    assert!(
        summary.ran >= 200,
        "the ALL family ran ({} tests)",
        summary.ran
    );
    assert_eq!(summary.failed, 0, "iscsi-test-cu ALL failures:\n{out}");
}

#[test]
fn scsi_family_on_a_ram_lun_has_no_failures() {
    let t = InProcessTarget::start(mem_config(&["mem:256M"]));
    let url = format!("iscsi://{}/{TARGET}/0", t.addr);
    let (summary, out) = test_cu("SCSI", &[&url, &url], Duration::from_mins(20));
    assert!(
        summary.ran >= 150,
        "the SCSI family ran ({} tests)",
        summary.ran
    );
    assert_eq!(summary.failed, 0, "iscsi-test-cu SCSI failures:\n{out}");
}
