//! The per-connection writer: the one place StatSN is assigned and the
//! session's ExpCmdSN/MaxCmdSN are stamped, with PDUs coalesced per write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::proto::pdu::{Bhs, DigestSettings, encode_pdu};
use crate::target::session::CmdWindow;

/// How a PDU's StatSN field is filled (RFC 7143 §4.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatSnMode {
    /// A status-carrying PDU: takes the next StatSN.
    Advance,
    /// Carries the next StatSN without consuming it (R2T, unsolicited NOP-In).
    Current,
    /// The field is reserved (Data-In without status).
    Reserved,
}

#[derive(Debug)]
pub struct OutPdu {
    pub bhs: Bhs,
    pub data: Bytes,
    pub stat_sn: StatSnMode,
}

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
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut flushes = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Outbound::Pdu(mut pdu) => {
                        self.stamp(&mut pdu);
                        let before = buf.len();
                        encode_pdu(&pdu.bhs, &[], &pdu.data, self.digests, &mut buf);
                        self.counters.pdus[usize::from(pdu.bhs.opcode_raw())]
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .bytes
                            .fetch_add((buf.len() - before) as u64, Ordering::Relaxed);
                    }
                    Outbound::Flush(done) => flushes.push(done),
                }
                n += 1;
                if n >= BATCH_PDUS || buf.len() >= BATCH_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !buf.is_empty() {
                sock.write_all(&buf).await?;
                buf.clear();
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        sock.flush().await
    }
}
