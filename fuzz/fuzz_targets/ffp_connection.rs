//! The full-feature connection core (`proto::ffp::conn::Connection`)
//! driven the way transport drives it, by arbitrary input: PDUs, codec
//! errors, timeouts at arbitrary offsets, write admission and delivery,
//! grant retries with a small budget, aborts. It never panics; every PDU it
//! asks to send encodes and decodes back to the same header; once every
//! write is drained and every event dropped, the budgets are whole again.
#![no_main]

use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iet::proto::ffp::admission::{Budget, Budgets};
use iet::proto::ffp::conn::{CmdSnCheck, Config, Connection, Event};
use iet::proto::ffp::writes::{EarlyVerdict, WriteData};
use iet::proto::pdu::{
    BHS_LEN, Bhs, CodecError, DigestSettings, Pdu, PduDecoder, Residual, encode_pdu,
};
use iet::proto::task::WriteParams;
use iet::scsi::SenseReason;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Transport refuses (INVALID FIELD IN CDB, data dropped) writes larger
/// than it buffers; the fuzz build uses a smaller bound to stay fast.
const MAX_WRITE_BUFFER: u32 = 1 << 20;

/// A CmdSN window of 8 that advances on in-order CmdSNs.
struct Window {
    exp: Cell<u32>,
}

impl CmdSnCheck for Window {
    fn accept(&self, cmd_sn: u32, immediate: bool) -> bool {
        if immediate {
            return true;
        }
        let exp = self.exp.get();
        let ok = iet::proto::seq::in_window(cmd_sn, exp, exp.wrapping_add(7));
        if ok && cmd_sn == exp {
            self.exp.set(exp.wrapping_add(1));
        }
        ok
    }

    fn exp_cmd_sn(&self) -> u32 {
        self.exp.get()
    }
}

/// Values in the ranges login negotiation allows (RFC 7143 §13).
fn write_params(u: &mut Unstructured<'_>) -> Result<WriteParams> {
    let max_burst_length = u.int_in_range(512..=(1 << 20))?;
    Ok(WriteParams {
        initial_r2t: u.arbitrary()?,
        immediate_data: u.arbitrary()?,
        first_burst_length: u.int_in_range(512..=max_burst_length)?,
        max_burst_length,
        max_outstanding_r2t: u.int_in_range(1..=4)?,
    })
}

fn config(u: &mut Unstructured<'_>) -> Result<Config> {
    let secs = |u: &mut Unstructured<'_>| -> Result<Duration> {
        Ok(Duration::from_millis(u.int_in_range(0..=600_000)?))
    };
    Ok(Config {
        nop_interval: if u.arbitrary()? { Some(secs(u)?) } else { None },
        nop_timeout: secs(u)?,
        logout_grace: secs(u)?,
        write: write_params(u)?,
        discovery: u.ratio(1, 16)?,
    })
}

/// A PDU: mostly SCSI commands, Data-Out and NOP-Out with plausible
/// fields, sometimes any 48 bytes.
fn pdu(u: &mut Unstructured<'_>, itts: &[u32]) -> Result<Pdu> {
    let mut raw = [0u8; BHS_LEN];
    u.fill_buffer(&mut raw)?;
    let kind: u8 = u.int_in_range(0..=5)?;
    match kind {
        // SCSI Command: WRITE(10) with an ITT from a small set.
        0 | 1 => {
            raw[0] = (raw[0] & 0x40) | 0x01;
            raw[1] = (raw[1] & 0x87) | 0x20;
            raw[16..20].copy_from_slice(&u.choose(itts)?.to_be_bytes());
            let edtl: u32 = if u.ratio(1, 8)? {
                u.arbitrary()?
            } else {
                u.int_in_range(0..=(256 * 1024))?
            };
            raw[20..24].copy_from_slice(&edtl.to_be_bytes());
            raw[32] = if kind == 0 { 0x2a } else { raw[32] };
        }
        // Data-Out for one of those ITTs.
        2 => {
            raw[0] = 0x05;
            raw[16..20].copy_from_slice(&u.choose(itts)?.to_be_bytes());
            let offset: u32 = u.int_in_range(0..=(256 * 1024))?;
            raw[40..44].copy_from_slice(&offset.to_be_bytes());
        }
        // NOP-Out (a ping answer now and then).
        3 => raw[0] = (raw[0] & 0x40) | 0x00,
        _ => {}
    }
    let len = if u.ratio(1, 4)? {
        u.int_in_range(0..=16384)?
    } else {
        u.int_in_range(0..=512)?
    };
    let data = u.bytes(len.min(u.len()))?;
    Ok(Pdu {
        bhs: Bhs(raw),
        ahs: Bytes::new(),
        data: Bytes::copy_from_slice(data),
    })
}

