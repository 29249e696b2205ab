//! Text Request (RFC 7143 §11.10) and Text Response (§11.11).

use super::{Bhs, Opcode};

/// The reserved Target Transfer Tag: "no continuation" (RFC 7143 §11.10.4).
pub const TTT_NONE: u32 = 0xffff_ffff;

const F_BIT: u8 = 0x80;
const C_BIT: u8 = 0x40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_bit: bool,
    pub continue_bit: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl TextRequest {
    pub fn load(bhs: &Bhs) -> Option<TextRequest> {
        if bhs.opcode() != Some(Opcode::TextRequest) {
            return None;
        }
        Some(TextRequest {
            immediate: bhs.immediate(),
            final_bit: bhs.flags() & F_BIT != 0,
            continue_bit: bhs.flags() & C_BIT != 0,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            cmd_sn: bhs.u32_at(24),
            exp_stat_sn: bhs.u32_at(28),
        })
    }

    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::TextRequest);
        bhs.set_immediate(self.immediate);
        bhs.set_bit(1, F_BIT, self.final_bit);
        bhs.set_bit(1, C_BIT, self.continue_bit);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs
    }
}

/// A Text Response. The session layer fills StatSN, ExpCmdSN and MaxCmdSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    pub final_bit: bool,
    pub continue_bit: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl TextResponse {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::TextResponse);
        bhs.set_bit(1, F_BIT, self.final_bit);
        bhs.set_bit(1, C_BIT, self.continue_bit);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.ttt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs
    }

    pub fn load(bhs: &Bhs) -> Option<TextResponse> {
        if bhs.opcode() != Some(Opcode::TextResponse) {
            return None;
        }
        Some(TextResponse {
            final_bit: bhs.flags() & F_BIT != 0,
            continue_bit: bhs.flags() & C_BIT != 0,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: bhs.u32_at(20),
            stat_sn: bhs.u32_at(24),
            exp_cmd_sn: bhs.u32_at(28),
            max_cmd_sn: bhs.u32_at(32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_from_wire_bytes() {
        let mut raw = [0u8; 48];
        raw[0] = 0x44;
        raw[1] = 0x80;
        raw[16..20].copy_from_slice(&[0, 0, 0, 3]);
        raw[20..24].copy_from_slice(&[0xff; 4]);
        raw[24..28].copy_from_slice(&[0, 0, 0, 2]);
        raw[28..32].copy_from_slice(&[0, 0, 0, 1]);
        let req = TextRequest::load(&Bhs(raw)).expect("text opcode");
        assert!(req.immediate && req.final_bit && !req.continue_bit);
        assert_eq!(
            (req.itt, req.ttt, req.cmd_sn, req.exp_stat_sn),
            (3, TTT_NONE, 2, 1)
        );
        assert_eq!(req.encode(), Bhs(raw));
    }

    #[test]
    fn response_round_trip() {
        let rsp = TextResponse {
            final_bit: false,
            continue_bit: true,
            lun: 0,
            itt: 3,
            ttt: 0x10,
            stat_sn: 4,
            exp_cmd_sn: 5,
            max_cmd_sn: 6,
        };
        let bhs = rsp.encode();
        assert_eq!((bhs.0[0], bhs.0[1]), (0x24, 0x40));
        assert_eq!(
            &bhs.0[20..36],
            &[0, 0, 0, 0x10, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6]
        );
        assert_eq!(TextResponse::load(&bhs), Some(rsp));
    }
}
