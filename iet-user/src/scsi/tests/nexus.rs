//! The transport-facing services: sense in the LU's format, per-nexus unit attentions,
//! I_T NEXUS RESET, and the nexus ids PREEMPT AND ABORT reports.

use super::*;

#[test]
fn sense_for_follows_d_sense() {
    let rig = Rig::new();
    let fixed = rig.units.sense_for(0, SenseReason::DataOffsetError);
    assert_eq!(fixed[0], 0x70);
    assert_eq!(sense_code(&fixed), (0x0b, 0x4b, 0x05));
    // Control mode page with D_SENSE set (MODE SELECT(10), PF).
    let mut page = vec![0u8; 8];
    page.extend_from_slice(&[0x0a, 0x0a, 0x04, 0x10, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
    let cdb = [0x55, 0x10, 0, 0, 0, 0, 0, 0, page.len() as u8, 0];
    rig.ok(&rig.a, &cdb, &page);
    let desc = rig.units.sense_for(0, SenseReason::ProtocolServiceCrcError);
    assert_eq!(desc[0], 0x72);
    assert_eq!(sense_code(&desc), (0x0b, 0x47, 0x05));
    // No such LU: fixed format.
    let none = rig.units.sense_for(7, SenseReason::InternalTargetFailure);
    assert_eq!(none[0], 0x70);
    assert_eq!(sense_code(&none), (0x04, 0x44, 0x00));
}

#[test]
fn establish_ua_is_for_one_nexus_and_pending_ua_peeks() {
    let rig = Rig::new();
    rig.units
        .establish_ua(0, rig.b.id, SenseReason::CommandsClearedByAnotherInitiator);
    assert_eq!(rig.units.pending_ua(0, &rig.a), None);
    assert_eq!(rig.units.pending_ua(0, &rig.b), Some((0x06, 0x2f, 0x00)));
    // Peeking does not consume it.
    assert_eq!(rig.units.pending_ua(0, &rig.b), Some((0x06, 0x2f, 0x00)));
    assert_eq!(rig.check(&rig.b, &TUR, &[]), (0x06, 0x2f, 0x00));
    assert_eq!(rig.units.pending_ua(0, &rig.b), None);
    assert_eq!(rig.status(&rig.a, &TUR, &[]), ScsiStatus::Good);
    // Every other nexus, and not the one that cleared the task set.
    rig.units
        .establish_ua_for_others(0, rig.a.id, SenseReason::CommandsClearedByAnotherInitiator);
    assert_eq!(rig.units.pending_ua(0, &rig.a), None);
    assert_eq!(rig.units.pending_ua(0, &rig.b), Some((0x06, 0x2f, 0x00)));
    // A nexus the LU has not seen starts with POWER ON.
    let c = nexus(3);
    assert_eq!(rig.units.pending_ua(0, &c), Some((0x06, 0x29, 0x00)));
    assert_eq!(rig.units.pending_ua(5, &c), None);
}

#[test]
fn i_t_nexus_reset_drops_reserve_and_raises_nexus_loss() {
    let rig = Rig::new();
    let reserve6 = [0x16, 0, 0, 0, 0, 0];
    rig.ok(&rig.a, &reserve6, &[]);
    assert_eq!(
        rig.status(&rig.b, &TUR, &[]),
        ScsiStatus::ReservationConflict
    );
    rig.units.i_t_nexus_reset(&rig.a);
    assert_eq!(rig.check(&rig.a, &TUR, &[]), (0x06, 0x29, 0x07));
    assert_eq!(rig.status(&rig.b, &TUR, &[]), ScsiStatus::Good);
    assert_eq!(rig.status(&rig.a, &TUR, &[]), ScsiStatus::Good);
}

#[test]
fn preempt_and_abort_names_the_preempted_nexuses() {
    let rig = Rig::new();
    let (reg, p) = pr_out(0x00, 0, 0, 0xaa, false);
    rig.ok(&rig.a, &reg, &p);
    let (reg, p) = pr_out(0x00, 0, 0, 0xbb, false);
    rig.ok(&rig.b, &reg, &p);
    let (res, p) = pr_out(0x01, 0x01, 0xbb, 0, false);
    rig.ok(&rig.b, &res, &p);
    let run = |sa: u8| {
        let (cdb, p) = pr_out(sa, 0x01, 0xaa, 0xbb, false);
        let req = ScsiRequest {
            nexus: &rig.a,
            lun: 0,
            cdb: &cdb,
            attr: TaskAttr::Simple,
            expected_data_in_len: 0,
        };
        rig.units.execute_command(&req, &p, &mut Vec::new())
    };
    // PREEMPT AND ABORT (05h) of key bb: nexus b's tasks are to be aborted.
    let c = run(0x05);
    assert_eq!(c.outcome.status, ScsiStatus::Good);
    assert_eq!(c.preempted, vec![rig.b.id]);
    // Other commands name nobody.
    let req = ScsiRequest {
        nexus: &rig.a,
        lun: 0,
        cdb: &TUR,
        attr: TaskAttr::Simple,
        expected_data_in_len: 0,
    };
    assert!(
        rig.units
            .execute_command(&req, &[], &mut Vec::new())
            .preempted
            .is_empty()
    );
}
