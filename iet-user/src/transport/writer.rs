//! The per-connection writer: the one place StatSN is assigned and the
//! session's ExpCmdSN/MaxCmdSN are stamped, with PDUs coalesced per write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use std::io::IoSlice;

use crate::proto::digest;
use crate::proto::pdu::{Bhs, DigestSettings, encode_pdu, padded_len};
use crate::target::session::CmdWindow;

pub use crate::proto::ffp::{OutPdu, StatSnMode};

#[derive(Debug)]
pub enum Outbound {
    Pdu(OutPdu),
    /// Answered once every earlier PDU has been written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// PDUs sent by opcode, for stats and for checking eBPF accounting.
#[derive(Debug)]
pub struct TxCounters {
    pub pdus: [AtomicU64; 64],
    pub bytes: AtomicU64,
}

impl Default for TxCounters {
    fn default() -> Self {
        TxCounters {
            pdus: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes: AtomicU64::new(0),
        }
    }
}

impl TxCounters {
    pub fn count(&self, opcode: u8, bytes: usize) {
        self.pdus[usize::from(opcode & 0x3f)].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn pdus_of(&self, opcode: u8) -> u64 {
        self.pdus[usize::from(opcode & 0x3f)].load(Ordering::Relaxed)
    }
}

/// Sending side of a connection, cheap to clone into command tasks.
#[derive(Debug, Clone)]
pub struct ConnTx {
    tx: mpsc::Sender<Outbound>,
}

impl ConnTx {
    /// Queues a PDU; false when the connection is gone.
    pub async fn send(&self, bhs: Bhs, data: Bytes, stat_sn: StatSnMode) -> bool {
        self.tx
            .send(Outbound::Pdu(OutPdu { bhs, data, stat_sn }))
            .await
            .is_ok()
    }

    /// Queues a PDU, waiting for room; false when the connection is gone.
    pub async fn send_pdu(&self, pdu: OutPdu) -> bool {
        self.tx.send(Outbound::Pdu(pdu)).await.is_ok()
    }

    /// Queues a PDU without waiting (from any thread). Gives it back when
    /// the queue is full; `Err(None)` when the connection is gone.
    pub fn try_send(&self, pdu: OutPdu) -> Result<(), Option<OutPdu>> {
        use mpsc::error::TrySendError;
        match self.tx.try_send(Outbound::Pdu(pdu)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Outbound::Pdu(pdu))) => Err(Some(pdu)),
            Err(_) => Err(None),
        }
    }

    /// Waits until everything queued so far is on the wire.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Outbound::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Most PDUs written with one syscall.
const BATCH_PDUS: usize = 64;
/// Bytes after which a batch is written even if more PDUs wait.
const BATCH_BYTES: usize = 512 * 1024;

pub struct Writer {
    pub digests: DigestSettings,
    pub stat_sn: Arc<AtomicU32>,
    pub window: Arc<CmdWindow>,
    pub counters: Arc<TxCounters>,
}

impl Writer {
    pub fn channel(depth: usize) -> (ConnTx, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(depth);
        (ConnTx { tx }, rx)
    }

    fn stamp(&self, pdu: &mut OutPdu) {
        match pdu.stat_sn {
            StatSnMode::Advance => {
                let sn = self.stat_sn.fetch_add(1, Ordering::AcqRel);
                pdu.bhs.set_u32(24, sn);
            }
            StatSnMode::Current => pdu.bhs.set_u32(24, self.stat_sn.load(Ordering::Acquire)),
            StatSnMode::Reserved => {}
        }
        pdu.bhs.set_u32(28, self.window.exp_cmd_sn());
        pdu.bhs.set_u32(32, self.window.max_cmd_sn());
    }

    /// Runs until every sender is dropped or the socket fails.
    pub async fn run<W: AsyncWrite + Unpin>(
        self,
        mut sock: W,
        mut rx: mpsc::Receiver<Outbound>,
    ) -> std::io::Result<()> {
        let mut batch = Batch::default();
        let mut flushes = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Outbound::Pdu(mut pdu) => {
                        self.stamp(&mut pdu);
                        let bytes = batch.push(&pdu.bhs, pdu.data, self.digests);
                        self.counters.count(pdu.bhs.opcode_raw(), bytes);
                    }
                    Outbound::Flush(done) => flushes.push(done),
                }
                n += 1;
                if n >= BATCH_PDUS || batch.len >= BATCH_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            batch.write_to(&mut sock).await?;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        sock.flush().await
    }
}

/// Data segments at least this long are sent from their own buffer
/// (vectored write) instead of being copied next to their header.
const ZERO_COPY_MIN: usize = 2048;

