//! SPC-5 primary commands: INQUIRY, REPORT LUNS, REQUEST SENSE, RESERVE/RELEASE,
//! PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT, and the REPORT SUPPORTED ... pair.

use super::cdb::{Cdb, cdb_len, op};
use super::exec::{Ctx, Exec, Fail, put};
use super::lun_addr::encode_lun;
use super::opcodes::{OPCODES, OpInfo, entry_cdb_len, has_service_actions};
use super::sense::{Sense, SenseReason};
use super::{CommandOutcome, LogicalUnits, ScsiRequest, ScsiStatus, vpd};

/// Version descriptors (SPC-5 table 146): SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0960, 0x0460, 0x04c0];

fn pad(dst: &mut Vec<u8>, s: &str, n: usize) {
    let mut b: Vec<u8> = s
        .bytes()
        .filter(|c| c.is_ascii_graphic() || *c == b' ')
        .take(n)
        .collect();
    b.resize(n, b' ');
    dst.extend_from_slice(&b);
}

/// Standard INQUIRY data (SPC-5 §6.7.2). `byte0` carries qualifier and device type.
fn standard_inquiry(byte0: u8, vendor: &str, product: &str) -> Vec<u8> {
    let mut d = vec![
        byte0, 0x00, 0x06, // VERSION: SPC-4
        0x12, // HISUP, RESPONSE DATA FORMAT 2
        0, 0x00, 0x00, 0x02, // CMDQUE
    ];
    pad(&mut d, vendor, 8);
    pad(&mut d, product, 16);
    pad(&mut d, env!("CARGO_PKG_VERSION"), 4);
    d.resize(58, 0);
    for v in VERSION_DESCRIPTORS {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d.resize(96, 0);
    d[4] = (d.len() - 5) as u8;
    d
}

/// Commands for a LUN that does not exist (SPC-5 §6.7.2, §6.29, SAM-5 §5.9.6).
pub(crate) fn no_lun(
    units: &LogicalUnits,
    req: &ScsiRequest<'_>,
    data_in: &mut Vec<u8>,
) -> CommandOutcome {
    let not_supported = CommandOutcome {
        status: ScsiStatus::CheckCondition,
        sense: Some(Sense::from(SenseReason::LogicalUnitNotSupported).encode(false)),
    };
    let cdb = match Cdb::parse(req.cdb) {
        Ok(cdb) => cdb,
        Err(r)
            if matches!(
                req.cdb.first(),
                Some(&(op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE))
            ) =>
        {
            return CommandOutcome {
                status: ScsiStatus::CheckCondition,
                sense: Some(Sense::from(r).encode(false)),
            };
        }
        Err(_) => return not_supported,
    };
    let result = match cdb {
        // Peripheral qualifier 011b: no logical unit can be accessed here.
        Cdb::Inquiry {
            evpd: false,
            alloc_len,
            ..
        } => {
            put(data_in, &standard_inquiry(0x7f, "", ""), alloc_len);
            Ok(())
        }
        Cdb::Inquiry {
            evpd: true,
            page,
            alloc_len,
        } => {
            put(data_in, &[0x7f, page, 0, 0], alloc_len);
            Ok(())
        }
        Cdb::ReportLuns { select, alloc_len } => {
            let r = report_luns(units, data_in, select, alloc_len);
            units.luns_reported(req.nexus);
            r
        }
        Cdb::RequestSense { desc, alloc_len } => {
            put(
                data_in,
                &Sense::from(SenseReason::LogicalUnitNotSupported).encode(desc),
                alloc_len,
            );
            Ok(())
        }
        _ => return not_supported,
    };
    match result {
        Ok(()) => CommandOutcome::good(),
        Err(Fail::Check(s)) => CommandOutcome {
            status: ScsiStatus::CheckCondition,
            sense: Some(s.encode(false)),
        },
        Err(Fail::ReservationConflict) => CommandOutcome {
            status: ScsiStatus::ReservationConflict,
            sense: None,
        },
    }
}

pub(crate) fn inquiry(ctx: &mut Ctx<'_>, evpd: bool, page: u8, alloc_len: u32) -> Exec {
    if evpd {
        let data = vpd::page(ctx, page)?;
        put(ctx.data_in, &data, alloc_len);
    } else {
        let mut data = standard_inquiry(0x00, &ctx.lu.vendor, &ctx.lu.product);
        // 3PC: the copy manager serves EXTENDED COPY (SPC-5 §6.7.2).
        data[5] |= 0x08 | super::alua::tpgs(ctx.lu);
        put(ctx.data_in, &data, alloc_len);
    }
    Ok(())
}

/// REPORT LUNS (SPC-5 §6.29) with SAM-5 peripheral (<256) or flat addressing (`lun_addr`).
pub(crate) fn report_luns(
    units: &LogicalUnits,
    data_in: &mut Vec<u8>,
    select: u8,
    alloc_len: u32,
) -> Exec {
    if !matches!(select, 0x00..=0x02 | 0x10..=0x12) {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    // Select 01h (well-known LUs only) and 11h report none; we have no well-known LUs.
    let luns = if matches!(select, 0x01 | 0x11) {
        Vec::new()
    } else {
        units.lun_list()
    };
    let mut d = Vec::with_capacity(8 + luns.len() * 8);
    d.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for lun in luns {
        d.extend_from_slice(&encode_lun(lun));
    }
    put(data_in, &d, alloc_len);
    Ok(())
}

/// REPORT LUNS addressed to an existing LU.
pub(crate) fn report_luns_on_lu(ctx: &mut Ctx<'_>, select: u8, alloc_len: u32) -> Exec {
    report_luns(ctx.units, ctx.data_in, select, alloc_len)?;
    ctx.units.luns_reported(ctx.nexus);
    Ok(())
}

/// REQUEST SENSE (SPC-5 §6.39): reports and clears a pending unit attention.
pub(crate) fn request_sense(ctx: &mut Ctx<'_>, desc: bool, alloc_len: u32) {
    let pending = ctx.lock().ua.take(ctx.nexus.id);
    let sense = Sense::from(pending.unwrap_or(SenseReason::NoSense));
    put(ctx.data_in, &sense.encode(desc), alloc_len);
}

/// RESERVE(6/10) (SPC-2 §7.21): exclusive access for this nexus.
pub(crate) fn reserve(ctx: &mut Ctx<'_>) -> Exec {
    let mut st = ctx.lock();
    // SPC-5 §5.13.3: RESERVE while persistent reservations exist conflicts.
    if st.pr.is_active() {
        return Err(Fail::ReservationConflict);
    }
    match st.reservation {
        Some(holder) if holder != ctx.nexus.id => Err(Fail::ReservationConflict),
        _ => {
            st.reservation = Some(ctx.nexus.id);
            Ok(())
        }
    }
}

/// RELEASE(6/10): releasing a reservation held by someone else is a no-op (SPC-2 §7.17).
pub(crate) fn release(ctx: &mut Ctx<'_>) -> Exec {
    let mut st = ctx.lock();
    // CRH = 1 (SPC-5 §5.13.3): under a persistent reservation RELEASE does nothing
    // for a registered nexus and conflicts for others.
    if st.pr.has_reservation() {
        return if st.pr.is_registered(ctx.nexus) {
            Ok(())
        } else {
            Err(Fail::ReservationConflict)
        };
    }
    if st.reservation == Some(ctx.nexus.id) {
        st.reservation = None;
    }
    Ok(())
}

pub(crate) fn prevent_allow(ctx: &mut Ctx<'_>, prevent: u8) -> Exec {
    let mut st = ctx.lock();
    match prevent {
        0 => {
            st.prevent.remove(&ctx.nexus.id);
        }
        1 => {
            st.prevent.insert(ctx.nexus.id);
        }
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    }
    Ok(())
}

/// START STOP UNIT (SBC-4 §5.25). The medium cannot really be ejected or stopped;
/// an eject under PREVENT is refused as the standard requires.
pub(crate) fn start_stop_unit(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    let Cdb::StartStopUnit {
        power_condition,
        loej,
        start,
        ..
    } = cdb
    else {
        return Err(SenseReason::InvalidFieldInCdb.into());
    };
    if !matches!(power_condition, 0x0..=0x3 | 0x7 | 0xa | 0xb) {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    if power_condition == 0 && loej && !start && !ctx.lock().prevent.is_empty() {
        return Err(SenseReason::MediumRemovalPrevented.into());
    }
    Ok(())
}

/// UNMAP exists only on thin-provisioned LUs (LBPU, SBC-4 §6.6.4).
fn supported(ctx: &Ctx<'_>, o: &OpInfo) -> bool {
    let rtpg = o.opcode == op::MAINTENANCE_IN
        && o.service_action == Some(super::cdb::sa::REPORT_TARGET_PORT_GROUPS);
    (o.opcode != op::UNMAP || ctx.lu.thin) && (!rtpg || super::alua::tpgs(ctx.lu) != 0)
}

fn usage_data(o: &OpInfo) -> Vec<u8> {
    let len = cdb_len(o.opcode).unwrap_or(6);
    let mut u = vec![0xff; len];
    u[0] = o.opcode;
    if let Some(sa) = o.service_action {
        u[1] = sa;
    } else if o.protect_field {
        // No protection information: the *PROTECT bits are not usable; DPO and FUA are.
        u[1] &= 0x1f;
    }
    // CONTROL byte: only LINK/NACA-style bits we do not support.
    if let Some(last) = u.last_mut() {
        *last = 0x00;
    }
    u
}

fn timeouts() -> [u8; 12] {
    // Command timeouts descriptor (SPC-5 §6.35.4): length 0Ah, no nominal/recommended value.
    [0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// REPORT SUPPORTED OPERATION CODES (SPC-5 §6.35), generated from the opcode table.
pub(crate) fn report_supported_opcodes(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    let Cdb::ReportSupportedOpcodes {
        rctd,
        options,
        opcode,
        service_action,
        alloc_len,
    } = cdb
    else {
        return Err(SenseReason::InvalidFieldInCdb.into());
    };
    let mut d = Vec::new();
    match options {
        0 => {
            for o in OPCODES.iter().filter(|o| supported(ctx, o)) {
                d.push(o.opcode);
                d.push(0);
                d.extend_from_slice(&u16::from(o.service_action.unwrap_or(0)).to_be_bytes());
                d.push(0);
                d.push(u8::from(rctd) << 1 | u8::from(o.service_action.is_some()));
                d.extend_from_slice(&entry_cdb_len(o).to_be_bytes());
                if rctd {
                    d.extend_from_slice(&timeouts());
                }
            }
            let len = (d.len() as u32).to_be_bytes();
            d.splice(0..0, len);
        }
        1..=3 => {
            let with_sa = has_service_actions(opcode);
            // SPC-5 §6.35.1: option 001b for an opcode with service actions, or 010b for one
            // without, is INVALID FIELD IN CDB; the field pointer names REPORTING OPTIONS.
            if (options == 1 && with_sa) || (options == 2 && !with_sa) {
                return Err(Sense::invalid_cdb_field(2, Some(2)).into());
            }
            let entry = OPCODES.iter().filter(|o| supported(ctx, o)).find(|o| {
                o.opcode == opcode
                    && (!with_sa || o.service_action.map(u16::from) == Some(service_action))
            });
            match entry {
                Some(o) => {
                    let usage = usage_data(o);
                    d.extend_from_slice(&[0, u8::from(rctd) << 7 | 0x03]);
                    d.extend_from_slice(&(usage.len() as u16).to_be_bytes());
                    d.extend_from_slice(&usage);
                    if rctd {
                        d.extend_from_slice(&timeouts());
                    }
                }
                // SUPPORT 001b: not supported.
                None => d.extend_from_slice(&[0, 0x01, 0, 0]),
            }
        }
        _ => return Err(Sense::invalid_cdb_field(2, Some(2)).into()),
    }
    put(ctx.data_in, &d, alloc_len);
    Ok(())
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-5 §6.36): ABORT TASK, ABORT TASK SET,
/// CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET (RFC 7143 §11.5.1).
pub(crate) fn report_supported_tmf(ctx: &mut Ctx<'_>, repd: bool, alloc_len: u32) {
    let mut d = vec![0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0, 0, 0];
    if repd {
        d[3] = 0x0c;
        d.resize(16, 0);
    }
    put(ctx.data_in, &d, alloc_len);
}
