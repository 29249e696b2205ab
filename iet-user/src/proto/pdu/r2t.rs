//! Ready To Transfer (RFC 7143 §11.8).

use super::{Bhs, Opcode};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
}

impl R2t {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::R2t);
        bhs.set_final(true);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs.set_u32(36, self.r2t_sn);
        bhs.set_u32(40, self.buffer_offset);
        bhs.set_u32(44, self.desired_data_transfer_length);
        bhs
    }

    pub fn load(bhs: &Bhs) -> R2t {
        R2t {
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            stat_sn: bhs.u32_at(24),
            exp_cmd_sn: bhs.u32_at(28),
            max_cmd_sn: bhs.u32_at(32),
            r2t_sn: bhs.u32_at(36),
            buffer_offset: bhs.u32_at(40),
            desired_data_transfer_length: bhs.u32_at(44),
        }
    }
}
