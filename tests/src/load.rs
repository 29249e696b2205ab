//! A pipelined load generator over the scripted initiator: keeps `qd`
//! commands in flight on each session and records per-command latency.
//! Works against any RFC 7143 target (ietd, tgt).

#![allow(
    clippy::cast_precision_loss,
    reason = "rates and percentiles for humans"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iet::proto::pdu::Opcode;

use crate::initiator::{Conn, LoginOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    RandRead,
    RandWrite,
    /// 70 % reads, 30 % writes, random offsets.
    Mix70,
    SeqRead,
    SeqWrite,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub portal: SocketAddr,
    pub target: String,
    pub lun: u64,
    pub pattern: Pattern,
    pub block_size: u32,
    /// Bytes per command.
    pub io_size: u32,
    pub qd: usize,
    pub sessions: usize,
    pub duration: Duration,
    /// LBAs the workload touches, from 0.
    pub span_blocks: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadResult {
    pub ops: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub iops: f64,
    pub mib_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct InFlight {
    started: Instant,
    write: bool,
}

fn one_session(w: &Workload, index: usize) -> std::io::Result<(Vec<u32>, u64, u64)> {
    let mut c = Conn::connect(w.portal)?;
    let mut opts = LoginOptions::normal(&w.target);
    opts.isid = [0x80, 0x4c, 0x4f, 0x41, 0x44, index as u8];
    c.login(&opts)
        .map_err(|e| std::io::Error::other(format!("login: {e:?}")))?;
    c.clear_unit_attention(w.lun)?;
    let blocks = u64::from(w.io_size / w.block_size).max(1);
    let slots = (w.span_blocks / blocks).max(1);
    let payload = vec![0xa5u8; w.io_size as usize];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut seq = (index as u64 * slots / w.sessions.max(1) as u64) % slots;
    let mut in_flight: HashMap<u32, InFlight> = HashMap::new();
    let mut latencies = Vec::with_capacity(1 << 16);
    let (mut bytes, mut errors) = (0u64, 0u64);
    let deadline = Instant::now() + w.duration;
    loop {
        let now = Instant::now();
        while now < deadline && in_flight.len() < w.qd && crate::initiator_window_open(&c) {
            let (write, slot) = match w.pattern {
                Pattern::RandRead => (false, rng.next() % slots),
                Pattern::RandWrite => (true, rng.next() % slots),
                Pattern::Mix70 => (rng.next() % 10 >= 7, rng.next() % slots),
                Pattern::SeqRead | Pattern::SeqWrite => {
                    seq = (seq + 1) % slots;
                    (w.pattern == Pattern::SeqWrite, seq)
                }
            };
            let lba = slot * blocks;
            let mut cdb = [0u8; 16];
            cdb[0] = if write { 0x8a } else { 0x88 };
            cdb[2..10].copy_from_slice(&lba.to_be_bytes());
            cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
            let mut bhs = c.command_bhs(w.lun, &cdb, !write, write, w.io_size);
            let imm = if write && c.immediate_data {
                payload.len().min(c.first_burst).min(c.target_mrdsl)
            } else {
                0
            };
            if write && !c.initial_r2t && imm < payload.len().min(c.first_burst) {
                bhs.set_final(false);
            }
            c.send(&bhs, &payload[..imm])?;
            if write && !c.initial_r2t {
                let end = payload.len().min(c.first_burst);
                let (mut off, mut sn) = (imm, 0);
                while off < end {
                    let len = (end - off).min(c.target_mrdsl);
                    c.send_data_out(
                        w.lun,
                        bhs.itt(),
                        0xffff_ffff,
                        sn,
                        off as u32,
                        off + len == end,
                        &payload[off..off + len],
                    )?;
                    off += len;
                    sn += 1;
                }
            }
            in_flight.insert(
                bhs.itt(),
                InFlight {
                    started: Instant::now(),
                    write,
                },
            );
        }
        if in_flight.is_empty() {
            break;
        }
        let pdu = c.recv()?;
        c.track(&pdu.bhs);
        let itt = pdu.bhs.itt();
        let done = match pdu.bhs.opcode() {
            Some(Opcode::DataIn) => pdu.bhs.0[1] & 0x01 != 0,
            Some(Opcode::ScsiResponse) => true,
            Some(Opcode::R2t) => {
                let (ttt, offset, want) = (
                    pdu.bhs.u32_at(20),
                    pdu.bhs.u32_at(40) as usize,
                    pdu.bhs.u32_at(44) as usize,
                );
                let (mut sent, mut sn) = (0, 0);
                while sent < want {
                    let len = (want - sent).min(c.target_mrdsl);
                    let start = offset + sent;
                    c.send_data_out(
                        w.lun,
                        itt,
                        ttt,
                        sn,
                        start as u32,
                        sent + len == want,
                        &payload[start..start + len],
                    )?;
                    sent += len;
                    sn += 1;
                }
                false
            }
            _ => false,
        };
        if done && let Some(f) = in_flight.remove(&itt) {
            let status = pdu.bhs.0[3];
            if status != 0 {
                errors += 1;
            }
            latencies.push(u32::try_from(f.started.elapsed().as_micros()).unwrap_or(u32::MAX));
            bytes += u64::from(w.io_size);
            let _ = f.write;
        }
    }
    let _ = c.logout();
    Ok((latencies, bytes, errors))
}

/// Runs the workload on `sessions` threads and merges their results.
pub fn run(w: &Workload) -> std::io::Result<LoadResult> {
    let started = Instant::now();
    let handles: Vec<_> = (0..w.sessions.max(1))
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || one_session(&w, i))
        })
        .collect();
    let mut all = Vec::new();
    let (mut bytes, mut errors) = (0, 0);
    for h in handles {
        let (l, b, e) = h
            .join()
            .map_err(|_| std::io::Error::other("load thread panicked"))??;
        all.extend(l);
        bytes += b;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |per_mille: usize| -> u64 {
        if all.is_empty() {
            return 0;
        }
        // Nearest rank: an index in 0..len.
        let i = (all.len() - 1) * per_mille / 1000;
        u64::from(all[i.min(all.len() - 1)])
    };
    let ops = all.len() as u64;
    Ok(LoadResult {
        ops,
        bytes,
        seconds,
        iops: ops as f64 / seconds,
        mib_per_s: bytes as f64 / seconds / f64::from(1u32 << 20),
        p50_us: pct(500),
        p99_us: pct(990),
        p999_us: pct(999),
        errors,
    })
}
