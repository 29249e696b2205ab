//! Write data intake of the connection state machine (RFC 7143 §10.7,
//! §11.7, §11.8): writes admitted by the session collect their data here,
//! get their grants, solicit with R2Ts and are handed over complete.

use bytes::Bytes;

use super::admission::Budgets;
use super::conn::{Connection, Event, data_out_reason};
use super::writes::{EarlyVerdict, PendingWrite};
use super::{OutPdu, StatSnMode};
use crate::proto::pdu::{DataOut, Pdu, R2t, ScsiCommand};
use crate::proto::task::DataOutError;
use crate::scsi::SenseReason;

impl<T> Connection<T> {
    /// A write admitted by the session: its data is collected here. Its
    /// R2Ts wait for `deliver_write` (CmdSN order) and for a grant.
    #[allow(clippy::too_many_arguments, reason = "one call site, all wire fields")]
    pub fn begin_write(
        &mut self,
        itt: u32,
        payload: T,
        cmd: &ScsiCommand,
        immediate: &Bytes,
        verdict: Option<EarlyVerdict>,
        solicit_limit: Option<u32>,
        budgets: &Budgets,
        take_buffer: fn(usize) -> Vec<u8>,
    ) -> Result<(), (T, DataOutError)> {
        let edtl = cmd.expected_data_transfer_length;
        let mut w = PendingWrite::new(
            payload,
            cmd.lun,
            edtl,
            immediate,
            cmd.final_bit,
            &self.cfg.write,
            verdict,
            budgets,
            take_buffer,
        )?;
        if let Some(limit) = solicit_limit {
            // Ask only for what the CDB will use; unsolicited data beyond
            // it is still taken (and ignored).
            w.task.limit_solicitation(limit);
        }
        self.writes.insert(itt, w);
        Ok(())
    }

    /// The write reached SCSI in CmdSN order: solicit its data (or hand it
    /// over if it is all there).
    pub fn deliver_write(&mut self, itt: u32, budgets: &Budgets) {
        let Some(w) = self.writes.get_mut(&itt) else {
            return;
        };
        w.delivered = true;
        // Budget goes to waiting writes first, oldest first.
        if !self.waiting.is_empty() || !self.progress(itt, budgets) {
            self.waiting.push_back(itt);
        }
    }

    /// Grants, R2Ts and completion for one write; false when it waits for
    /// budget.
    fn progress(&mut self, itt: u32, budgets: &Budgets) -> bool {
        let Some(w) = self.writes.get_mut(&itt) else {
            return true;
        };
        if !w.delivered {
            return true;
        }
        if w.is_complete() {
            self.hand_over(itt);
            return true;
        }
        if !w.try_grant(budgets) {
            return false;
        }
        self.emit_r2ts(itt);
        true
    }

    /// Budget came back: writes waiting for it try again, oldest first.
    pub fn retry_grants(&mut self, budgets: &Budgets) {
        while let Some(&itt) = self.waiting.front() {
            if !self.progress(itt, budgets) {
                break;
            }
            self.waiting.pop_front();
        }
    }

    /// Writes waiting for budget.
    pub fn waiting_for_budget(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn on_data_out(&mut self, pdu: &Pdu) {
        let hdr = DataOut::load(&pdu.bhs);
        let Some(w) = self.writes.get_mut(&hdr.itt) else {
            // The task may have been aborted: its data is dropped silently.
            return;
        };
        if let Err(e) = w.on_data_out(&hdr, &pdu.data) {
            self.fail_write(hdr.itt, data_out_reason(e));
            return;
        }
        // All data in: it goes on once delivered in CmdSN order.
        if w.is_complete() && w.delivered {
            self.hand_over(hdr.itt);
        } else if hdr.final_bit && w.delivered {
            self.emit_r2ts(hdr.itt);
        }
    }

    fn hand_over(&mut self, itt: u32) {
        if let Some(w) = self.writes.remove(&itt) {
            let (payload, data, exp_data_sn) = w.into_data();
            self.events.push_back(Event::WriteReady {
                payload,
                data,
                exp_data_sn,
            });
        }
    }

    /// The R2Ts a granted, delivered write is ready for.
    fn emit_r2ts(&mut self, itt: u32) {
        let Some(w) = self.writes.get_mut(&itt) else {
            return;
        };
        let lun = w.lun;
        let next_ttt = &mut self.next_ttt;
        let events = &mut self.events;
        w.r2ts(
            || Self::alloc_ttt(next_ttt),
            |r| {
                let pdu = R2t {
                    lun,
                    itt,
                    ttt: r.ttt,
                    r2t_sn: r.r2t_sn,
                    buffer_offset: r.buffer_offset,
                    desired_data_transfer_length: r.desired_data_transfer_length,
                    ..R2t::default()
                };
                events.push_back(Event::Send(OutPdu {
                    bhs: pdu.encode(),
                    data: Bytes::new(),
                    stat_sn: StatSnMode::Current,
                }));
            },
        );
    }

    /// Ends a write whose data went wrong (the connection stays up; the
    /// rest of its data is dropped).
    pub(super) fn fail_write(&mut self, itt: u32, reason: SenseReason) {
        if let Some(w) = self.writes.remove(&itt) {
            self.waiting.retain(|i| *i != itt);
            let exp_data_sn = w.task.r2t_sn();
            self.events.push_back(Event::WriteFailed {
                payload: w.payload,
                reason,
                exp_data_sn,
            });
        }
    }

    /// A task ended elsewhere (aborted): its pending write goes at once,
    /// with its buffer and grant; the caller drops the payload.
    pub fn abort_write(&mut self, itt: u32) -> Option<T> {
        self.waiting.retain(|i| *i != itt);
        self.writes.remove(&itt).map(|w| w.payload)
    }

    /// Every pending write, for the end of the connection.
    pub fn drain_writes(&mut self) -> Vec<T> {
        self.waiting.clear();
        self.writes.drain().map(|(_, w)| w.payload).collect()
    }

    /// The caller's state of a pending write.
    pub fn payload_mut(&mut self, itt: u32) -> Option<&mut T> {
        self.writes.get_mut(&itt).map(|w| &mut w.payload)
    }

    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }
}
