//! The opcode table (SPC-5 Annex D) and the one path every command takes:
//! LU lookup, unit attention, CDB decode, reservation check, execution, sense.

use super::cdb::{Cdb, cdb_len, op, sa};
use super::lun::{Lu, LuState};
use super::pr::Access;
use super::sense::{Sense, SenseReason};
use super::{CommandOutcome, ItNexus, LogicalUnits, ScsiRequest, ScsiStatus, sbc, spc};
use crate::backend::BlockBackend;

/// Why a command did not complete with GOOD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    Check(Sense),
    ReservationConflict,
}

impl From<SenseReason> for Fail {
    fn from(r: SenseReason) -> Self {
        Self::Check(r.into())
    }
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Self::Check(s)
    }
}

pub(crate) type Exec = Result<(), Fail>;

/// One supported command. The table drives execution checks and REPORT SUPPORTED OPERATION CODES.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpInfo {
    pub(crate) opcode: u8,
    pub(crate) service_action: Option<u8>,
    pub(crate) name: &'static str,
    /// Access class under persistent reservations (SPC-5 table 77).
    pub(crate) access: Access,
    /// Allowed from other nexuses while a RESERVE(6/10) reservation is held (SPC-2 §5.5.1).
    pub(crate) reserve_ok: bool,
    /// Reported without consuming a unit attention, and served for nonexistent LUNs (SPC-5 §5.14).
    pub(crate) ua_exempt: bool,
}

const fn e(opcode: u8, name: &'static str, access: Access) -> OpInfo {
    OpInfo {
        opcode,
        service_action: None,
        name,
        access,
        reserve_ok: false,
        ua_exempt: false,
    }
}

const fn sa_e(opcode: u8, service_action: u8, name: &'static str, access: Access) -> OpInfo {
    OpInfo {
        service_action: Some(service_action),
        ..e(opcode, name, access)
    }
}

const fn free(o: OpInfo) -> OpInfo {
    OpInfo {
        reserve_ok: true,
        ua_exempt: true,
        ..o
    }
}

const fn reserve_ok(o: OpInfo) -> OpInfo {
    OpInfo {
        reserve_ok: true,
        ..o
    }
}

use Access::{Always, PrIn, PrOut, Read, Write};

