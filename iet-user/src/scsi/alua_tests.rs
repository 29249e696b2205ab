//! ALUA unit tests: REPORT TARGET PORT GROUPS bytes, the commands each state serves, and
//! through `LogicalUnits`: TPGS, VPD 83h designators, NOT READY answers and the unit attention.

use std::sync::Arc;

use super::*;
use crate::backend::{BackendError, BlockBackend, MemoryBackend};
use crate::scsi::{ItNexus, LogicalUnits, LunConfig, ScsiRequest, ScsiStatus, TaskAttr};

fn view(local: u16, owner: u16) -> AluaView {
    let group = |id| TargetPortGroup {
        id,
        state: if id == owner {
            AccessState::ActiveOptimized
        } else {
            AccessState::ActiveNonOptimized
        },
        implicit_change: false,
    };
    AluaView {
        local,
        groups: vec![group(1), group(2)],
        implicit_transition_secs: 8,
    }
}

#[test]
fn report_target_port_groups_bytes() {
    let d = encode_groups(&view(2, 1), false);
    assert_eq!(
        d,
        [
            0, 0, 0, 24, // RETURN DATA LENGTH
            0x00, 0x8f, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, // group 1: AO, one port (RTPI 1)
            0x01, 0x8f, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, // group 2: AN, one port (RTPI 2)
        ]
    );
    let mut v = view(2, 2);
    v.groups[1].implicit_change = true;
    let d = encode_groups(&v, true);
    assert_eq!(&d[..8], &[0, 0, 0, 28, 0x10, 8, 0, 0]);
    assert_eq!(d[8], 0x01);
    assert_eq!(d[20], 0x00);
    assert_eq!(d[25], 0x02, "STATUS CODE: altered by implicit behaviour");
}

#[test]
fn states_serve_what_spc5_lists() {
    let inquiry = Cdb::Inquiry {
        evpd: false,
        page: 0,
        alloc_len: 96,
    };
    let rtpg = Cdb::ReportTargetPortGroups {
        extended: false,
        alloc_len: 64,
    };
    let mode_sense = Cdb::ModeSense {
        ten: false,
        dbd: false,
        llbaa: false,
        pc: 0,
        page: 0x3f,
        subpage: 0,
        alloc_len: 255,
    };
    for s in [
        AccessState::ActiveOptimized,
        AccessState::ActiveNonOptimized,
    ] {
        assert_eq!(check_access(s, &Cdb::TestUnitReady), Ok(()));
    }
    for s in [
        AccessState::Standby,
        AccessState::Unavailable,
        AccessState::Transitioning,
    ] {
        assert_eq!(check_access(s, &inquiry), Ok(()));
        assert_eq!(check_access(s, &rtpg), Ok(()));
    }
    assert_eq!(check_access(AccessState::Standby, &mode_sense), Ok(()));
    assert_eq!(
        check_access(AccessState::Standby, &Cdb::TestUnitReady),
        Err(SenseReason::NotReadyTargetPortInStandbyState)
    );
    assert_eq!(
        check_access(AccessState::Unavailable, &mode_sense),
        Err(SenseReason::NotReadyTargetPortInUnavailableState)
    );
    assert_eq!(
        check_access(AccessState::Transitioning, &Cdb::TestUnitReady),
        Err(SenseReason::NotReadyAsymmetricAccessStateTransition)
    );
    assert_eq!(
        AluaView::starting(3).local_state(),
        AccessState::Transitioning
    );
    assert_eq!(view(9, 1).local_state(), AccessState::Unavailable);
}

/// A memory store that says it has gateways.
#[derive(Debug)]
struct Gatewayed {
    inner: MemoryBackend,
    alua: Arc<SharedAlua>,
}

impl BlockBackend for Gatewayed {
    fn describe(&self) -> String {
        "gatewayed".into()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        self.inner.write_at(buf, offset, fua)
    }
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.inner.discard(offset, len)
    }
    fn supports_discard(&self) -> bool {
        false
    }
    fn alua(&self) -> Option<Arc<SharedAlua>> {
        Some(Arc::clone(&self.alua))
    }
}

fn run(
    units: &LogicalUnits,
    nexus: &ItNexus,
    cdb: &[u8],
) -> (ScsiStatus, Option<(u8, u8, u8)>, Vec<u8>) {
    let mut data = Vec::new();
    let out = units.execute(
        &ScsiRequest {
            nexus,
            lun: 0,
            cdb,
            attr: TaskAttr::Simple,
            expected_data_in_len: 4096,
        },
        &[],
        &mut data,
    );
    let sense = out.sense.map(|s| (s[2] & 0x0f, s[12], s[13]));
    (out.status, sense, data)
}