/// PDUs ready for one vectored write: small pieces copied into `small`,
/// large data segments kept as shared buffers.
#[derive(Default)]
struct Batch {
    small: BytesMut,
    parts: Vec<Part>,
    len: usize,
}

enum Part {
    Small(std::ops::Range<usize>),
    Large(Bytes),
}

impl Batch {
    /// Adds one PDU; returns its length on the wire.
    fn push(&mut self, bhs: &Bhs, data: Bytes, digests: DigestSettings) -> usize {
        let before = self.len;
        if data.len() < ZERO_COPY_MIN {
            let start = self.small.len();
            encode_pdu(bhs, &[], &data, digests, &mut self.small);
            self.add_small(start);
        } else {
            let start = self.small.len();
            let mut bhs = *bhs;
            bhs.set_total_ahs_len(0);
            bhs.set_data_segment_len(data.len());
            self.small.extend_from_slice(&bhs.0);
            if digests.header {
                self.small
                    .extend_from_slice(&digest::to_wire(digest::crc32c_of(&[&bhs.0])));
            }
            self.add_small(start);
            let pad = padded_len(data.len()) - data.len();
            let crc = digests
                .data
                .then(|| digest::crc32c_of(&[&data, &[0u8; 3][..pad]]));
            self.len += data.len();
            self.parts.push(Part::Large(data));
            let start = self.small.len();
            self.small.extend_from_slice(&[0u8; 3][..pad]);
            if let Some(crc) = crc {
                self.small.extend_from_slice(&digest::to_wire(crc));
            }
            self.add_small(start);
        }
        self.len - before
    }

    fn add_small(&mut self, start: usize) {
        let end = self.small.len();
        if end == start {
            return;
        }
        self.len += end - start;
        if let Some(Part::Small(r)) = self.parts.last_mut()
            && r.end == start
        {
            r.end = end;
            return;
        }
        self.parts.push(Part::Small(start..end));
    }

    async fn write_to<W: AsyncWrite + Unpin>(&mut self, sock: &mut W) -> std::io::Result<()> {
        if self.parts.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Small(r) => IoSlice::new(&self.small[r.clone()]),
                Part::Large(b) => IoSlice::new(b),
            })
            .collect();
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            let n = sock.write_vectored(bufs).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, n);
        }
        self.small.clear();
        self.parts.clear();
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pdu::{Opcode, PduDecoder};

    #[test]
    fn try_send_hands_back_on_a_full_queue_and_reports_a_closed_one() {
        let (tx, mut rx) = Writer::channel(1);
        let pdu = |itt| OutPdu {
            bhs: {
                let mut b = Bhs::new(Opcode::ScsiResponse);
                b.set_itt(itt);
                b
            },
            data: Bytes::new(),
            stat_sn: StatSnMode::Advance,
        };
        assert!(tx.try_send(pdu(1)).is_ok());
        match tx.try_send(pdu(2)) {
            Err(Some(back)) => assert_eq!(back.bhs.itt(), 2),
            other => panic!("expected the PDU back, got {other:?}"),
        }
        assert!(matches!(rx.try_recv(), Ok(Outbound::Pdu(p)) if p.bhs.itt() == 1));
        drop(rx);
        assert!(matches!(tx.try_send(pdu(3)), Err(None)));
    }

    #[tokio::test]
    async fn vectored_batches_decode_like_copied_ones() {
        for digests in [
            DigestSettings::default(),
            DigestSettings {
                header: true,
                data: true,
            },
        ] {
            let mut batch = Batch::default();
            let sizes = [0usize, 5, 4096, 1, 10_001];
            for (i, size) in sizes.iter().enumerate() {
                let mut bhs = Bhs::new(Opcode::DataIn);
                bhs.set_itt(i as u32);
                let data: Vec<u8> = (0..*size).map(|b| (b % 253) as u8).collect();
                batch.push(&bhs, Bytes::from(data), digests);
            }
            let mut wire: Vec<u8> = Vec::new();
            batch.write_to(&mut wire).await.unwrap();
            let mut buf = BytesMut::from(&wire[..]);
            let mut dec = PduDecoder {
                max_data_segment_len: 1 << 20,
                digests,
            };
            for (i, size) in sizes.iter().enumerate() {
                let pdu = dec.decode(&mut buf).unwrap().unwrap();
                assert_eq!(pdu.bhs.itt(), i as u32);
                assert_eq!(pdu.data.len(), *size);
                assert!(
                    pdu.data
                        .iter()
                        .enumerate()
                        .all(|(b, v)| *v == (b % 253) as u8)
                );
            }
            assert!(buf.is_empty());
        }
    }
}
