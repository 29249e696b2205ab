//! Task Management Function Request (RFC 7143 §11.5) and Response (§11.6).

use super::{Bhs, Opcode};

/// Function codes (RFC 7143 §11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
    TaskReassign,
    /// RFC 7144 §4.1 (SAM-5 §7.8).
    QueryTask,
    /// RFC 7144 §4.1 (SAM-5 §7.9).
    QueryTaskSet,
    /// RFC 7144 §4.1 (SAM-5 §7.6).
    ItNexusReset,
    /// RFC 7144 §4.1 (SAM-5 §7.10).
    QueryAsyncEvent,
    Unknown(u8),
}

impl TmfFunction {
    pub fn from_u8(v: u8) -> TmfFunction {
        match v {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LogicalUnitReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            9 => TmfFunction::QueryTask,
            10 => TmfFunction::QueryTaskSet,
            11 => TmfFunction::ItNexusReset,
            12 => TmfFunction::QueryAsyncEvent,
            other => TmfFunction::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            TmfFunction::AbortTask => 1,
            TmfFunction::AbortTaskSet => 2,
            TmfFunction::ClearAca => 3,
            TmfFunction::ClearTaskSet => 4,
            TmfFunction::LogicalUnitReset => 5,
            TmfFunction::TargetWarmReset => 6,
            TmfFunction::TargetColdReset => 7,
            TmfFunction::TaskReassign => 8,
            TmfFunction::QueryTask => 9,
            TmfFunction::QueryTaskSet => 10,
            TmfFunction::ItNexusReset => 11,
            TmfFunction::QueryAsyncEvent => 12,
            TmfFunction::Unknown(v) => v,
        }
    }
}

/// Response codes (RFC 7143 §11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TmfResponse {
    Complete = 0,
    TaskDoesNotExist = 1,
    LunDoesNotExist = 2,
    TaskStillAllegiant = 3,
    ReassignmentNotSupported = 4,
    NotSupported = 5,
    AuthorizationFailed = 6,
    /// SAM-5 FUNCTION SUCCEEDED, for the QUERY functions (RFC 7144 §4.2).
    Succeeded = 7,
    Rejected = 255,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TmfFunction,
    pub lun: u64,
    pub itt: u32,
    pub referenced_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    pub fn load(bhs: &Bhs) -> TaskMgmtRequest {
        TaskMgmtRequest {
            immediate: bhs.immediate(),
            function: TmfFunction::from_u8(bhs.0[1] & 0x7f),
            lun: bhs.lun(),
            itt: bhs.itt(),
            referenced_task_tag: bhs.u32_at(20),
            cmd_sn: bhs.u32_at(24),
            exp_stat_sn: bhs.u32_at(28),
            ref_cmd_sn: bhs.u32_at(32),
            exp_data_sn: bhs.u32_at(36),
        }
    }

    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::TaskMgmtRequest);
        bhs.set_immediate(self.immediate);
        bhs.0[1] = 0x80 | (self.function.code() & 0x7f);
        bhs.set_lun(self.lun);
        bhs.set_itt(self.itt);
        bhs.set_u32(20, self.referenced_task_tag);
        bhs.set_u32(24, self.cmd_sn);
        bhs.set_u32(28, self.exp_stat_sn);
        bhs.set_u32(32, self.ref_cmd_sn);
        bhs.set_u32(36, self.exp_data_sn);
        bhs
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: TmfResponse,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl TaskMgmtResponse {
    pub fn encode(&self) -> Bhs {
        let mut bhs = Bhs::new(Opcode::TaskMgmtResponse);
        bhs.set_final(true);
        bhs.0[2] = self.response as u8;
        bhs.set_itt(self.itt);
        bhs.set_u32(24, self.stat_sn);
        bhs.set_u32(28, self.exp_cmd_sn);
        bhs.set_u32(32, self.max_cmd_sn);
        bhs
    }
}