#[test]
fn a_logical_unit_without_gateways_has_no_groups() {
    let units = LogicalUnits::new();
    units
        .add_lun(
            0,
            LunConfig::new(Arc::new(MemoryBackend::new(1 << 20)), "SN2", 2),
        )
        .expect("add lun");
    let nexus = ItNexus {
        id: 8,
        initiator_port: "iqn.i,i,0x000000000002".into(),
        target_port: "iqn.t,t,0x0001".into(),
        relative_target_port: 1,
    };
    run(&units, &nexus, &[0u8; 6]);
    let (_, _, inq) = run(&units, &nexus, &[0x12, 0, 0, 0, 96, 0]);
    assert_eq!(inq[5] & 0x30, 0x00, "TPGS 00b");
    let rtpg = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    assert_eq!(run(&units, &nexus, &rtpg).1, Some((5, 0x24, 0x00)));
    let rsoc = [0xa3, 0x0c, 0x02, 0xa3, 0, 0x0a, 0, 0, 1, 0, 0, 0];
    assert_eq!(
        run(&units, &nexus, &rsoc).2[1] & 0x07,
        0x01,
        "not supported"
    );
    // Without ALUA the relative target port is the portal group's.
    let (_, _, vpd) = run(&units, &nexus, &[0x12, 1, 0x83, 1, 0, 0]);
    assert!(
        !vpd[4..].windows(2).any(|w| w == [0x01, 0x15]),
        "no target port group designator"
    );
}

#[test]
fn a_logical_unit_with_gateways() {
    let alua = Arc::new(SharedAlua::new(view(2, 1)));
    let backend = Arc::new(Gatewayed {
        inner: MemoryBackend::new(1 << 20),
        alua: Arc::clone(&alua),
    });
    let units = LogicalUnits::new();
    units
        .add_lun(0, LunConfig::new(backend, "SN1", 1))
        .expect("add lun");
    let nexus = ItNexus {
        id: 7,
        initiator_port: "iqn.i,i,0x000000000001".into(),
        target_port: "iqn.t,t,0x0001".into(),
        relative_target_port: 1,
    };
    let tur = [0u8; 6];
    let (_, sense, _) = run(&units, &nexus, &tur);
    assert_eq!(sense, Some((6, 0x29, 0x00)), "power on first");
    assert_eq!(run(&units, &nexus, &tur).0, ScsiStatus::Good);

    // Standard INQUIRY: TPGS 01b (implicit).
    let (_, _, inq) = run(&units, &nexus, &[0x12, 0, 0, 0, 96, 0]);
    assert_eq!(inq[5] & 0x30, 0x10);
    // VPD 83h: relative target port 2 and target port group 2.
    let (_, _, vpd) = run(&units, &nexus, &[0x12, 1, 0x83, 1, 0, 0]);
    let body = &vpd[4..];
    let find = |kind: u8| {
        let mut at = 0;
        while at + 4 <= body.len() {
            let len = usize::from(body[at + 3]);
            if body[at + 1] & 0x3f == kind {
                return Some(body[at + 4..at + 4 + len].to_vec());
            }
            at += 4 + len;
        }
        None
    };
    assert_eq!(find(0x14), Some(vec![0, 0, 0, 2]), "relative target port");
    assert_eq!(find(0x15), Some(vec![0, 0, 0, 2]), "target port group");

    // REPORT TARGET PORT GROUPS.
    let rtpg = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    let (status, _, d) = run(&units, &nexus, &rtpg);
    assert_eq!(status, ScsiStatus::Good);
    assert_eq!(d, encode_groups(&view(2, 1), false));

    // This gateway goes to standby: the next command reports the change, then TUR is refused.
    let mut standby = view(2, 1);
    standby.groups[1].state = AccessState::Standby;
    alua.publish(standby);
    assert_eq!(run(&units, &nexus, &tur).1, Some((6, 0x2a, 0x06)));
    assert_eq!(run(&units, &nexus, &tur).1, Some((2, 0x04, 0x0b)));
    assert_eq!(run(&units, &nexus, &rtpg).0, ScsiStatus::Good);
    assert_eq!(
        run(&units, &nexus, &[0x12, 0, 0, 0, 96, 0]).0,
        ScsiStatus::Good
    );

    // REPORT SUPPORTED OPERATION CODES lists RTPG here (one command, MAINTENANCE IN 0Ah).
    let rsoc = [0xa3, 0x0c, 0x02, 0xa3, 0, 0x0a, 0, 0, 1, 0, 0, 0];
    assert_eq!(run(&units, &nexus, &rsoc).2[1] & 0x07, 0x03, "supported");

    // Takeover: this gateway owns the image now.
    alua.publish(view(2, 2));
    assert_eq!(run(&units, &nexus, &tur).1, Some((6, 0x2a, 0x06)));
    assert_eq!(run(&units, &nexus, &tur).0, ScsiStatus::Good);
    let (_, _, d) = run(&units, &nexus, &rtpg);
    assert_eq!((d[4], d[16]), (0x01, 0x00), "group 1 AN, group 2 AO");
}
