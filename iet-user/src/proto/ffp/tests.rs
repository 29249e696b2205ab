//! The full-feature core driven without sockets or a clock: byte fixtures
//! in, events out, time passed as `now`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::admission::{Budget, Budgets};
use super::conn::{CmdSnCheck, Config, Connection, Event};
use super::tmf::{Reset, TaskView, TmfContext, plan};
use super::writes::WriteData;
use super::{CloseReason, StatSnMode};
use crate::proto::pdu::{
    BHS_LEN, Bhs, CodecError, DataOut, Opcode, Pdu, RESERVED_TAG, RejectReason, ScsiCommand,
    TaskMgmtRequest, TmfFunction, TmfResponse,
};
use crate::proto::task::WriteParams;
use crate::scsi::SenseReason;

/// A window that accepts CmdSNs from `exp` up to `exp + 7`.
struct Window {
    exp: Cell<u32>,
}

impl CmdSnCheck for Window {
    fn accept(&self, cmd_sn: u32, immediate: bool) -> bool {
        if immediate {
            return true;
        }
        let ok = crate::proto::seq::in_window(cmd_sn, self.exp.get(), self.exp.get() + 7);
        if ok && cmd_sn == self.exp.get() {
            self.exp.set(cmd_sn + 1);
        }
        ok
    }

    fn exp_cmd_sn(&self) -> u32 {
        self.exp.get()
    }
}

fn window() -> Window {
    Window { exp: Cell::new(1) }
}

const WRITE: WriteParams = WriteParams {
    initial_r2t: true,
    immediate_data: true,
    first_burst_length: 65536,
    max_burst_length: 262_144,
    max_outstanding_r2t: 1,
};

fn config() -> Config {
    Config {
        nop_interval: Some(Duration::from_secs(5)),
        nop_timeout: Duration::from_secs(2),
        logout_grace: Duration::from_secs(3),
        write: WRITE,
        discovery: false,
    }
}

fn budgets(limit: u64) -> Budgets {
    Budgets {
        session: Budget::new(limit, None),
        daemon: Budget::new(limit, None),
    }
}

fn pdu(raw: [u8; BHS_LEN], data: &[u8]) -> Pdu {
    Pdu {
        bhs: Bhs(raw),
        ahs: Bytes::new(),
        data: Bytes::copy_from_slice(data),
    }
}

fn events(c: &mut Connection<u32>) -> Vec<Event<u32>> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn rejected(ev: &[Event<u32>]) -> Option<u8> {
    ev.iter().find_map(|e| match e {
        Event::Send(p) if p.bhs.opcode() == Some(Opcode::Reject) => Some(p.bhs.0[2]),
        _ => None,
    })
}

fn closed(ev: &[Event<u32>]) -> bool {
    ev.iter().any(|e| matches!(e, Event::Close(_)))
}

/// A raw NOP-Out: opcode 0x00 with the I bit, F bit, ITT 0x10, TTT
/// reserved, CmdSN 1.
fn nop_out_fixture() -> [u8; BHS_LEN] {
    let mut b = [0u8; BHS_LEN];
    b[0] = 0x40;
    b[1] = 0x80;
    b[16..20].copy_from_slice(&0x10u32.to_be_bytes());
    b[20..24].copy_from_slice(&RESERVED_TAG.to_be_bytes());
    b[24..28].copy_from_slice(&1u32.to_be_bytes());
    b
}

/// A WRITE(10) of `edtl` bytes, ITT `itt`, CmdSN 1.
fn write10(itt: u32, edtl: u32) -> ScsiCommand {
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x01;
    raw[1] = 0x80 | 0x20 | 0x01;
    raw[16..20].copy_from_slice(&itt.to_be_bytes());
    raw[20..24].copy_from_slice(&edtl.to_be_bytes());
    raw[24..28].copy_from_slice(&1u32.to_be_bytes());
    raw[32] = 0x2a;
    raw[39..41].copy_from_slice(&((edtl / 512) as u16).to_be_bytes());
    ScsiCommand::load(&pdu(raw, &[])).expect("a valid command")
}