/// Every supported command, sorted by opcode then service action.
pub(crate) static OPCODES: &[OpInfo] = &[
    e(op::TEST_UNIT_READY, "TEST UNIT READY", Always),
    free(e(op::REQUEST_SENSE, "REQUEST SENSE", Always)),
    e(op::READ_6, "READ(6)", Read),
    e(op::WRITE_6, "WRITE(6)", Write),
    free(e(op::INQUIRY, "INQUIRY", Always)),
    e(op::MODE_SELECT_6, "MODE SELECT(6)", Write),
    e(op::RESERVE_6, "RESERVE(6)", Write),
    reserve_ok(e(op::RELEASE_6, "RELEASE(6)", Write)),
    e(op::MODE_SENSE_6, "MODE SENSE(6)", Read),
    e(op::START_STOP_UNIT, "START STOP UNIT", Write),
    e(
        op::PREVENT_ALLOW_MEDIUM_REMOVAL,
        "PREVENT ALLOW MEDIUM REMOVAL",
        Read,
    ),
    e(op::READ_CAPACITY_10, "READ CAPACITY(10)", Always),
    e(op::READ_10, "READ(10)", Read),
    e(op::WRITE_10, "WRITE(10)", Write),
    e(op::WRITE_AND_VERIFY_10, "WRITE AND VERIFY(10)", Write),
    e(op::VERIFY_10, "VERIFY(10)", Read),
    e(op::PRE_FETCH_10, "PRE-FETCH(10)", Read),
    e(op::SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)", Write),
    e(op::READ_DEFECT_DATA_10, "READ DEFECT DATA(10)", Read),
    e(op::WRITE_SAME_10, "WRITE SAME(10)", Write),
    e(op::UNMAP, "UNMAP", Write),
    sa_e(
        op::SANITIZE,
        sa::SANITIZE_OVERWRITE,
        "SANITIZE OVERWRITE",
        Write,
    ),
    sa_e(
        op::SANITIZE,
        sa::SANITIZE_BLOCK_ERASE,
        "SANITIZE BLOCK ERASE",
        Write,
    ),
    sa_e(
        op::SANITIZE,
        sa::SANITIZE_EXIT_FAILURE_MODE,
        "SANITIZE EXIT FAILURE MODE",
        Write,
    ),
    e(op::MODE_SELECT_10, "MODE SELECT(10)", Write),
    e(op::RESERVE_10, "RESERVE(10)", Write),
    reserve_ok(e(op::RELEASE_10, "RELEASE(10)", Write)),
    e(op::MODE_SENSE_10, "MODE SENSE(10)", Read),
    e(op::PERSISTENT_RESERVE_IN, "PERSISTENT RESERVE IN", PrIn),
    e(op::PERSISTENT_RESERVE_OUT, "PERSISTENT RESERVE OUT", PrOut),
    e(op::READ_16, "READ(16)", Read),
    e(op::COMPARE_AND_WRITE, "COMPARE AND WRITE", Write),
    e(op::WRITE_16, "WRITE(16)", Write),
    e(op::ORWRITE_16, "ORWRITE(16)", Write),
    e(op::WRITE_AND_VERIFY_16, "WRITE AND VERIFY(16)", Write),
    e(op::VERIFY_16, "VERIFY(16)", Read),
    e(op::PRE_FETCH_16, "PRE-FETCH(16)", Read),
    e(op::SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)", Write),
    e(op::WRITE_SAME_16, "WRITE SAME(16)", Write),
    sa_e(
        op::SERVICE_ACTION_IN_16,
        sa::READ_CAPACITY_16,
        "READ CAPACITY(16)",
        Always,
    ),
    sa_e(
        op::SERVICE_ACTION_IN_16,
        sa::GET_LBA_STATUS,
        "GET LBA STATUS",
        Read,
    ),
    free(e(op::REPORT_LUNS, "REPORT LUNS", Always)),
    reserve_ok(sa_e(
        op::MAINTENANCE_IN,
        sa::REPORT_SUPPORTED_OPERATION_CODES,
        "REPORT SUPPORTED OPERATION CODES",
        Always,
    )),
    reserve_ok(sa_e(
        op::MAINTENANCE_IN,
        sa::REPORT_SUPPORTED_TMF,
        "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
        Always,
    )),
    e(op::READ_12, "READ(12)", Read),
    e(op::WRITE_12, "WRITE(12)", Write),
    e(op::WRITE_AND_VERIFY_12, "WRITE AND VERIFY(12)", Write),
    e(op::VERIFY_12, "VERIFY(12)", Read),
    e(op::READ_DEFECT_DATA_12, "READ DEFECT DATA(12)", Read),
];

/// Whether `opcode` is one whose commands are distinguished by a service action.
pub(crate) fn has_service_actions(opcode: u8) -> bool {
    OPCODES
        .iter()
        .any(|o| o.opcode == opcode && o.service_action.is_some())
}

/// Service action field location: byte 1 bits 4:0 for the opcodes that have one.
pub(crate) fn lookup(cdb: &[u8]) -> Option<&'static OpInfo> {
    let &opcode = cdb.first()?;
    if has_service_actions(opcode) {
        let sa = cdb.get(1)? & 0x1f;
        OPCODES
            .iter()
            .find(|o| o.opcode == opcode && o.service_action == Some(sa))
    } else {
        OPCODES.iter().find(|o| o.opcode == opcode)
    }
}

/// The per-command view executors work with.
pub(crate) struct Ctx<'a> {
    pub(crate) units: &'a LogicalUnits,
    pub(crate) lu: &'a Lu,
    pub(crate) nexus: &'a ItNexus,
    pub(crate) data_out: &'a [u8],
    pub(crate) data_in: &'a mut Vec<u8>,
    /// Snapshot taken when the command started.
    pub(crate) capacity_blocks: u64,
    pub(crate) write_protected: bool,
    pub(crate) wce: bool,
}

