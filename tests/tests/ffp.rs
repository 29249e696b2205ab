//! The full-feature phase end to end: CmdSN order across the connections of
//! a session, task management across sessions, PREEMPT AND ABORT, memory
//! admission under announced-but-unsent writes, and what the session views
//! say was negotiated.

use std::time::{Duration, Instant};

use iet::proto::pdu::{Bhs, Opcode, Pdu};
use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::{InProcessTarget, TARGET, free_port, mem_config};
use iet_tests::process::{Ietd, TempDir};

fn login(t: &InProcessTarget, opts: &LoginOptions) -> Conn {
    let mut c = Conn::connect(t.addr).expect("connect");
    c.login(opts)
        .unwrap_or_else(|e| panic!("login failed: {e:?}"));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

fn with_isid(last: u8) -> LoginOptions {
    let mut o = LoginOptions::normal(TARGET);
    o.isid[5] = last;
    o
}

fn write10_cdb(lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// Reads PDUs until the SCSI Response for `itt`, answering nothing else;
/// panics if a response for another task arrives.
fn response_for(c: &mut Conn, itt: u32) -> Pdu {
    loop {
        let pdu = c.recv().expect("a response");
        c.track(&pdu.bhs);
        if pdu.bhs.opcode() == Some(Opcode::ScsiResponse) {
            assert_eq!(pdu.bhs.itt(), itt, "a response for another task");
            return pdu;
        }
    }
}

/// Sense key, ASC, ASCQ of a SCSI Response carrying fixed or descriptor sense.
fn sense(pdu: &Pdu) -> (u8, u8, u8) {
    let s = &pdu.data[2..];
    match s[0] & 0x7f {
        0x72 | 0x73 => (s[1] & 0x0f, s[2], s[3]),
        _ => (s[2] & 0x0f, s[12], s[13]),
    }
}

/// Nothing arrives on `c` for `within`.
fn silent(c: &mut Conn, within: Duration) -> bool {
    c.sock.set_read_timeout(Some(within)).unwrap();
    let quiet = match c.recv() {
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        Ok(_) => false,
    };
    c.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    quiet
}

/// RFC 7143 §3.2.2.1: an ORDERED write with CmdSN n+1 sent on one
/// connection before CmdSN n on the other is held until n arrives, so the
/// block ends with the n+1 data.
#[test]
fn commands_reach_scsi_in_cmd_sn_order_across_connections() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let opts = LoginOptions::normal(TARGET);
    let mut a = login(&t, &opts);
    let mut b = Conn::connect(t.addr).unwrap();
    b.cmd_sn = a.cmd_sn;
    b.login(&LoginOptions {
        tsih: a.tsih,
        cid: 1,
        ..opts
    })
    .unwrap();
    assert!(a.immediate_data, "ImmediateData=Yes for the session");
    let n = a.cmd_sn;
    // CmdSN n+1, ORDERED, on the second connection, first.
    let mut later = b.command_bhs(0, &write10_cdb(0, 1), false, true, 512);
    later.0[1] = (later.0[1] & !0x07) | 0x02;
    later.set_u32(24, n.wrapping_add(1));
    b.send(&later, &[0xbb; 512]).unwrap();
    assert!(
        silent(&mut b, Duration::from_millis(300)),
        "CmdSN n+1 must wait for n"
    );
    // CmdSN n, SIMPLE, on the first.
    let mut first = a.command_bhs(0, &write10_cdb(0, 1), false, true, 512);
    first.set_u32(24, n);
    a.send(&first, &[0xaa; 512]).unwrap();
    assert_eq!(
        response_for(&mut a, first.itt()).bhs.0[3],
        0,
        "write n GOOD"
    );
    assert_eq!(
        response_for(&mut b, later.itt()).bhs.0[3],
        0,
        "write n+1 GOOD"
    );
    a.cmd_sn = n.wrapping_add(2);
    let back = a.read10(0, 0, 1, 512).unwrap();
    assert!(
        back.data.iter().all(|x| *x == 0xbb),
        "the block holds the data of CmdSN n+1"
    );
}

/// A WRITE(10) of 8 blocks sent without data: the target answers with an
/// R2T and the task stays queued until the data comes.
fn queue_write(c: &mut Conn) -> (Bhs, Bhs) {
    let cmd = c.command_bhs(0, &write10_cdb(8, 8), false, true, 4096);
    c.send(&cmd, &[]).unwrap();
    loop {
        let pdu = c.recv().expect("an R2T");
        c.track(&pdu.bhs);
        if pdu.bhs.opcode() == Some(Opcode::R2t) {
            return (cmd, pdu.bhs);
        }
    }
}

fn tmf(c: &mut Conn, function: u8, rtt: u32) -> u8 {
    let itt = c.next_itt();
    let mut bhs = Bhs::new(Opcode::TaskMgmtRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x80 | function;
    bhs.set_itt(itt);
    bhs.set_u32(20, rtt);
    bhs.set_u32(24, c.cmd_sn);
    bhs.set_u32(28, c.exp_stat_sn);
    c.send(&bhs, &[]).unwrap();
    loop {
        let pdu = c.recv().expect("a TMF response");
        c.track(&pdu.bhs);
        if pdu.bhs.opcode() == Some(Opcode::TaskMgmtResponse) && pdu.bhs.itt() == itt {
            return pdu.bhs.0[2];
        }
    }
}

/// The aborted write's data is taken silently and the next command sees
/// the unit attention `asc`/`ascq`.
fn aborted_then_ua(c: &mut Conn, write: &(Bhs, Bhs), asc: u8, ascq: u8) {
    let (cmd, r2t) = write;
    c.send_data_out(0, cmd.itt(), r2t.u32_at(20), 0, 0, true, &[0x11; 4096])
        .unwrap();
    let tur = c.command_bhs(0, &[0u8; 6], false, false, 0);
    c.send(&tur, &[]).unwrap();
    let resp = response_for(c, tur.itt());
    assert_eq!(resp.bhs.0[3], 0x02, "CHECK CONDITION");
    assert_eq!(sense(&resp), (0x06, asc, ascq));
}

/// SAM-5 §7.4: CLEAR TASK SET from one session aborts another session's
/// queued command, which then reports COMMANDS CLEARED BY ANOTHER INITIATOR.
#[test]
fn clear_task_set_aborts_other_sessions_tasks_with_a_unit_attention() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut x = login(&t, &with_isid(1));
    let mut y = login(&t, &with_isid(2));
    let queued = queue_write(&mut x);
    assert_eq!(tmf(&mut y, 4, 0), 0, "CLEAR TASK SET: function complete");
    aborted_then_ua(&mut x, &queued, 0x2f, 0x00);
    // QUERY TASK of the aborted task: it no longer exists.
    assert_eq!(
        tmf(&mut x, 9, queued.0.itt()),
        0,
        "function complete: no such task"
    );
    // ABORT TASK SET only touches the caller's tasks.
    let mine = queue_write(&mut x);
    let theirs = queue_write(&mut y);
    assert_eq!(tmf(&mut x, 10, 0), 7, "QUERY TASK SET: function succeeded");
    assert_eq!(tmf(&mut x, 2, 0), 0, "ABORT TASK SET");
    assert_eq!(tmf(&mut x, 10, 0), 0, "QUERY TASK SET: none left");
    y.send_data_out(
        0,
        theirs.0.itt(),
        theirs.1.u32_at(20),
        0,
        0,
        true,
        &[0x22; 4096],
    )
    .unwrap();
    assert_eq!(
        response_for(&mut y, theirs.0.itt()).bhs.0[3],
        0,
        "y's write ran"
    );
    let _ = mine;
}

fn pr_out(c: &mut Conn, sa: u8, pr_type: u8, key: u64, sa_key: u64) -> u8 {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[1] = sa;
    cdb[2] = pr_type;
    cdb[8] = 24;
    let mut params = [0u8; 24];
    params[0..8].copy_from_slice(&key.to_be_bytes());
    params[8..16].copy_from_slice(&sa_key.to_be_bytes());
    c.scsi(0, &cdb, &params, 0)
        .expect("PERSISTENT RESERVE OUT")
        .status
}

/// SPC-5 §5.13.11.2.6: PREEMPT AND ABORT ends the preempted nexus's queued
/// command.
#[test]
fn preempt_and_abort_ends_the_preempted_nexus_tasks() {
    let t = InProcessTarget::start(mem_config(&["mem:1M"]));
    let mut x = login(&t, &with_isid(1));
    let mut y = login(&t, &with_isid(2));
    assert_eq!(pr_out(&mut x, 0x00, 0, 0, 0xa), 0, "x registers");
    assert_eq!(pr_out(&mut x, 0x01, 0x01, 0xa, 0), 0, "x reserves");
    assert_eq!(pr_out(&mut y, 0x00, 0, 0, 0xb), 0, "y registers");
    let queued = queue_write(&mut x);
    assert_eq!(pr_out(&mut y, 0x05, 0x01, 0xb, 0xa), 0, "PREEMPT AND ABORT");
    aborted_then_ua(&mut x, &queued, 0x2a, 0x05);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Writes announced but never sent hold no memory: eight sessions queue
/// 128 WRITE(16) of 32 MiB each with InitialR2T=Yes and send nothing; RSS
/// stays bounded, a new session is served meanwhile, and RSS returns to
/// its baseline once they are gone.
#[test]
fn announced_writes_claim_no_memory() {
    let dir = TempDir::new("admission");
    let img = dir.path("lun.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(1 << 30))
        .unwrap();
    let portal = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_s = portal.to_string();
    let img_s = img.display().to_string();
    let mut ietd = Ietd::start(
        &dir,
        portal,
        &[
            "--ebpf", "off", "--portal", &portal_s, "--target", TARGET, "--lun", &img_s,
        ],
    );
    let pid = ietd.child.id();
    let baseline = rss_kib(pid);
    let mut hogs = Vec::new();
    for i in 0..8u8 {
        let mut c = Conn::connect(portal).unwrap();
        let mut o = with_isid(0x40 + i);
        o.extra = vec![("InitialR2T".into(), "Yes".into())];
        c.login(&o).unwrap();
        c.clear_unit_attention(0).unwrap();
        for k in 0..128u64 {
            let mut cdb = [0u8; 16];
            cdb[0] = 0x8a;
            cdb[2..10].copy_from_slice(&(k * 65536).to_be_bytes());
            cdb[10..14].copy_from_slice(&65536u32.to_be_bytes());
            let bhs = c.command_bhs(0, &cdb, false, true, 32 << 20);
            c.send(&bhs, &[]).unwrap();
        }
        hogs.push(c);
    }
    std::thread::sleep(Duration::from_secs(2));
    let loaded = rss_kib(pid);
    assert!(
        loaded < baseline + 256 * 1024,
        "RSS grew from {baseline} KiB to {loaded} KiB for data never sent"
    );
    // A new session is served meanwhile.
    let mut fresh = Conn::connect(portal).unwrap();
    fresh.login(&with_isid(0x77)).unwrap();
    fresh.clear_unit_attention(0).unwrap();
    let started = Instant::now();
    assert_eq!(fresh.write10(0, 100, &[0x5a; 4096], 512).unwrap().status, 0);
    let back = fresh.read10(0, 100, 8, 512).unwrap();
    assert!(back.data.iter().all(|b| *b == 0x5a));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served promptly"
    );
    for mut c in hogs {
        c.logout().ok();
    }
    drop(fresh);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    assert!(
        after < baseline + 64 * 1024,
        "RSS {after} KiB did not return near its baseline {baseline} KiB"
    );
    assert!(ietd.stop());
}

/// `ietadm show sessions` (text, --json, --proc) shows what was negotiated.
#[test]
fn session_views_show_the_negotiated_digests_and_lengths() {
    let dir = TempDir::new("views");
    let portal = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_s = portal.to_string();
    let mut ietd = Ietd::start(
        &dir,
        portal,
        &[
            "--ebpf", "off", "--portal", &portal_s, "--target", TARGET, "--lun", "mem:1M",
        ],
    );
    let mut c = Conn::connect(portal).unwrap();
    let mut o = LoginOptions::normal(TARGET);
    o.digests = true;
    o.extra = vec![("MaxRecvDataSegmentLength".into(), "65536".into())];
    c.login(&o).unwrap();
    let text = ietd.adm_ok(&["show", "sessions"]);
    assert!(text.contains("hd:true dd:true"), "{text}");
    assert!(
        text.contains("HeaderDigest=CRC32C DataDigest=CRC32C"),
        "{text}"
    );
    assert!(
        text.contains("InitiatorMaxRecvDataSegmentLength=65536"),
        "{text}"
    );
    let json = ietd.adm_ok(&["show", "sessions", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let s = v.to_string();
    assert!(s.contains("CRC32C"), "{s}");
    assert!(
        s.contains("\"InitiatorMaxRecvDataSegmentLength\",\"65536\""),
        "{s}"
    );
    let proc = ietd.adm_ok(&["show", "sessions", "--proc"]);
    assert!(proc.contains("hd:crc32c dd:crc32c"), "{proc}");
    // The write budgets are settings: changed live, shown, saved.
    ietd.adm_ok(&[
        "memory",
        "set",
        "--write-budget-mib",
        "300",
        "--session-write-budget-mib",
        "20",
    ]);
    let stats: serde_json::Value =
        serde_json::from_str(&ietd.adm_ok(&["stats", "--json"])).expect("stats JSON");
    assert_eq!(stats["memory"]["write_budget_mib"], 300, "{stats}");
    assert_eq!(stats["memory"]["session_write_budget_mib"], 20, "{stats}");
    let saved = dir.path("saved.toml");
    ietd.adm_ok(&["save", &saved.display().to_string()]);
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("write_budget_mib = 300") && text.contains("session_write_budget_mib = 20"),
        "{text}"
    );
    assert!(ietd.stop());
}

/// With a session budget of 1 MiB, eight pipelined 512 KiB writes are
/// throttled (solicited two at a time), not refused: all complete and the
/// data reads back.
#[test]
fn writes_beyond_the_budget_wait_and_then_complete() {
    let mut cfg = mem_config(&["mem:16M"]);
    cfg.memory.session_write_budget_mib = 1;
    let t = InProcessTarget::start(cfg);
    let mut o = LoginOptions::normal(TARGET);
    o.extra = vec![
        ("InitialR2T".into(), "Yes".into()),
        ("ImmediateData".into(), "No".into()),
    ];
    let mut c = login(&t, &o);
    let len = 512 * 1024;
    let mut pending = std::collections::HashMap::new();
    for i in 0..8u32 {
        let cmd = c.command_bhs(0, &write10_cdb(i * 1024, 1024), false, true, len);
        c.send(&cmd, &[]).unwrap();
        pending.insert(cmd.itt(), i as u8 + 1);
    }
    let mut done = 0;
    let mut solicited = std::collections::HashSet::new();
    let mut solicited_before_first_answer = None;
    while done < 8 {
        let pdu = c.recv().expect("R2T or response");
        c.track(&pdu.bhs);
        match pdu.bhs.opcode() {
            Some(Opcode::R2t) => {
                let itt = pdu.bhs.itt();
                solicited.insert(itt);
                let fill = pending[&itt];
                let (ttt, offset, want) = (
                    pdu.bhs.u32_at(20),
                    pdu.bhs.u32_at(40) as usize,
                    pdu.bhs.u32_at(44) as usize,
                );
                let mut sent = 0;
                let mut sn = 0;
                while sent < want {
                    let n = (want - sent).min(c.target_mrdsl);
                    let last = sent + n == want;
                    c.send_data_out(
                        0,
                        itt,
                        ttt,
                        sn,
                        (offset + sent) as u32,
                        last,
                        &vec![fill; n],
                    )
                    .unwrap();
                    sent += n;
                    sn += 1;
                }
            }
            Some(Opcode::ScsiResponse) => {
                assert_eq!(pdu.bhs.0[3], 0, "write GOOD");
                solicited_before_first_answer.get_or_insert(solicited.len());
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        solicited_before_first_answer,
        Some(2),
        "the 1 MiB budget solicits two 512 KiB writes at a time"
    );
    for i in 0..8u32 {
        let back = c.read10(0, i * 1024, 1024, 512).unwrap();
        assert!(
            back.data.iter().all(|b| *b == i as u8 + 1),
            "write {i} intact"
        );
    }
}
