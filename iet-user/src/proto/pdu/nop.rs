//! NOP-Out (RFC 7143 §11.18) and NOP-In (§11.19).

use super::{Bhs, Opcode};

/// The reserved tag meaning "no tag" / "no response wanted".
pub const RESERVED_TAG: u32 = 0xffff_ffff;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl NopOut {
    pub fn load(bhs: &Bhs) -> NopOut {
        NopOut {
            immediate: bhs.immediate(),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            cmd_sn: bhs.u32_at(24),
            exp_stat_sn: bhs.u32_at(28),
        }
    }

    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::NopOut);
        bhs.set_immediate(self.immediate);
        bhs.set_final(true);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl NopIn {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::NopIn);
        bhs.set_final(true);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs
    }

    pub fn load(bhs: &Bhs) -> NopIn {
        NopIn {
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            stat_sn: bhs.u32_at(24),
            exp_cmd_sn: bhs.u32_at(28),
            max_cmd_sn: bhs.u32_at(32),
        }
    }
}
