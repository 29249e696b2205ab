//! Write data collection for one SCSI command (RFC 7143 §4.2.5, §11.7,
//! §11.8): immediate data, unsolicited Data-Out up to FirstBurstLength, then
//! R2Ts of at most MaxBurstLength with at most MaxOutstandingR2T in flight.
//! Data PDUs and sequences are in order (DataPDUInOrder and
//! DataSequenceInOrder are always negotiated to Yes by the target).

use super::pdu::{DataOut, RESERVED_TAG};

/// The session's write-related operational parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteParams {
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub max_outstanding_r2t: u32,
}

/// Why a Data-Out could not be accepted. Every variant is a protocol error
/// at ErrorRecoveryLevel 0: Reject, then drop the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataOutError {
    #[error("Data-Out with unknown TTT {0:#x}")]
    UnknownTtt(u32),
    #[error("unsolicited Data-Out not allowed")]
    UnsolicitedNotAllowed,
    #[error("DataSN {got}, expected {expected}")]
    DataSn { got: u32, expected: u32 },
    #[error("buffer offset {got}, expected {expected}")]
    BufferOffset { got: u32, expected: u32 },
    #[error("data overruns the burst or the expected transfer length")]
    Overrun,
}

/// A solicitation to send, ready for an R2T PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tRequest {
    pub ttt: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
}

/// One in-order data sequence: unsolicited, or the answer to one R2T.
#[derive(Debug, Clone, Copy)]
struct Sequence {
    ttt: u32,
    next_offset: u32,
    end: u32,
    next_data_sn: u32,
}

#[derive(Debug, Clone)]
pub struct WriteTask {
    expected_len: u32,
    /// R2Ts solicit data up to here; less than `expected_len` when the
    /// command will not use all of it.
    solicit_end: u32,
    received: u32,
    unsolicited: Option<Sequence>,
    outstanding: Vec<Sequence>,
    next_r2t_offset: u32,
    r2t_sn: u32,
    max_burst: u32,
    max_outstanding: usize,
}

impl WriteTask {
    /// `immediate_len` bytes came with the command; `command_final` is the
    /// command's F bit (0 means unsolicited Data-Out follows).
    pub fn new(
        expected_len: u32,
        immediate_len: u32,
        command_final: bool,
        params: &WriteParams,
    ) -> Result<WriteTask, DataOutError> {
        let unsolicited_limit = expected_len.min(params.first_burst_length);
        if immediate_len > unsolicited_limit {
            return Err(DataOutError::Overrun);
        }
        let unsolicited = if command_final {
            None
        } else {
            if params.initial_r2t {
                return Err(DataOutError::UnsolicitedNotAllowed);
            }
            Some(Sequence {
                ttt: RESERVED_TAG,
                next_offset: immediate_len,
                end: unsolicited_limit,
                next_data_sn: 0,
            })
        };
        Ok(WriteTask {
            expected_len,
            solicit_end: expected_len,
            received: immediate_len,
            unsolicited,
            outstanding: Vec::new(),
            next_r2t_offset: immediate_len,
            r2t_sn: 0,
            max_burst: params.max_burst_length.max(512),
            max_outstanding: params.max_outstanding_r2t.max(1) as usize,
        })
    }

    pub fn expected_len(&self) -> u32 {
        self.expected_len
    }

    pub fn received(&self) -> u32 {
        self.received
    }

    /// All data is in.
    pub fn is_complete(&self) -> bool {
        self.unsolicited.is_none()
            && self.outstanding.is_empty()
            && self.received.max(self.next_r2t_offset) >= self.solicit_end
    }

    /// Solicits no data beyond `end` (unsolicited data is still taken).
    pub fn limit_solicitation(&mut self, end: u32) {
        self.solicit_end = end.min(self.expected_len);
    }

    /// Validates one Data-Out of `len` bytes and returns the buffer offset
    /// its data goes to.
    pub fn on_data_out(&mut self, hdr: &DataOut, len: u32) -> Result<u32, DataOutError> {
        let (seq, is_unsolicited) = if hdr.ttt == RESERVED_TAG {
            (
                self.unsolicited
                    .as_mut()
                    .ok_or(DataOutError::UnsolicitedNotAllowed)?,
                true,
            )
        } else {
            let seq = self
                .outstanding
                .iter_mut()
                .find(|s| s.ttt == hdr.ttt)
                .ok_or(DataOutError::UnknownTtt(hdr.ttt))?;
            (seq, false)
        };
        if hdr.data_sn != seq.next_data_sn {
            return Err(DataOutError::DataSn {
                got: hdr.data_sn,
                expected: seq.next_data_sn,
            });
        }
        if hdr.buffer_offset != seq.next_offset {
            return Err(DataOutError::BufferOffset {
                got: hdr.buffer_offset,
                expected: seq.next_offset,
            });
        }
        let end = seq
            .next_offset
            .checked_add(len)
            .ok_or(DataOutError::Overrun)?;
        if end > seq.end {
            return Err(DataOutError::Overrun);
        }
        let offset = seq.next_offset;
        seq.next_offset = end;
        seq.next_data_sn = seq.next_data_sn.wrapping_add(1);
        let done = hdr.final_bit;
        let ttt = seq.ttt;
        let short = done && end != seq.end;
        self.received += len;
        if done {
            if is_unsolicited {
                self.unsolicited = None;
                // A short unsolicited burst: R2Ts start where it stopped.
                self.next_r2t_offset = self.next_r2t_offset.max(end);
            } else {
                if short {
                    return Err(DataOutError::Overrun);
                }
                self.outstanding.retain(|s| s.ttt != ttt);
            }
        }
        Ok(offset)
    }

