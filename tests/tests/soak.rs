//! The one-minute soak CI runs: 64 sessions of mixed 4 KiB/64 KiB I/O at
//! QD8 with cut connections, LUN resets and NOP timeouts; no errors, and
//! ietd's fds, threads and RSS back at their start values afterwards.
//! `cargo xtask soak --minutes N` runs the same for longer with 256.

use std::time::Duration;

use iet_tests::soak::{SoakConfig, run, summary, verdict};

#[test]
fn one_minute_soak_has_no_errors_and_returns_to_baseline() {
    let report = run(&SoakConfig {
        sessions: 64,
        duration: Duration::from_mins(1),
        qd: 8,
    });
    println!("{}", summary(&report));
    let bad = verdict(&report);
    assert!(bad.is_empty(), "{}\n{bad:#?}", summary(&report));
    assert!(report.disconnects > 0, "the soak cut connections");
    assert!(report.lun_resets > 0, "the soak reset a LUN");
    assert!(
        report.nop_timeouts > 0,
        "the soak had ietd time a silent initiator out"
    );
}
