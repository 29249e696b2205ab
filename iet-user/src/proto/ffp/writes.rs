//! Write data of the commands one connection is collecting: a Data-Out
//! sequence checker (`WriteTask`), the sink the data goes to, and its grant.
//!
//! A buffer grows with the data that is granted or has arrived, never with
//! the Expected Data Transfer Length an initiator announces.

use bytes::Bytes;

use super::admission::{Budgets, Grant};
use crate::proto::pdu::{DataOut, Residual};
use crate::proto::task::{DataOutError, R2tRequest, WriteParams, WriteTask};
use crate::scsi::SenseReason;

/// A command answered without running it, once its data has been taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyVerdict {
    pub reason: SenseReason,
    pub residual: Residual,
}

/// Where a write's data goes.
#[derive(Debug)]
pub enum Sink {
    /// Kept for the SCSI layer; `grant` covers the buffer's capacity.
    Collect { buf: Vec<u8>, grant: Option<Grant> },
    /// Taken and dropped: the command fails anyway.
    Discard(EarlyVerdict),
}

/// The data of a write whose transfer is over.
#[derive(Debug)]
pub enum WriteData {
    Data { buf: Vec<u8>, grant: Option<Grant> },
    Discard(EarlyVerdict),
}

/// One write waiting for its data; `T` is the caller's command state.
#[derive(Debug)]
pub struct PendingWrite<T> {
    pub payload: T,
    pub task: WriteTask,
    pub sink: Sink,
    /// The command's LUN field, echoed in R2Ts.
    pub lun: u64,
    /// Bytes the buffer may hold in the end (0 when discarding).
    pub edtl: u32,
    /// Delivered to SCSI in CmdSN order: R2Ts may go out.
    pub delivered: bool,
    /// Where buffers come from (the transport's pool): the one for the
    /// whole write is taken when its grant is.
    take_buffer: fn(usize) -> Vec<u8>,
}

impl<T> PendingWrite<T> {
    /// A write whose command PDU carried `immediate` bytes. Unsolicited
    /// data (immediate, and Data-Out up to FirstBurstLength) is charged at
    /// once: it comes whether we like it or not.
    #[allow(clippy::too_many_arguments, reason = "the command's fields, once")]
    pub fn new(
        payload: T,
        lun: u64,
        edtl: u32,
        immediate: &Bytes,
        command_final: bool,
        params: &WriteParams,
        verdict: Option<EarlyVerdict>,
        budgets: &Budgets,
        take_buffer: fn(usize) -> Vec<u8>,
    ) -> Result<PendingWrite<T>, (T, DataOutError)> {
        let mut task = match WriteTask::new(edtl, immediate.len() as u32, command_final, params) {
            Ok(t) => t,
            Err(e) => return Err((payload, e)),
        };
        let sink = if let Some(v) = verdict {
            task.limit_solicitation(0);
            Sink::Discard(v)
        } else {
            let unsolicited = if command_final {
                immediate.len() as u32
            } else {
                edtl.min(params.first_burst_length)
            };
            let grant = (unsolicited > 0).then(|| budgets.charge(u64::from(unsolicited)));
            let mut buf = take_buffer(unsolicited as usize);
            buf.extend_from_slice(immediate);
            Sink::Collect { buf, grant }
        };
        Ok(PendingWrite {
            payload,
            task,
            sink,
            lun,
            edtl,
            delivered: false,
            take_buffer,
        })
    }

    /// Whether R2Ts are wanted and the buffer lacks a grant for them.
    pub fn needs_grant(&self) -> Option<u64> {
        match &self.sink {
            Sink::Collect { buf: _, grant } if !self.task.is_complete() => {
                let have = grant.as_ref().map_or(0, Grant::bytes);
                let want = u64::from(self.edtl);
                (have < want).then(|| want - have)
            }
            _ => None,
        }
    }

    /// Tries to get the rest of the buffer granted; false when it must wait.
    pub fn try_grant(&mut self, budgets: &Budgets) -> bool {
        let Some(more) = self.needs_grant() else {
            return true;
        };
        let Some(g) = budgets.try_grant(more) else {
            return false;
        };
        if let Sink::Collect { buf, grant } = &mut self.sink {
            // A buffer for the whole write from the pool, not a reallocation
            // of the unsolicited one (for 1 MiB: a fresh mapping faulted in
            // per write, and a copy); the unsolicited bytes move over.
            if buf.capacity() < self.edtl as usize {
                let mut whole = (self.take_buffer)(self.edtl as usize);
                whole.extend_from_slice(buf);
                *buf = whole;
            }
            match grant {
                Some(have) => have.merge(g),
                None => *grant = Some(g),
            }
        }
        true
    }

    /// Issues the R2Ts the write is ready for (after its grant).
    pub fn r2ts(&mut self, next_ttt: impl FnMut() -> u32, emit: impl FnMut(R2tRequest)) {
        if self.delivered && self.needs_grant().is_none() {
            self.task.next_r2ts(next_ttt, emit);
        }
    }

    /// Takes one Data-Out PDU's data.
    pub fn on_data_out(&mut self, hdr: &DataOut, data: &[u8]) -> Result<(), DataOutError> {
        let offset = self.task.on_data_out(hdr, data.len() as u32)? as usize;
        if let Sink::Collect { buf, .. } = &mut self.sink {
            // on_data_out bounded offset + len by the expected length.
            if offset == buf.len() {
                buf.extend_from_slice(data);
            } else {
                if buf.len() < offset + data.len() {
                    buf.resize(offset + data.len(), 0);
                }
                buf[offset..offset + data.len()].copy_from_slice(data);
            }
        }
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.task.is_complete()
    }

    /// The data for the SCSI layer: the whole expected length (a command
    /// that needs an exact length judges a mismatch itself).
    pub fn into_data(self) -> (T, WriteData, u32) {
        let exp_data_sn = self.task.r2t_sn();
        let data = match self.sink {
            Sink::Collect { mut buf, grant } => {
                buf.resize(self.edtl as usize, 0);
                WriteData::Data { buf, grant }
            }
            Sink::Discard(v) => WriteData::Discard(v),
        };
        (self.payload, data, exp_data_sn)
    }
}
