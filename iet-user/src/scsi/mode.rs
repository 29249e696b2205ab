//! Mode parameters (SPC-5 §7.5, SBC-4 §6.5): MODE SENSE/SELECT(6/10) over the
//! Read-Write Error Recovery, Caching, Control and Informational Exceptions pages.

use super::cdb::Cdb;
use super::exec::{Ctx, Exec, put};
use super::sense::SenseReason;

/// Current values of the changeable bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModeState {
    /// Caching page WCE: writes may complete before reaching stable storage.
    pub(crate) wce: bool,
    /// Control page D_SENSE: descriptor-format sense data.
    pub(crate) d_sense: bool,
    /// Control page SWP: software write protect.
    pub(crate) swp: bool,
}

impl ModeState {
    pub(crate) fn new(wce: bool) -> Self {
        Self {
            wce,
            d_sense: false,
            swp: false,
        }
    }
}

/// Page control (SPC-5 §6.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pc {
    Current,
    Changeable,
    Default,
}

struct PageDef {
    code: u8,
    /// Page bytes (including the 2-byte header) for one page-control value.
    build: fn(ModeState, Pc, bool) -> Vec<u8>,
}

fn rw_error_recovery(_: ModeState, pc: Pc, _: bool) -> Vec<u8> {
    let mut p = vec![0x01, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    if pc != Pc::Changeable {
        p[2] = 0xc0; // AWRE, ARRE
    }
    p
}

fn caching(st: ModeState, pc: Pc, default_wce: bool) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x08;
    p[1] = 0x12;
    p[2] = match pc {
        Pc::Current => u8::from(st.wce) << 2,
        Pc::Changeable => 0x04,
        Pc::Default => u8::from(default_wce) << 2,
    };
    p
}

fn control(st: ModeState, pc: Pc, _: bool) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0x0a;
    p[1] = 0x0a;
    match pc {
        Pc::Current => {
            p[2] = u8::from(st.d_sense) << 2;
            p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            p[4] = u8::from(st.swp) << 3;
            p[8..10].copy_from_slice(&0xffffu16.to_be_bytes()); // BUSY TIMEOUT PERIOD: unlimited
        }
        Pc::Changeable => {
            p[2] = 0x04; // D_SENSE
            p[4] = 0x08; // SWP
        }
        Pc::Default => {
            p[3] = 0x10;
            p[8..10].copy_from_slice(&0xffffu16.to_be_bytes());
        }
    }
    p
}

fn informational_exceptions(_: ModeState, pc: Pc, _: bool) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0x1c;
    p[1] = 0x0a;
    if pc != Pc::Changeable {
        p[2] = 0x08; // DEXCPT: no informational exception reporting
    }
    p
}

/// The mode pages, ascending by page code (MODE SENSE page 3Fh returns them in this order).
static PAGES: &[PageDef] = &[
    PageDef {
        code: 0x01,
        build: rw_error_recovery,
    },
    PageDef {
        code: 0x08,
        build: caching,
    },
    PageDef {
        code: 0x0a,
        build: control,
    },
    PageDef {
        code: 0x1c,
        build: informational_exceptions,
    },
];

const ALL_PAGES: u8 = 0x3f;