/// Every PDU the core sends encodes, and decodes back to the same header
/// and data (DataSegmentLength is set by the encoder).
fn check_send(bhs: &Bhs, data: &Bytes, digests: DigestSettings) {
    let mut out = BytesMut::new();
    encode_pdu(bhs, &[], data, digests, &mut out);
    let mut dec = PduDecoder {
        max_data_segment_len: 1 << 24,
        digests,
    };
    let back = dec
        .decode(&mut out)
        .expect("our own PDU decodes")
        .expect("our own PDU is whole");
    assert!(out.is_empty(), "one PDU, nothing left over");
    assert_eq!(back.data, *data);
    assert_eq!(back.bhs.opcode_raw(), bhs.opcode_raw());
    assert_eq!(back.bhs.0[1..4], bhs.0[1..4]);
    assert_eq!(back.bhs.0[8..], bhs.0[8..]);
}

fn run(u: &mut Unstructured<'_>, budgets: &Budgets) -> Result<()> {
    let start = Instant::now();
    let cfg = config(u)?;
    let digests = DigestSettings {
        header: u.arbitrary()?,
        data: u.arbitrary()?,
    };
    let itts = [0u32, 1, 2, 3, 0xffff_ffff];
    let window = Window {
        exp: Cell::new(u.arbitrary()?),
    };
    let mut conn = Connection::<u32>::new(cfg, start);
    let mut now = start;
    // Completed writes' data (and grants) the SCSI layer still holds.
    let mut held: Vec<WriteData> = Vec::new();
    let mut next_payload = 0u32;
    for _ in 0..u.int_in_range(1..=96)? {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0..=11)? {
            0..=4 => conn.handle_pdu(now, pdu(u, &itts)?, &window),
            5 => {
                let mut raw = [0u8; BHS_LEN];
                u.fill_buffer(&mut raw)?;
                let bhs = Bhs(raw);
                let err = match u.int_in_range(0..=2)? {
                    0 => CodecError::HeaderDigest,
                    1 => CodecError::DataDigest { bhs },
                    _ => CodecError::DataSegmentTooLong {
                        bhs,
                        len: bhs.data_segment_len(),
                        max: 8192,
                    },
                };
                conn.handle_codec_error(&err);
            }
            6 => {
                // Time moves on by up to a day; a timer may also be
                // fired late or early relative to the last PDU.
                let step = Duration::from_millis(u.int_in_range(0..=86_400_000)?);
                if u.arbitrary()? {
                    now += step;
                    conn.handle_timeout(now);
                } else {
                    conn.handle_timeout(now + step);
                }
                let _ = conn.poll_timeout();
            }
            7 => conn.request_logout(now),
            8 => conn.window_update(),
            9 => {
                let itt = *u.choose(&itts)?;
                conn.deliver_write(itt, budgets);
            }
            10 => {
                // The SCSI layer finishes some writes: their grants return.
                let n = u.int_in_range(0..=held.len())?;
                held.drain(..n);
                conn.retry_grants(budgets);
            }
            _ => {
                let itt = *u.choose(&itts)?;
                let _ = conn.abort_write(itt);
            }
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Send(p) => check_send(&p.bhs, &p.data, digests),
                Event::Command { cmd, immediate, .. } if cmd.write => {
                    let edtl = cmd.expected_data_transfer_length;
                    let verdict = (edtl > MAX_WRITE_BUFFER).then_some(EarlyVerdict {
                        reason: SenseReason::InvalidFieldInCdb,
                        residual: Residual::Underflow(edtl),
                    });
                    let limit = u.arbitrary::<Option<u32>>()?;
                    next_payload += 1;
                    let begun = conn.begin_write(
                        cmd.itt,
                        next_payload,
                        &cmd,
                        &immediate,
                        verdict,
                        limit,
                        budgets,
                        Vec::with_capacity,
                    );
                    if begun.is_err() {
                        // Transport closes the connection.
                        return Ok(());
                    }
                    if u.arbitrary()? {
                        conn.deliver_write(cmd.itt, budgets);
                    }
                }
                Event::WriteReady { data, .. } => held.push(data),
                Event::Close(_) => return Ok(()),
                _ => {}
            }
        }
    }
    drop(conn.drain_writes());
    assert_eq!(conn.pending_writes(), 0);
    assert_eq!(conn.waiting_for_budget(), 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let limit = u.int_in_range(1..=(512 * 1024)).unwrap_or(1);
    let budgets = Budgets {
        session: Budget::new(limit, None),
        daemon: Budget::new(limit.saturating_mul(2), None),
    };
    let _ = run(&mut u, &budgets);
    // The connection, its pending writes, its events and the completed
    // writes' data are gone: every byte went back.
    assert_eq!(budgets.session.used(), 0, "session budget leaked");
    assert_eq!(budgets.daemon.used(), 0, "daemon budget leaked");
});