impl Ctx<'_> {
    pub(crate) fn backend(&self) -> &dyn BlockBackend {
        self.lu.backend.as_ref()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, LuState> {
        self.lu.lock()
    }
}

/// Append at most `alloc_len` bytes of `data` (SPC-5 §4.2.5.6: truncation is not an error).
pub(crate) fn put(data_in: &mut Vec<u8>, data: &[u8], alloc_len: u32) {
    let n = data.len().min(alloc_len as usize);
    data_in.extend_from_slice(&data[..n]);
}

fn check(sense: Sense, descriptor: bool) -> CommandOutcome {
    CommandOutcome {
        status: ScsiStatus::CheckCondition,
        sense: Some(sense.encode(descriptor)),
    }
}

pub(crate) fn execute(
    units: &LogicalUnits,
    lu: Option<&Lu>,
    req: &ScsiRequest<'_>,
    data_out: &[u8],
    data_in: &mut Vec<u8>,
) -> CommandOutcome {
    let info = lookup(req.cdb);
    let Some(lu) = lu else {
        return spc::no_lun(units, req, data_in);
    };
    // Decoding is pure; its verdict waits until pending unit attentions are reported.
    let parsed = Cdb::parse(req.cdb);
    let start = data_in.len();
    // One lock for the per-command state checks (the hot path takes it once).
    let (cdb, capacity_blocks, write_protected, wce) = {
        let mut st = lu.lock();
        let descriptor = st.mode.d_sense;
        st.ua.touch(req.nexus);
        let exempt = info.is_some_and(|i| i.ua_exempt);
        if !exempt && let Some(ua) = st.ua.take(req.nexus.id) {
            return check(ua.into(), descriptor);
        }
        // SBC-4 §4.11.2: while sanitizing, only the UA-exempt commands are served.
        if !exempt && st.sanitizing {
            return check(SenseReason::NotReadySanitizeInProgress.into(), descriptor);
        }
        let Some(info) = info else {
            // A known opcode with an unknown service action is a bad field, not a bad opcode.
            let reason = match req.cdb.first() {
                Some(&opcode) if has_service_actions(opcode) => SenseReason::InvalidFieldInCdb,
                _ => SenseReason::InvalidCommandOperationCode,
            };
            return check(reason.into(), descriptor);
        };
        tracing::trace!(
            command = info.name,
            lun = req.lun,
            nexus = req.nexus.id,
            "scsi command"
        );
        let cdb = match parsed {
            Ok(cdb) => cdb,
            Err(r) => return check(r.into(), descriptor),
        };
        if let Err(f) = reservation_check(&st, req.nexus, info, &cdb) {
            return outcome(f, descriptor);
        }
        (
            cdb,
            st.capacity_blocks,
            st.read_only || st.mode.swp,
            st.mode.wce,
        )
    };
    let mut ctx = Ctx {
        units,
        lu,
        nexus: req.nexus,
        data_out,
        data_in,
        capacity_blocks,
        write_protected,
        wce,
    };
    match run(&mut ctx, cdb) {
        Ok(()) => CommandOutcome::good(),
        Err(f) => {
            // No partial Data-In with CHECK CONDITION.
            ctx.data_in.truncate(start);
            // The command may have changed D_SENSE itself (MODE SELECT).
            outcome(f, lu.descriptor_sense())
        }
    }
}

fn outcome(f: Fail, descriptor: bool) -> CommandOutcome {
    match f {
        Fail::Check(s) => check(s, descriptor),
        Fail::ReservationConflict => CommandOutcome {
            status: ScsiStatus::ReservationConflict,
            sense: None,
        },
    }
}