#[test]
fn a_nop_out_is_answered_with_its_data() {
    let now = Instant::now();
    let mut c = Connection::<u32>::new(config(), now);
    c.handle_pdu(now, pdu(nop_out_fixture(), b"ping"), &window());
    let ev = events(&mut c);
    match &ev[..] {
        [Event::Send(p)] => {
            assert_eq!(p.bhs.opcode(), Some(Opcode::NopIn));
            assert_eq!(p.bhs.itt(), 0x10);
            assert_eq!(&p.data[..], b"ping");
            assert_eq!(p.stat_sn, StatSnMode::Advance);
        }
        other => panic!("expected one NOP-In, got {other:?}"),
    }
}

#[test]
fn malformed_input_is_classified_by_what_happens_next() {
    let now = Instant::now();
    // An unknown opcode: Reject (command not supported), connection stays.
    let mut c = Connection::<u32>::new(config(), now);
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x3b;
    c.handle_pdu(now, pdu(raw, &[]), &window());
    let ev = events(&mut c);
    assert_eq!(rejected(&ev), Some(RejectReason::CommandNotSupported as u8));
    assert!(!closed(&ev));

    // SNACK at ErrorRecoveryLevel 0: Reject, connection stays.
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x10;
    c.handle_pdu(now, pdu(raw, &[]), &window());
    let ev = events(&mut c);
    assert_eq!(rejected(&ev), Some(RejectReason::ProtocolError as u8));
    assert!(!closed(&ev));

    // A Login Request in full-feature phase: Reject, flush, close.
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x43;
    c.handle_pdu(now, pdu(raw, &[]), &window());
    let ev = events(&mut c);
    assert_eq!(rejected(&ev), Some(RejectReason::ProtocolError as u8));
    assert!(matches!(
        ev.last(),
        Some(Event::Close(CloseReason::ProtocolError(_)))
    ));

    // A target opcode (SCSI Response) from the initiator: close.
    let mut c = Connection::<u32>::new(config(), now);
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x21;
    c.handle_pdu(now, pdu(raw, &[]), &window());
    assert!(closed(&events(&mut c)));

    // Immediate data on a read: protocol error, close.
    let mut c = Connection::<u32>::new(config(), now);
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x01;
    raw[1] = 0x80 | 0x40;
    raw[32] = 0x28;
    c.handle_pdu(now, pdu(raw, b"data"), &window());
    assert!(closed(&events(&mut c)));

    // A header digest error: close without a Reject (the header is untrusted).
    let mut c = Connection::<u32>::new(config(), now);
    c.handle_codec_error(&CodecError::HeaderDigest);
    let ev = events(&mut c);
    assert!(closed(&ev));
    assert_eq!(rejected(&ev), None);

    // A SCSI command in a discovery session: close.
    let mut c = Connection::<u32>::new(
        Config {
            discovery: true,
            ..config()
        },
        now,
    );
    let mut raw = [0u8; BHS_LEN];
    raw[0] = 0x01;
    raw[1] = 0x80;
    c.handle_pdu(now, pdu(raw, &[]), &window());
    assert!(closed(&events(&mut c)));
}

