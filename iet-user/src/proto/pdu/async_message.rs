//! Asynchronous Message (RFC 7143 §11.9).

use super::{Bhs, Opcode};

/// AsyncEvent codes (RFC 7143 §11.9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AsyncEvent {
    ScsiAsyncEvent = 0,
    LogoutRequested = 1,
    ConnectionDropped = 2,
    SessionDropped = 3,
    NegotiationRequested = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: AsyncEvent,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
}

impl AsyncMessage {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::AsyncMessage);
        bhs.set_final(true);
        bhs.set_lun(self.lun);
        bhs.set_itt(0xffff_ffff);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs.0[36] = self.event as u8;
        bhs.set_u16(38, self.parameter1);
        bhs.set_u16(40, self.parameter2);
        bhs.set_u16(42, self.parameter3);
        bhs
    }
}
