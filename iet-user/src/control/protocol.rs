//! Control protocol, version 1: one JSON object per line each way.
//!
//! A request is `{"version":1,"op":"<name>",...fields}`; the answer is
//! `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`. Unknown ops,
//! unknown fields, other versions and lines over [`MAX_LINE`] bytes are
//! refused with an error and the connection stays usable.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{ParamsConfig, PortalTuning};

pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Who a CHAP account or ACL belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountScope {
    Discovery,
    Target(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    ShowTargets,
    ShowVolumes,
    ShowSessions,
    ShowPortals,
    ShowAccounts,
    Stats,
    /// Changes the login abuse limits; absent fields stay.
    LimitsSet {
        #[serde(default)]
        max_logins_in_progress: Option<u32>,
        #[serde(default)]
        login_timeout_secs: Option<u32>,
        #[serde(default)]
        max_sessions_per_initiator: Option<u32>,
        #[serde(default)]
        chap_failures_before_lockout: Option<u32>,
        #[serde(default)]
        chap_lockout_secs: Option<u32>,
    },
    /// Changes the write-data budgets (MiB); absent fields stay.
    MemorySet {
        #[serde(default)]
        write_budget_mib: Option<u32>,
        #[serde(default)]
        session_write_budget_mib: Option<u32>,
    },
    TargetNew {
        name: String,
        #[serde(default)]
        alias: Option<String>,
    },
    TargetDelete {
        name: String,
        #[serde(default)]
        force: bool,
    },
    /// Changes negotiation parameters by their ietd.conf names
    /// (`MaxBurstLength`, `CHAP_A`, `NOPInterval`, ...), for new logins.
    TargetSet {
        name: String,
        params: Vec<(String, String)>,
    },
    LunNew {
        target: String,
        /// Next free number when absent.
        #[serde(default)]
        lun: Option<u64>,
        path: String,
        #[serde(default)]
        block_size: Option<u32>,
        #[serde(default)]
        read_only: bool,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        engine: crate::backend::Engine,
        #[serde(default)]
        direct: bool,
    },
    LunDelete {
        target: String,
        lun: u64,
        #[serde(default)]
        force: bool,
    },
    LunResize {
        target: String,
        lun: u64,
        size: u64,
    },
    LunSet {
        target: String,
        lun: u64,
        read_only: bool,
    },
    PortalAdd {
        listen: SocketAddr,
        #[serde(default)]
        advertise: Option<SocketAddr>,
    },
    PortalRemove {
        listen: SocketAddr,
    },
    /// Switches the eBPF sk_msg features of a portal at runtime.
    PortalSet {
        listen: SocketAddr,
        accounting: bool,
        redirect: bool,
        /// SO_SNDBUF / SO_RCVBUF / TCP_NOTSENT_LOWAT for new connections;
        /// 0 leaves the kernel's autotuning.
        #[serde(default)]
        sndbuf: u32,
        #[serde(default)]
        rcvbuf: u32,
        #[serde(default)]
        notsent_lowat: u32,
        /// Congestion control for new connections; empty: system default.
        #[serde(default)]
        congestion: String,
    },
    AccountAdd {
        scope: AccountScope,
        direction: Direction,
        user: String,
        secret: String,
    },
    AccountDelete {
        scope: AccountScope,
        direction: Direction,
        user: String,
    },
    AclSet {
        target: String,
        allow: Vec<String>,
        deny: Vec<String>,
    },
    SessionDelete {
        tsih: u16,
    },
    ConnectionDelete {
        tsih: u16,
        cid: u16,
    },
    Save {
        path: String,
    },
    Reload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            error: None,
            data: Some(data),
        }
    }

    pub fn done() -> Response {
        Response {
            ok: true,
            error: None,
            data: None,
        }
    }

    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            data: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    pub tid: u32,
    pub name: String,
    pub alias: Option<String>,
    pub luns: Vec<u64>,
    pub sessions: usize,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Every negotiation parameter, defaults included.
    pub params: ParamsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeView {
    pub tid: u32,
    pub target: String,
    pub lun: u64,
    pub path: String,
    pub size_bytes: u64,
    pub block_size: u32,
    pub read_only: bool,
    pub write_cache: bool,
    /// The engine in use (`file`, `uring`, `uring+direct`, `memory`, ...).
    #[serde(default)]
    pub engine: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelConnView {
    pub state: u32,
    pub srtt_us: u32,
    pub retransmits: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pdus_by_opcode: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub cid: u16,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub header_digest: bool,
    pub data_digest: bool,
    pub tx_bytes: u64,
    pub tx_pdus_by_opcode: Vec<(String, u64)>,
    /// The eBPF per-connection record, when the data plane is on.
    pub kernel: Option<KernelConnView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub tid: u32,
    pub target: Option<String>,
    pub tsih: u16,
    /// IET's sid: ISID << 16 | TSIH.
    pub sid: u64,
    pub initiator: String,
    pub isid: String,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub tasks: usize,
    pub negotiated: Vec<(String, String)>,
    pub connections: Vec<ConnectionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalView {
    pub listen: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub tuning: PortalTuning,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub scope: AccountScope,
    pub direction: Direction,
    pub user: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let line = r#"{"version":1,"op":"lun_resize","target":"iqn.2026-11.io.iet:t","lun":0,"size":1048576}"#;
        let env: Envelope = serde_json::from_str(line).unwrap();
        assert_eq!(
            env.request,
            Request::LunResize {
                target: "iqn.2026-11.io.iet:t".into(),
                lun: 0,
                size: 1_048_576
            }
        );
        assert_eq!(serde_json::to_string(&env).unwrap(), line);
        assert!(
            serde_json::from_str::<Envelope>(r#"{"version":1,"op":"lun_resize","bogus":1}"#)
                .is_err()
        );
        let unit: Envelope = serde_json::from_str(r#"{"version":1,"op":"show_sessions"}"#).unwrap();
        assert_eq!(unit.request, Request::ShowSessions);
    }
}