    /// Issues R2Ts for the data still missing, up to MaxOutstandingR2T.
    /// `next_ttt` hands out Target Transfer Tags.
    pub fn next_r2ts(
        &mut self,
        mut next_ttt: impl FnMut() -> u32,
        mut emit: impl FnMut(R2tRequest),
    ) {
        if self.unsolicited.is_some() {
            return;
        }
        if self.next_r2t_offset < self.received {
            self.next_r2t_offset = self.received;
        }
        while self.outstanding.len() < self.max_outstanding
            && self.next_r2t_offset < self.solicit_end
        {
            let len = self.max_burst.min(self.solicit_end - self.next_r2t_offset);
            let ttt = next_ttt();
            let req = R2tRequest {
                ttt,
                r2t_sn: self.r2t_sn,
                buffer_offset: self.next_r2t_offset,
                desired_data_transfer_length: len,
            };
            self.outstanding.push(Sequence {
                ttt,
                next_offset: self.next_r2t_offset,
                end: self.next_r2t_offset + len,
                next_data_sn: 0,
            });
            self.r2t_sn = self.r2t_sn.wrapping_add(1);
            self.next_r2t_offset += len;
            emit(req);
        }
    }

    /// The next R2TSN (for the ExpDataSN of the response).
    pub fn r2t_sn(&self) -> u32 {
        self.r2t_sn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: WriteParams = WriteParams {
        initial_r2t: false,
        immediate_data: true,
        first_burst_length: 8192,
        max_burst_length: 16384,
        max_outstanding_r2t: 2,
    };

    fn data_out(ttt: u32, data_sn: u32, offset: u32, final_bit: bool) -> DataOut {
        DataOut {
            final_bit,
            ttt,
            data_sn,
            buffer_offset: offset,
            ..DataOut::default()
        }
    }

    fn r2ts(task: &mut WriteTask, ttt: &mut u32) -> Vec<R2tRequest> {
        let mut out = Vec::new();
        task.next_r2ts(
            || {
                *ttt += 1;
                *ttt
            },
            |r| out.push(r),
        );
        out
    }

    #[test]
    fn immediate_unsolicited_then_r2ts() {
        let mut task = WriteTask::new(50_000, 4096, false, &PARAMS).unwrap();
        let mut ttt = 0;
        assert!(
            r2ts(&mut task, &mut ttt).is_empty(),
            "no R2T while unsolicited data flows"
        );
        assert_eq!(
            task.on_data_out(&data_out(RESERVED_TAG, 0, 4096, true), 4096),
            Ok(4096)
        );
        let first = r2ts(&mut task, &mut ttt);
        assert_eq!(
            first
                .iter()
                .map(|r| (r.r2t_sn, r.buffer_offset, r.desired_data_transfer_length))
                .collect::<Vec<_>>(),
            vec![(0, 8192, 16384), (1, 24576, 16384)]
        );
        assert_eq!(
            task.on_data_out(&data_out(first[0].ttt, 0, 8192, false), 8192),
            Ok(8192)
        );
        assert_eq!(
            task.on_data_out(&data_out(first[0].ttt, 1, 16384, true), 8192),
            Ok(16384)
        );
        let next = r2ts(&mut task, &mut ttt);
        assert_eq!(next.len(), 1);
        assert_eq!(
            (next[0].buffer_offset, next[0].desired_data_transfer_length),
            (40960, 9040)
        );
        task.on_data_out(&data_out(first[1].ttt, 0, 24576, true), 16384)
            .unwrap();
        task.on_data_out(&data_out(next[0].ttt, 0, 40960, true), 9040)
            .unwrap();
        assert!(task.is_complete());
        assert_eq!(task.received(), 50_000);
    }

    #[test]
    fn limited_solicitation_completes_without_r2t() {
        let params = WriteParams {
            initial_r2t: true,
            ..PARAMS
        };
        let mut task = WriteTask::new(4096, 0, true, &params).unwrap();
        task.limit_solicitation(0);
        let mut ttt = 0;
        assert!(r2ts(&mut task, &mut ttt).is_empty());
        assert!(task.is_complete());
    }

    #[test]
    fn wrong_data_sn_is_refused() {
        let params = WriteParams {
            initial_r2t: true,
            ..PARAMS
        };
        let mut task = WriteTask::new(1024, 0, true, &params).unwrap();
        let mut ttt = 0;
        let r = r2ts(&mut task, &mut ttt)[0];
        assert_eq!(
            task.on_data_out(&data_out(r.ttt, 1, 0, false), 512),
            Err(DataOutError::DataSn {
                got: 1,
                expected: 0
            })
        );
    }

    #[test]
    fn overrun_and_unknown_ttt_are_refused() {
        let mut task = WriteTask::new(1024, 0, false, &PARAMS).unwrap();
        assert_eq!(
            task.on_data_out(&data_out(RESERVED_TAG, 0, 0, true), 2048),
            Err(DataOutError::Overrun)
        );
        assert_eq!(
            task.on_data_out(&data_out(77, 0, 0, true), 512),
            Err(DataOutError::UnknownTtt(77))
        );
    }

    #[test]
    fn unsolicited_refused_when_initial_r2t() {
        let params = WriteParams {
            initial_r2t: true,
            ..PARAMS
        };
        assert_eq!(
            WriteTask::new(1024, 0, false, &params).unwrap_err(),
            DataOutError::UnsolicitedNotAllowed
        );
    }
}
