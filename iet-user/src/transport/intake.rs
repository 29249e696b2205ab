//! Command intake for one connection: admission to the session (task
//! table, CmdSN order, task set), write data collection, delivery of
//! commands other connections released, aborts and the write budget.

use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tracing::{debug, warn};

use super::exec::{Cmd, CommandInfo, MAX_WRITE_BUFFER, WriteBuf};
use super::full_feature::{FullFeature, TryRead};
use crate::proto::ffp::writes::{EarlyVerdict, WriteData};
use crate::proto::pdu::{Bhs, RejectReason, Residual, ScsiCommand};
use crate::scsi::{SenseReason, decode_lun};
use crate::target::session::{ConnNews, Delivered, Delivery, TaskSlot};

impl<R: AsyncRead + TryRead + Unpin> FullFeature<R> {
    /// A SCSI command: registered with the session, ordered by CmdSN and
    /// entered in its task set; a write starts collecting its data.
    pub(super) async fn admit(&mut self, bhs: &Bhs, cmd: &ScsiCommand, immediate: &Bytes) {
        let Some(exec) = self.exec.clone() else {
            return;
        };
        let lun = decode_lun(cmd.lun);
        let Some(mut slot) =
            TaskSlot::register(&self.session, cmd.itt, lun, cmd.cmd_sn, self.conn.cid)
        else {
            super::session_ops::reject(&self.tx, bhs, RejectReason::TaskInProgress).await;
            return;
        };
        let mut info = CommandInfo::from_pdu(cmd, lun, Instant::now());
        let delivery = Delivery {
            cid: self.conn.cid,
            itt: cmd.itt,
            lun,
            attr: info.attr,
        };
        let target = self.session.target().expect("normal session").clone();
        let mut delivered = std::mem::take(&mut self.delivered);
        if !self.session.window.arrive(
            cmd.cmd_sn,
            cmd.immediate,
            delivery,
            exec.nexus.id,
            &target.task_sets,
            &mut delivered,
        ) {
            debug!(cmd_sn = cmd.cmd_sn, "CmdSN outside the window: ignored");
            self.delivered = delivered;
            return;
        }
        slot.accepted();
        if cmd.write {
            info.data_out_len = exec.luns.data_out_len(lun, &info.cdb);
            let edtl = cmd.expected_data_transfer_length;
            // A write larger than we buffer is answered with INVALID FIELD
            // IN CDB (block limits advertise less); its data is dropped.
            let verdict = (edtl > MAX_WRITE_BUFFER).then_some(EarlyVerdict {
                reason: SenseReason::InvalidFieldInCdb,
                residual: Residual::Underflow(edtl),
            });
            let limit = info
                .data_out_len
                .map(|s| u32::try_from(s).unwrap_or(u32::MAX));
            let c = Cmd {
                info,
                slot,
                wait: None,
            };
            let begun = self.core.begin_write(
                cmd.itt,
                c,
                cmd,
                immediate,
                verdict,
                limit,
                &self.session.budgets,
                super::buffers::take,
            );
            if let Err((c, e)) = begun {
                drop(c);
                warn!(itt = cmd.itt, "{e}: closing the connection");
                self.core_protocol_error(bhs, e.to_string()).await;
                self.delivered = delivered;
                return;
            }
            self.update_throttle();
        } else {
            self.held.insert(
                cmd.itt,
                Cmd {
                    info,
                    slot,
                    wait: None,
                },
            );
        }
        for d in delivered.drain(..) {
            self.deliver(d).await;
        }
        self.delivered = delivered;
    }

    /// A command of this connection reached CmdSN order.
    async fn deliver(&mut self, d: Delivered) {
        if d.cid != self.conn.cid {
            if let Some(owner) = self.session.connection(d.cid) {
                owner.inbox.push(ConnNews::Delivered(d));
            }
            return;
        }
        let Delivered {
            itt, slot, wait, ..
        } = d;
        if let Some(c) = self.core.payload_mut(itt) {
            c.slot.delivered(slot);
            c.wait = wait;
            self.core.deliver_write(itt, &self.session.budgets);
            self.update_throttle();
            return;
        }
        let Some(mut c) = self.held.remove(&itt) else {
            return;
        };
        c.slot.delivered(slot);
        c.wait = wait;
        let Some(exec) = self.exec.clone() else {
            return;
        };
        match c.wait.take() {
            None => exec.run(c).await,
            Some(rx) => {
                tokio::spawn(async move {
                    let _ = rx.await;
                    if !c.slot.is_aborted() {
                        exec.run(c).await;
                    }
                });
            }
        }
    }

    pub(super) async fn write_ready(&mut self, mut c: Cmd, data: WriteData, exp_data_sn: u32) {
        let Some(exec) = self.exec.clone() else {
            return;
        };
        let data = match data {
            WriteData::Discard(v) => {
                exec.fail(c, v, exp_data_sn).await;
                return;
            }
            WriteData::Data { buf, grant } => WriteBuf { buf, grant },
        };
        match c.wait.take() {
            None => exec.start_write(c, data, exp_data_sn).await,
            Some(rx) => {
                tokio::spawn(async move {
                    let _ = rx.await;
                    if c.slot.is_aborted() {
                        data.release();
                    } else {
                        exec.start_write(c, data, exp_data_sn).await;
                    }
                });
            }
        }
    }

    pub(super) async fn on_news(&mut self) {
        let mut news = std::mem::take(&mut self.news);
        self.conn.inbox.drain_into(&mut news);
        for n in news.drain(..) {
            match n {
                ConnNews::Delivered(d) => self.deliver(d).await,
                ConnNews::Aborted(itt) => {
                    // Its pending data, buffer and budget go at once.
                    drop(self.core.abort_write(itt));
                    self.held.remove(&itt);
                }
            }
        }
        self.news = news;
    }

    pub(super) fn on_budget(&mut self) {
        self.core.retry_grants(&self.session.budgets);
        self.update_throttle();
    }

    /// MaxCmdSN stops advancing while the write budget is spent (RFC 7143
    /// §4.2.2.1 lets the target close its window); when it opens again a
    /// NOP-In tells the initiator.
    fn update_throttle(&mut self) {
        let spent = self.session.budgets.exhausted();
        if spent != self.throttled {
            self.throttled = spent;
            if self.session.window.set_throttled(spent) && !spent {
                self.core.window_update();
            }
        }
    }
}
