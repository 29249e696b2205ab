//! SCSI Data-Out (RFC 7143 §11.7) and Data-In (§11.8).

use super::{Bhs, Opcode, scsi_response::Residual};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataOut {
    pub final_bit: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

impl DataOut {
    pub fn load(bhs: &Bhs) -> DataOut {
        DataOut {
            final_bit: bhs.final_bit(),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            exp_stat_sn: bhs.u32_at(28),
            data_sn: bhs.u32_at(36),
            buffer_offset: bhs.u32_at(40),
        }
    }

    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::DataOut);
        bhs.set_final(self.final_bit);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs.set_u32(36, self.data_sn);
        bhs.set_u32(40, self.buffer_offset);
        bhs
    }
}

/// Status carried in the final Data-In when S=1 (RFC 7143 §11.8.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataInStatus {
    pub status: u8,
    pub stat_sn: u32,
    pub residual: Residual,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataIn {
    pub final_bit: bool,
    pub acknowledge: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub status: Option<DataInStatus>,
}

impl DataIn {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::DataIn);
        let mut flags = if self.final_bit { 0x80 } else { 0 };
        if self.acknowledge {
            flags |= 0x40;
        }
        if let Some(st) = self.status {
            let (ou, count) = st.residual.bits();
            flags |= 0x01 | ou;
            bhs.0[3] = st.status;
            bhs.set_u32(24, st.stat_sn);
            bhs.set_u32(44, count);
        }
        bhs.0[1] = flags;
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs.set_u32(36, self.data_sn);
        bhs.set_u32(40, self.buffer_offset);
        bhs
    }

    pub fn load(bhs: &Bhs) -> DataIn {
        let flags = bhs.0[1];
        DataIn {
            final_bit: flags & 0x80 != 0,
            acknowledge: flags & 0x40 != 0,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            exp_cmd_sn: bhs.u32_at(28),
            max_cmd_sn: bhs.u32_at(32),
            data_sn: bhs.u32_at(36),
            buffer_offset: bhs.u32_at(40),
            status: (flags & 0x01 != 0).then(|| DataInStatus {
                status: bhs.0[3],
                stat_sn: bhs.u32_at(24),
                residual: Residual::from_bits(flags, bhs.u32_at(44)),
            }),
        }
    }
}