pub(crate) fn mode_sense(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    let Cdb::ModeSense {
        ten,
        dbd,
        llbaa,
        pc,
        page,
        subpage,
        alloc_len,
    } = cdb
    else {
        return Err(SenseReason::InvalidFieldInCdb.into());
    };
    let pc = match pc {
        0 => Pc::Current,
        1 => Pc::Changeable,
        2 => Pc::Default,
        _ => return Err(SenseReason::SavingParametersNotSupported.into()),
    };
    // No subpages: only subpage 00h, or FFh ("all subpages") with page 3Fh.
    if subpage != 0 && !(page == ALL_PAGES && subpage == 0xff) {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    let st = ctx.lock().mode;
    let default_wce = true;
    let mut pages = Vec::new();
    for def in PAGES.iter().filter(|d| page == ALL_PAGES || d.code == page) {
        pages.extend_from_slice(&(def.build)(st, pc, default_wce));
    }
    if pages.is_empty() {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    let mut block_desc = Vec::new();
    if !dbd {
        let bs = ctx.lu.block_size;
        if llbaa {
            block_desc.extend_from_slice(&ctx.capacity_blocks.to_be_bytes());
            block_desc.extend_from_slice(&[0; 4]);
            block_desc.extend_from_slice(&bs.to_be_bytes());
        } else {
            let blocks = u32::try_from(ctx.capacity_blocks).unwrap_or(u32::MAX);
            block_desc.extend_from_slice(&blocks.to_be_bytes());
            block_desc.push(0);
            block_desc.extend_from_slice(&bs.to_be_bytes()[1..]);
        }
    }
    // Device-specific parameter (SBC-4 §6.5.1): WP, DPOFUA.
    let dsp = (u8::from(ctx.write_protected) << 7) | 0x10;
    let mut d = Vec::new();
    if ten {
        d.extend_from_slice(&[0, 0, 0, dsp, u8::from(llbaa && !dbd), 0]);
        d.extend_from_slice(&(block_desc.len() as u16).to_be_bytes());
    } else {
        d.extend_from_slice(&[0, 0, dsp, block_desc.len() as u8]);
    }
    d.extend_from_slice(&block_desc);
    d.extend_from_slice(&pages);
    if ten {
        let len = (d.len() - 2) as u16;
        d[0..2].copy_from_slice(&len.to_be_bytes());
    } else {
        d[0] = u8::try_from(d.len() - 1).unwrap_or(u8::MAX);
    }
    put(ctx.data_in, &d, alloc_len);
    Ok(())
}

/// MODE SELECT(6/10) (SPC-5 §6.11): only bits reported changeable may differ from current.
pub(crate) fn mode_select(ctx: &mut Ctx<'_>, cdb: Cdb) -> Exec {
    let Cdb::ModeSelect {
        ten,
        pf,
        sp,
        param_len,
    } = cdb
    else {
        return Err(SenseReason::InvalidFieldInCdb.into());
    };
    if sp {
        return Err(SenseReason::SavingParametersNotSupported.into());
    }
    if param_len == 0 {
        return Ok(());
    }
    if !pf {
        return Err(SenseReason::InvalidFieldInCdb.into());
    }
    let data = ctx
        .data_out
        .get(..param_len as usize)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let header_len = if ten { 8 } else { 4 };
    if data.len() < header_len {
        return Err(SenseReason::ParameterListLengthError.into());
    }
    let bd_len = if ten {
        usize::from(u16::from_be_bytes([data[6], data[7]]))
    } else {
        usize::from(data[3])
    };
    let mut rest = data
        .get(header_len + bd_len..)
        .ok_or(SenseReason::ParameterListLengthError)?;
    let mut new = ctx.lock().mode;
    let old = new;
    while !rest.is_empty() {
        let [b0, len, ..] = *rest else {
            return Err(SenseReason::ParameterListLengthError.into());
        };
        // SPF (subpage format) pages are not supported.
        if b0 & 0x40 != 0 {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        let page = rest
            .get(..2 + usize::from(len))
            .ok_or(SenseReason::ParameterListLengthError)?;
        rest = &rest[page.len()..];
        let def = PAGES
            .iter()
            .find(|d| d.code == b0 & 0x3f)
            .ok_or(SenseReason::InvalidFieldInParameterList)?;
        let current = (def.build)(new, Pc::Current, true);
        let changeable = (def.build)(new, Pc::Changeable, true);
        if page.len() != current.len() {
            return Err(SenseReason::InvalidFieldInParameterList.into());
        }
        // Byte 0 carries PS (bit 7), which the initiator must send as zero but we tolerate.
        for i in 1..page.len() {
            if (page[i] ^ current[i]) & !changeable[i] != 0 {
                return Err(SenseReason::InvalidFieldInParameterList.into());
            }
        }
        match def.code {
            0x08 => new.wce = page[2] & 0x04 != 0,
            0x0a => {
                new.d_sense = page[2] & 0x04 != 0;
                new.swp = page[4] & 0x08 != 0;
            }
            _ => {}
        }
    }
    let mut st = ctx.lock();
    st.mode = new;
    if old.wce != new.wce || old.d_sense != new.d_sense || old.swp != new.swp {
        st.ua
            .establish_others(Some(ctx.nexus.id), SenseReason::ModeParametersChanged);
    }
    drop(st);
    if old.wce && !new.wce {
        // Cached writes must be durable before we claim write-through.
        ctx.backend().flush().map_err(|_| SenseReason::WriteError)?;
    }
    Ok(())
}