#[test]
fn a_broken_data_out_sequence_ends_only_that_command_with_check_condition() {
    let now = Instant::now();
    let mut c = Connection::<u32>::new(config(), now);
    let b = budgets(1 << 30);
    let cmd = write10(7, 8192);
    c.begin_write(
        7,
        70,
        &cmd,
        &Bytes::new(),
        None,
        None,
        &b,
        Vec::with_capacity,
    )
    .unwrap();
    c.deliver_write(7, &b);
    let ev = events(&mut c);
    let r2t = ev
        .iter()
        .find_map(|e| match e {
            Event::Send(p) if p.bhs.opcode() == Some(Opcode::R2t) => Some(p.bhs),
            _ => None,
        })
        .expect("an R2T once granted and delivered");
    let ttt = r2t.u32_at(20);
    // Data at the wrong offset.
    let out = DataOut {
        final_bit: true,
        itt: 7,
        ttt,
        data_sn: 0,
        buffer_offset: 512,
        ..DataOut::default()
    };
    c.handle_pdu(
        now,
        Pdu {
            bhs: out.encode(),
            ahs: Bytes::new(),
            data: Bytes::from(vec![0u8; 512]),
        },
        &window(),
    );
    let ev = events(&mut c);
    assert!(
        matches!(
            &ev[..],
            [Event::WriteFailed {
                payload: 70,
                reason: SenseReason::DataOffsetError,
                ..
            }]
        ),
        "{ev:?}"
    );
    assert!(!closed(&ev));
    assert_eq!(c.pending_writes(), 0);
}

#[test]
fn solicited_data_waits_for_budget_and_buffers_grow_with_grants() {
    let now = Instant::now();
    let mut c = Connection::<u32>::new(config(), now);
    let b = budgets(8192);
    let first = write10(1, 8192);
    let second = write10(2, 8192);
    for (itt, cmd) in [(1, &first), (2, &second)] {
        c.begin_write(
            itt,
            itt,
            cmd,
            &Bytes::new(),
            None,
            None,
            &b,
            Vec::with_capacity,
        )
        .unwrap();
        c.deliver_write(itt, &b);
    }
    let r2ts = |ev: &[Event<u32>]| {
        ev.iter()
            .filter(|e| matches!(e, Event::Send(p) if p.bhs.opcode() == Some(Opcode::R2t)))
            .count()
    };
    assert_eq!(
        r2ts(&events(&mut c)),
        1,
        "the second write waits for budget"
    );
    assert_eq!(c.waiting_for_budget(), 1);
    assert!(b.exhausted());
    // The first write's data arrives and it is handed over with its grant.
    let out = DataOut {
        final_bit: true,
        itt: 1,
        ttt: 1,
        data_sn: 0,
        buffer_offset: 0,
        ..DataOut::default()
    };
    c.handle_pdu(
        now,
        Pdu {
            bhs: out.encode(),
            ahs: Bytes::new(),
            data: Bytes::from(vec![7u8; 8192]),
        },
        &window(),
    );
    let ready = events(&mut c).into_iter().find_map(|e| match e {
        Event::WriteReady {
            payload: 1, data, ..
        } => Some(data),
        _ => None,
    });
    let Some(WriteData::Data { buf, grant }) = ready else {
        panic!("write 1 not ready");
    };
    assert!(buf.iter().all(|b| *b == 7) && buf.len() == 8192);
    c.retry_grants(&b);
    assert_eq!(r2ts(&events(&mut c)), 0, "budget still held by write 1");
    drop((buf, grant));
    c.retry_grants(&b);
    assert_eq!(
        r2ts(&events(&mut c)),
        1,
        "write 2 solicited once budget returned"
    );
    assert_eq!(c.waiting_for_budget(), 0);
}

#[test]
fn aborting_a_pending_write_frees_its_budget_at_once() {
    let now = Instant::now();
    let mut c = Connection::<u32>::new(config(), now);
    let b = budgets(1 << 20);
    c.begin_write(
        3,
        3,
        &write10(3, 65536),
        &Bytes::new(),
        None,
        None,
        &b,
        Vec::with_capacity,
    )
    .unwrap();
    c.deliver_write(3, &b);
    assert_eq!(b.session.used(), 65536);
    assert_eq!(c.abort_write(3), Some(3));
    assert_eq!(b.session.used(), 0);
    assert_eq!(b.daemon.used(), 0);
}

