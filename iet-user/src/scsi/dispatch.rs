//! The one path every command takes: LU lookup, unit attention, CDB decode,
//! reservation check, execution by command set, sense.

use super::cdb::Cdb;
use super::exec::{Ctx, Exec, Fail};
use super::lun::{Lu, LuState};
use super::opcodes::{OpInfo, has_service_actions, lookup};
use super::sense::{Sense, SenseReason};
use super::{
    CommandOutcome, Completion, ItNexus, LogicalUnits, ScsiRequest, ScsiStatus, medium, sbc, spc,
    xcopy,
};

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
) -> Completion {
    let info = lookup(req.cdb);
    let Some(lu) = lu else {
        return spc::no_lun(units, req, data_in).into();
    };
    // Decoding is pure; its verdict waits until pending unit attentions are reported.
    let parsed = Cdb::parse(req.cdb);
    let start = data_in.len();
    // Another gateway may have changed the shared reservations: re-read them before the lock.
    let pr_current = super::pr::shared::refresh(units, lu);
    // One lock for the per-command state checks (the hot path takes it once).
    let (cdb, capacity_blocks, write_protected, wce) = {
        let mut st = lu.lock();
        let descriptor = st.mode.d_sense;
        st.ua.touch(req.nexus);
        let access = super::alua::observe(lu, &mut st);
        let exempt = info.is_some_and(|i| i.ua_exempt);
        if !exempt && let Err(r) = pr_current {
            return check(r.into(), descriptor).into();
        }
        if !exempt && let Some(ua) = st.ua.take(req.nexus.id) {
            return check(ua.into(), descriptor).into();
        }
        // SBC-4 §4.11.2: while sanitizing, only the UA-exempt commands are served.
        if !exempt && st.sanitizing {
            return check(SenseReason::NotReadySanitizeInProgress.into(), descriptor).into();
        }
        let Some(info) = info else {
            // A known opcode with an unknown service action is a bad field, not a bad opcode.
            let reason = match req.cdb.first() {
                Some(&opcode) if has_service_actions(opcode) => SenseReason::InvalidFieldInCdb,
                _ => SenseReason::InvalidCommandOperationCode,
            };
            return check(reason.into(), descriptor).into();
        };
        tracing::trace!(
            command = info.name,
            lun = req.lun,
            nexus = req.nexus.id,
            "scsi command"
        );
        let cdb = match parsed {
            Ok(cdb) => cdb,
            Err(r) => return check(r.into(), descriptor).into(),
        };
        if let Some(Err(r)) = access.map(|a| super::alua::check_access(a, &cdb)) {
            return check(r.into(), descriptor).into();
        }
        if let Err(f) = reservation_check(&st, req.nexus, info, &cdb) {
            return outcome(f, descriptor).into();
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
        preempted: Vec::new(),
    };
    let outcome = match run(&mut ctx, cdb) {
        Ok(()) => CommandOutcome::good(),
        Err(f) => {
            // No partial Data-In with CHECK CONDITION.
            ctx.data_in.truncate(start);
            // The command may have changed D_SENSE itself (MODE SELECT).
            outcome(f, lu.descriptor_sense())
        }
    };
    Completion {
        outcome,
        preempted: ctx.preempted,
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
        Cdb::ReportTargetPortGroups {
            extended,
            alloc_len,
        } => super::alua::report_target_port_groups(ctx, extended, alloc_len),
        Cdb::ReportSupportedTmf { repd, alloc_len } => {
            spc::report_supported_tmf(ctx, repd, alloc_len);
            Ok(())
        }
        Cdb::ExtendedCopy { param_len } => xcopy::extended_copy(ctx, param_len),
        Cdb::ReceiveCopyResults {
            service_action,
            list_id,
            alloc_len,
        } => xcopy::receive_copy_results(ctx, service_action, list_id, alloc_len),
        Cdb::FormatUnit { .. } | Cdb::Sanitize { .. } => medium::execute(ctx, cdb),
        _ => sbc::execute(ctx, cdb),
    }
}

/// Data-Out bytes the CDB asks for (for the transport's overflow/underflow accounting).
pub(crate) fn data_out_len(raw: &[u8], block_size: u64) -> Option<u64> {
    let blocks = |n: u32| u64::from(n) * block_size;
    match Cdb::parse(raw).ok()? {
        Cdb::Write(rw)
        | Cdb::OrWrite(rw)
        | Cdb::WriteAndVerify { rw, .. }
        | Cdb::WriteAtomic { rw, .. } => Some(blocks(rw.blocks)),
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
        | Cdb::Sanitize { param_len, .. }
        | Cdb::ExtendedCopy { param_len } => (param_len > 0).then_some(u64::from(param_len)),
        _ => None,
    }
}
