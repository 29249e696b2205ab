//! SCSI Response (RFC 7143 §11.4).

use super::{Bhs, Opcode};

/// iSCSI Response field (RFC 7143 §11.4.3).
pub const RESPONSE_COMPLETED: u8 = 0x00;
pub const RESPONSE_TARGET_FAILURE: u8 = 0x01;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScsiResponse {
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub residual: Residual,
}

/// Residual over- or underflow (the O and U bits with the count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Residual {
    #[default]
    None,
    Underflow(u32),
    Overflow(u32),
}

impl Residual {
    /// Compares what the command moved with what the initiator expected.
    pub fn of(expected: u64, actual: u64) -> Residual {
        use std::cmp::Ordering;
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        match actual.cmp(&expected) {
            Ordering::Less => Residual::Underflow(clamp(expected - actual)),
            Ordering::Greater => Residual::Overflow(clamp(actual - expected)),
            Ordering::Equal => Residual::None,
        }
    }

    /// The O/U flag bits and the residual count.
    pub fn bits(self) -> (u8, u32) {
        match self {
            Residual::None => (0, 0),
            Residual::Overflow(n) => (0x04, n),
            Residual::Underflow(n) => (0x02, n),
        }
    }

    pub fn from_bits(flags: u8, count: u32) -> Residual {
        if flags & 0x04 != 0 {
            Residual::Overflow(count)
        } else if flags & 0x02 != 0 {
            Residual::Underflow(count)
        } else {
            Residual::None
        }
    }
}

impl ScsiResponse {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::ScsiResponse);
        let (flags, count) = self.residual.bits();
        bhs.0[1] = 0x80 | flags;
        bhs.0[2] = self.response;
        bhs.0[3] = self.status;
        bhs.set_itt(self.itt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs.set_u32(36, self.exp_data_sn);
        bhs.set_u32(44, count);
        bhs
    }

    pub fn load(bhs: &Bhs) -> ScsiResponse {
        ScsiResponse {
            response: bhs.0[2],
            status: bhs.0[3],
            itt: bhs.itt(),
            stat_sn: bhs.u32_at(24),
            exp_cmd_sn: bhs.u32_at(28),
            max_cmd_sn: bhs.u32_at(32),
            exp_data_sn: bhs.u32_at(36),
            residual: Residual::from_bits(bhs.0[1], bhs.u32_at(44)),
        }
    }
}