#[test]
fn nop_timers_are_driven_by_now() {
    let t0 = Instant::now();
    let mut c = Connection::<u32>::new(config(), t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_secs(1));
    assert!(events(&mut c).is_empty(), "not idle long enough");
    let t1 = t0 + Duration::from_secs(5);
    c.handle_timeout(t1);
    let ev = events(&mut c);
    let ping = match &ev[..] {
        [Event::Send(p)] if p.bhs.opcode() == Some(Opcode::NopIn) => p.bhs,
        other => panic!("expected a NOP-In ping, got {other:?}"),
    };
    assert_eq!(ping.itt(), RESERVED_TAG);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    // The initiator answers: the deadline is gone.
    let mut raw = nop_out_fixture();
    raw[16..20].copy_from_slice(&RESERVED_TAG.to_be_bytes());
    raw[20..24].copy_from_slice(&ping.u32_at(20).to_be_bytes());
    c.handle_pdu(t1 + Duration::from_secs(1), pdu(raw, &[]), &window());
    assert!(events(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(6)));
    // Next ping unanswered: closed at its deadline.
    let t2 = t1 + Duration::from_secs(6);
    c.handle_timeout(t2);
    events(&mut c);
    c.handle_timeout(t2 + Duration::from_secs(2));
    assert!(matches!(
        events(&mut c)[..],
        [Event::Close(CloseReason::NopTimeout)]
    ));
}

#[test]
fn a_requested_logout_closes_after_its_grace_period() {
    let t0 = Instant::now();
    let mut c = Connection::<u32>::new(
        Config {
            nop_interval: None,
            ..config()
        },
        t0,
    );
    assert_eq!(c.poll_timeout(), None);
    c.request_logout(t0);
    let ev = events(&mut c);
    assert!(matches!(&ev[..], [Event::Send(p)] if p.bhs.opcode() == Some(Opcode::AsyncMessage)));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    c.handle_timeout(t0 + Duration::from_secs(3));
    assert!(matches!(
        events(&mut c)[..],
        [Event::Close(CloseReason::LogoutTimeout)]
    ));
}

fn tmf(function: TmfFunction, rtt: u32) -> TaskMgmtRequest {
    TaskMgmtRequest {
        immediate: true,
        function,
        lun: 0,
        itt: 99,
        referenced_task_tag: rtt,
        cmd_sn: 10,
        exp_stat_sn: 0,
        ref_cmd_sn: 0,
        exp_data_sn: 0,
    }
}

const TASKS: &[TaskView] = &[
    TaskView {
        nexus: 1,
        itt: 10,
        lun: 0,
        cmd_sn: 5,
    },
    TaskView {
        nexus: 1,
        itt: 11,
        lun: 1,
        cmd_sn: 6,
    },
    TaskView {
        nexus: 2,
        itt: 10,
        lun: 0,
        cmd_sn: 3,
    },
    TaskView {
        nexus: 3,
        itt: 20,
        lun: 0,
        cmd_sn: 4,
    },
];

fn ctx(lun: u64) -> TmfContext<'static> {
    TmfContext {
        caller: 1,
        lun,
        lun_exists: true,
        exp_cmd_sn: 7,
        max_cmd_sn: 20,
        tasks: TASKS,
        ua_pending: false,
    }
}