fn reservation_check(st: &LuState, nexus: &ItNexus, info: &OpInfo, cdb: &Cdb) -> Exec {
    // PR IN REPORT CAPABILITIES is the one PR command allowed (SPC-5 §5.13.3).
    let report_caps = matches!(
        cdb,
        Cdb::PrIn {
            service_action: 2,
            ..
        }
    );
    if st
        .reservation
        .is_some_and(|holder| holder != nexus.id && !info.reserve_ok && !report_caps)
    {
        return Err(Fail::ReservationConflict);
    }
    if st.pr.conflicts(nexus, info.access) {
        return Err(Fail::ReservationConflict);
    }
    Ok(())
}

fn run(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    match cdb {
        Cdb::TestUnitReady => Ok(()),
        Cdb::RequestSense { desc, alloc_len } => {
            spc::request_sense(ctx, desc, alloc_len);
            Ok(())
        }
        Cdb::Inquiry {
            evpd,
            page,
            alloc_len,
        } => spc::inquiry(ctx, evpd, page, alloc_len),
        Cdb::ReportLuns { select, alloc_len } => spc::report_luns_on_lu(ctx, select, alloc_len),
        Cdb::ModeSense { .. } => super::mode::mode_sense(ctx, cdb),
        Cdb::ModeSelect { .. } => super::mode::mode_select(ctx, cdb),
        Cdb::Reserve => spc::reserve(ctx),
        Cdb::Release => spc::release(ctx),
        Cdb::PrIn { .. } | Cdb::PrOut { .. } => super::pr::execute(ctx, cdb),
        Cdb::PreventAllow { prevent } => spc::prevent_allow(ctx, prevent),
        Cdb::StartStopUnit { .. } => spc::start_stop_unit(ctx, cdb),
        Cdb::ReportSupportedOpcodes { .. } => spc::report_supported_opcodes(ctx, cdb),
        Cdb::ReportSupportedTmf { repd, alloc_len } => {
            spc::report_supported_tmf(ctx, repd, alloc_len);
            Ok(())
        }
        _ => sbc::execute(ctx, cdb),
    }
}

/// Data-Out bytes the CDB asks for (for the transport's overflow/underflow accounting).
pub(crate) fn data_out_len(raw: &[u8], block_size: u64) -> Option<u64> {
    let blocks = |n: u32| u64::from(n) * block_size;
    match Cdb::parse(raw).ok()? {
        Cdb::Write(rw) | Cdb::OrWrite(rw) | Cdb::WriteAndVerify { rw, .. } => {
            Some(blocks(rw.blocks))
        }
        Cdb::Verify { rw, bytchk } => match bytchk {
            1 => Some(blocks(rw.blocks)),
            3 => Some(block_size),
            _ => None,
        },
        // Zero blocks with Data-Out is diagnosed by COMPARE AND WRITE itself.
        Cdb::CompareAndWrite(rw) => (rw.blocks > 0).then(|| 2 * blocks(rw.blocks)),
        Cdb::WriteSame { ndob, .. } => (!ndob).then_some(block_size),
        Cdb::ModeSelect { param_len, .. }
        | Cdb::PrOut { param_len, .. }
        | Cdb::Unmap { param_len, .. }
        | Cdb::Sanitize { param_len, .. } => (param_len > 0).then_some(u64::from(param_len)),
        _ => None,
    }
}

/// CDB length for a table entry (REPORT SUPPORTED OPERATION CODES).
pub(crate) fn entry_cdb_len(o: &OpInfo) -> u16 {
    cdb_len(o.opcode).map_or(0, |n| n as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in OPCODES.windows(2) {
            let a = (w[0].opcode, w[0].service_action);
            let b = (w[1].opcode, w[1].service_action);
            assert!(a < b, "{} before {}", w[0].name, w[1].name);
        }
        for o in OPCODES {
            assert!(cdb_len(o.opcode).is_some(), "{}", o.name);
        }
    }

    #[test]
    fn lookup_uses_service_action() {
        let mut c = [0u8; 16];
        c[0] = 0x9e;
        c[1] = 0x10;
        assert_eq!(lookup(&c).map(|o| o.name), Some("READ CAPACITY(16)"));
        c[1] = 0x11;
        assert!(lookup(&c).is_none());
        assert!(lookup(&[0x83]).is_none());
    }
}
