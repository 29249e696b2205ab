//! Logout Request (RFC 7143 §11.14) and Response (§11.15).

use super::{Bhs, Opcode};

/// Reason codes (RFC 7143 §11.14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutReason {
    CloseSession,
    CloseConnection,
    RemoveConnectionForRecovery,
    Unknown(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    pub fn load(bhs: &Bhs) -> LogoutRequest {
        LogoutRequest {
            immediate: bhs.immediate(),
            reason: match bhs.0[1] & 0x7f {
                0 => LogoutReason::CloseSession,
                1 => LogoutReason::CloseConnection,
                2 => LogoutReason::RemoveConnectionForRecovery,
                other => LogoutReason::Unknown(other),
            },
            itt: bhs.itt(),
            cid: bhs.u16_at(20),
            cmd_sn: bhs.u32_at(24),
            exp_stat_sn: bhs.u32_at(28),
        }
    }

    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::LogoutRequest);
        bhs.set_immediate(self.immediate);
        bhs.0[1] = 0x80
            | match self.reason {
                LogoutReason::CloseSession => 0,
                LogoutReason::CloseConnection => 1,
                LogoutReason::RemoveConnectionForRecovery => 2,
                LogoutReason::Unknown(v) => v & 0x7f,
            };
        bhs.set_itt(self.itt);
        bhs.set_u16(20, self.cid);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs
    }
}

/// Response codes (RFC 7143 §11.15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LogoutResponseCode {
    Success = 0,
    CidNotFound = 1,
    RecoveryNotSupported = 2,
    CleanupFailed = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: LogoutResponseCode,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl LogoutResponse {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::LogoutResponse);
        bhs.set_final(true);
        bhs.0[2] = self.response as u8;
        bhs.set_itt(self.itt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs.set_u16(40, self.time2wait);
        bhs.set_u16(42, self.time2retain);
        bhs
    }
}