#[test]
fn each_tmf_has_its_sam_scope_and_response() {
    use TmfFunction as F;
    let p = plan(&tmf(F::AbortTask, 10), &ctx(0));
    assert_eq!(
        (p.response, p.abort),
        (TmfResponse::Complete, vec![(1, 10)])
    );
    // Not received yet, RefCmdSN in the window before the TMF: complete.
    let mut req = tmf(F::AbortTask, 77);
    req.ref_cmd_sn = 8;
    assert_eq!(plan(&req, &ctx(0)).response, TmfResponse::Complete);
    req.ref_cmd_sn = 2;
    assert_eq!(plan(&req, &ctx(0)).response, TmfResponse::TaskDoesNotExist);

    let p = plan(&tmf(F::AbortTaskSet, 0), &ctx(0));
    assert_eq!(p.abort, vec![(1, 10)], "only the caller's tasks on the LU");
    assert!(p.cleared_by_another.is_empty());

    let p = plan(&tmf(F::ClearTaskSet, 0), &ctx(0));
    assert_eq!(
        p.abort,
        vec![(1, 10), (2, 10), (3, 20)],
        "every nexus on the LU"
    );
    assert_eq!(p.cleared_by_another, vec![2, 3]);

    let p = plan(&tmf(F::LogicalUnitReset, 0), &ctx(0));
    assert_eq!((p.abort.len(), p.reset), (3, Reset::LogicalUnit));

    let p = plan(&tmf(F::TargetWarmReset, 0), &ctx(0));
    assert_eq!((p.abort.len(), p.reset), (4, Reset::Target { cold: false }));
    let p = plan(&tmf(F::TargetColdReset, 0), &ctx(0));
    assert_eq!(p.reset, Reset::Target { cold: true });

    let p = plan(&tmf(F::ItNexusReset, 0), &ctx(0));
    assert_eq!(
        p.abort,
        vec![(1, 10), (1, 11)],
        "the caller's tasks on every LU"
    );
    assert_eq!(p.reset, Reset::ItNexus);

    assert_eq!(
        plan(&tmf(F::QueryTask, 11), &ctx(0)).response,
        TmfResponse::Succeeded
    );
    assert_eq!(
        plan(&tmf(F::QueryTask, 20), &ctx(0)).response,
        TmfResponse::Complete
    );
    assert_eq!(
        plan(&tmf(F::QueryTaskSet, 0), &ctx(1)).response,
        TmfResponse::Succeeded
    );
    assert_eq!(
        plan(&tmf(F::QueryTaskSet, 0), &ctx(2)).response,
        TmfResponse::Complete
    );
    let pending = TmfContext {
        ua_pending: true,
        ..ctx(0)
    };
    assert_eq!(
        plan(&tmf(F::QueryAsyncEvent, 0), &pending).response,
        TmfResponse::Succeeded
    );
    assert_eq!(
        plan(&tmf(F::QueryAsyncEvent, 0), &ctx(0)).response,
        TmfResponse::Complete
    );
    assert_eq!(
        plan(&tmf(F::ClearAca, 0), &ctx(0)).response,
        TmfResponse::Complete
    );
    assert_eq!(
        plan(&tmf(F::TaskReassign, 0), &ctx(0)).response,
        TmfResponse::ReassignmentNotSupported
    );
    assert_eq!(
        plan(&tmf(F::Unknown(42), 0), &ctx(0)).response,
        TmfResponse::NotSupported
    );
    let gone = TmfContext {
        lun_exists: false,
        ..ctx(5)
    };
    for f in [
        F::AbortTaskSet,
        F::ClearTaskSet,
        F::LogicalUnitReset,
        F::QueryTaskSet,
    ] {
        assert_eq!(
            plan(&tmf(f, 0), &gone).response,
            TmfResponse::LunDoesNotExist
        );
    }
}

/// RFC-level rule of the layout: the protocol and SCSI cores never touch
/// tokio, sockets, files or the clock.
#[test]
fn proto_and_scsi_stay_sans_io() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let banned = [
        "tokio::",
        "std::net::TcpStream",
        "std::net::TcpListener",
        "std::net::UdpSocket",
        "std::fs::",
        "Instant::now",
        "SystemTime::now",
    ];
    let mut stack = vec![root.join("proto"), root.join("scsi")];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            // Test modules may build fixtures as they like.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let is_this_test = path.ends_with("ffp/tests.rs") || path.ends_with("scsi/tests.rs");
            if is_this_test {
                continue;
            }
            for b in banned {
                assert!(!code.contains(b), "{} uses {b}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} files checked");
}
