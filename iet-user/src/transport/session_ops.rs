//! Full-feature requests that act on the session or the target rather than
//! on one command: Logout (RFC 7143 §11.14), task management (§11.5) and
//! Reject (§11.17), as the connection's socket loop carries them out.

use std::sync::Arc;

use bytes::Bytes;
use tracing::info;

use super::writer::ConnTx;
use crate::proto::ffp::{OutPdu, StatSnMode};
use crate::proto::pdu::{
    Bhs, LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, Reject, RejectReason,
    TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse,
};
use crate::target::Registry;
use crate::target::session::{ConnHandle, Session};

/// How long a TMF response waits for affected tasks' answers that were
/// already being sent (a stalled writer must not hold it forever).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn send(tx: &ConnTx, bhs: Bhs, data: Bytes) {
    tx.send_pdu(OutPdu {
        bhs,
        data,
        stat_sn: StatSnMode::Advance,
    })
    .await;
}

/// A Reject carrying the offending header.
pub async fn reject(tx: &ConnTx, bhs: &Bhs, reason: RejectReason) {
    let rej = Reject {
        reason,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        data_sn: 0,
    };
    send(tx, rej.encode(), Bytes::copy_from_slice(&bhs.0)).await;
}

/// Answers a Logout Request; true when this connection is to close.
pub async fn logout(
    session: &Arc<Session>,
    conn: &ConnHandle,
    tx: &ConnTx,
    req: &LogoutRequest,
) -> bool {
    let (response, close_session, close_other) = match req.reason {
        LogoutReason::CloseSession => (LogoutResponseCode::Success, true, None),
        LogoutReason::CloseConnection if req.cid == conn.cid => {
            (LogoutResponseCode::Success, false, None)
        }
        LogoutReason::CloseConnection => match session.connection(req.cid) {
            Some(c) => (LogoutResponseCode::Success, false, Some(c)),
            None => (LogoutResponseCode::CidNotFound, false, None),
        },
        LogoutReason::RemoveConnectionForRecovery | LogoutReason::Unknown(_) => {
            (LogoutResponseCode::RecoveryNotSupported, false, None)
        }
    };
    let resp = LogoutResponse {
        response,
        itt: req.itt,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        time2wait: 0,
        time2retain: 0,
    };
    send(tx, resp.encode(), Bytes::new()).await;
    tx.flush().await;
    if let Some(other) = close_other {
        other.cancel.cancel();
        return false;
    }
    if response != LogoutResponseCode::Success {
        return false;
    }
    info!(reason = ?req.reason, "logout");
    if close_session {
        session.close();
    }
    true
}

/// Runs a TMF with SAM-5 scope and answers it.
pub async fn task_management(
    registry: &Registry,
    session: &Arc<Session>,
    tx: &ConnTx,
    req: &TaskMgmtRequest,
    exp_cmd_sn: u32,
) {
    let lun = crate::scsi::decode_lun(req.lun);
    let (response, in_flight) =
        crate::target::tmf::execute(registry, session, req, lun, exp_cmd_sn);
    // Answers of affected tasks that were already on their way go first.
    let late = in_flight.settle(ANSWER_WAIT).await;
    if late > 0 {
        tracing::warn!(
            late,
            itt = req.itt,
            "task answers still unsent at the TMF response"
        );
    }
    let resp = TaskMgmtResponse {
        response,
        itt: req.itt,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
    };
    send(tx, resp.encode(), Bytes::new()).await;
    if req.function == TmfFunction::TargetColdReset && response == TmfResponse::Complete {
        // SAM-5 §7.12: the target's sessions end, after the answer.
        tx.flush().await;
        if let Some(target) = session.target() {
            for s in registry.sessions() {
                if s.target().is_some_and(|t| Arc::ptr_eq(t, target)) {
                    s.close();
                }
            }
        }
    }
}
