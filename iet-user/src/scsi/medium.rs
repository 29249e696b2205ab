//! Commands that initialize the whole medium (SBC-4 §4.34): FORMAT UNIT (§5.4) for a
//! device with no defect lists and no protection information, and SANITIZE (§5.28).

use super::cdb::Cdb;
use super::exec::{Ctx, Exec};
use super::sbc::{Dir, flush, io_fail};
use super::sense::SenseReason;

pub(crate) fn execute(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    match cdb {
        Cdb::FormatUnit {
            fmtpinfo,
            longlist,
            fmtdata,
            cmplst: _,
            defect_list_format,
        } => format_unit(ctx, fmtpinfo, longlist, fmtdata, defect_list_format),
        Cdb::Sanitize {
            service_action,
            param_len,
            ..
        } => sanitize(ctx, service_action, param_len),
        _ => Err(SenseReason::InvalidCommandOperationCode.into()),
    }
}

/// FORMAT UNIT (SBC-4 §5.4). PROTECT is zero in INQUIRY, so FMTPINFO must be zero
/// (§5.4.2.1); there are no defect lists, so a parameter list may carry none (CMPLST
/// and DEFECT LIST FORMAT then do not matter). The medium is initialized with the
/// initialization pattern if one is given (IP = 1, pattern type 00h or 01h), else with
/// zeros (deallocated on a thin LU, where LBPRZ says they read as zeros). IMMED is
/// honoured as "done when status arrives".
fn format_unit(
    ctx: &mut Ctx<'_>,
    fmtpinfo: u8,
    longlist: bool,
    fmtdata: bool,
    defect_list_format: u8,
) -> Exec {
    if fmtpinfo != 0 {
        return Err(super::sense::Sense::invalid_cdb_field(1, Some(7)).into());
    }
    ctx.check_writable()?;
    let mut pattern = None;
    if fmtdata {
        let header_len = if longlist { 8 } else { 4 };
        let p = ctx
            .data_out
            .get(..header_len)
            .ok_or(SenseReason::ParameterListLengthError)?;
        let flags = p[1];
        let (fov, dpry, dcrt, stpf, ip) = (
            flags & 0x80 != 0,
            flags & 0x40 != 0,
            flags & 0x20 != 0,
            flags & 0x10 != 0,
            flags & 0x08 != 0,
        );
        // FOV zero: DPRY, DCRT, STPF and IP shall be zero (SBC-4 §5.4.3.2).
        if !fov && (dpry || dcrt || stpf || ip) {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        // P_I_INFORMATION and PROTECTION INTERVAL EXPONENT need protection information.
        if longlist && p[3] != 0 {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        let defect_len = if longlist {
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]) as usize
        } else {
            usize::from(u16::from_be_bytes([p[2], p[3]]))
        };
        // No defect list is supported: a non-empty one, or a format we do not know, is refused.
        if defect_len != 0 || !matches!(defect_list_format, 0 | 3 | 4 | 5 | 6) {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        if ip {
            // Initialization pattern descriptor (SBC-4 §5.4.4).
            let d = ctx
                .data_out
                .get(header_len..header_len + 4)
                .ok_or(SenseReason::ParameterListLengthError)?;
            let (kind, len) = (d[1], usize::from(u16::from_be_bytes([d[2], d[3]])));
            let bs = ctx.bs() as usize;
            let bytes = ctx
                .data_out
                .get(header_len + 4..header_len + 4 + len)
                .ok_or(SenseReason::ParameterListLengthError)?;
            // SI (security initialize) is not supported; pattern type 00h is the default (zeros).
            if d[0] & 0x20 != 0 || kind > 1 || len > bs || (kind == 1 && len == 0) {
                return Err(SenseReason::InvalidFieldInParameterList.into());
            }
            if kind == 1 {
                pattern = Some(bytes.to_vec());
            }
        }
    }
    initialize_medium(ctx, pattern.as_deref())
}

/// Bytes written per SANITIZE OVERWRITE/BLOCK ERASE request (a multiple of both block sizes).
const SANITIZE_CHUNK: usize = 1 << 20;

/// SANITIZE (SBC-4 §5.28): OVERWRITE with a pattern, BLOCK ERASE, EXIT FAILURE MODE.
/// Runs to completion before status (IMMED is honoured as "done when status arrives").
fn sanitize(ctx: &mut Ctx<'_>, service_action: u8, param_len: u32) -> Exec {
    use super::cdb::sa;
    ctx.check_writable()?;
    let bs = ctx.bs() as usize;
    let pattern = match service_action {
        sa::SANITIZE_OVERWRITE => {
            // Parameter list (SBC-4 §5.28.3): INVERT/TEST/OWCOUNT, length, pattern.
            // A list that cannot hold 1..=block-size pattern bytes, and any inconsistent
            // field in it, is reported against the CDB (as libiscsi's Sanitize tests expect).
            if param_len <= 4 || param_len as usize > bs + 4 {
                return Err(SenseReason::InvalidFieldInCdb.into());
            }
            let p = ctx
                .data_out
                .get(..param_len as usize)
                .ok_or(SenseReason::ParameterListLengthError)?;
            let [b0, _, l0, l1, pattern @ ..] = p else {
                return Err(SenseReason::ParameterListLengthError.into());
            };
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            if b0 & 0x60 != 0
                || b0.trailing_zeros() >= 5
                || len == 0
                || len > bs
                || len != pattern.len()
            {
                return Err(SenseReason::InvalidFieldInCdb.into());
            }
            Some(pattern.to_vec())
        }
        sa::SANITIZE_BLOCK_ERASE | sa::SANITIZE_EXIT_FAILURE_MODE => {
            if param_len != 0 {
                return Err(SenseReason::InvalidFieldInCdb.into());
            }
            if service_action == sa::SANITIZE_EXIT_FAILURE_MODE {
                return Ok(());
            }
            None
        }
        _ => return Err(SenseReason::InvalidFieldInCdb.into()),
    };
    ctx.lock().sanitizing = true;
    let result = initialize_medium(ctx, pattern.as_deref());
    ctx.lock().sanitizing = false;
    result
}

fn initialize_medium(ctx: &Ctx<'_>, pattern: Option<&[u8]>) -> Exec {
    let _io = ctx.exclusive_io();
    let total = ctx.capacity_blocks * ctx.bs();
    if pattern.is_none() && ctx.lu.thin {
        ctx.backend()
            .discard(0, total)
            .map_err(|e| io_fail(Dir::Write, &e))?;
        return flush(ctx);
    }
    // A pattern shorter than a block repeats from the start of every block.
    let bs = ctx.bs() as usize;
    let block: Vec<u8> = match pattern {
        Some(p) => p.iter().copied().cycle().take(bs).collect(),
        None => vec![0u8; bs],
    };
    let buf = block.repeat(SANITIZE_CHUNK / bs);
    let mut pos = 0u64;
    while pos < total {
        let n = (total - pos).min(buf.len() as u64) as usize;
        ctx.backend()
            .write_at(&buf[..n], pos, false)
            .map_err(|e| io_fail(Dir::Write, &e))?;
        pos += n as u64;
    }
    flush(ctx)
}
