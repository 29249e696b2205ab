//! Failover under load: two real ietd gateways of one RBD image with ALUA on a real one-node
//! Ceph cluster (started and stopped by PID). Several writers send WRITE(10) with FUA, each
//! block tagged with its writer and sequence number, through the active/optimized gateway A;
//! A is killed with `kill -9` mid-stream. Each writer then does what a multipath initiator
//! (dm-multipath with ALUA priorities) does on a lost path: it waits until gateway B reports
//! itself active/optimized and sends its unacknowledged write there again, then goes on
//! writing through B. Afterwards every acknowledged block reads back intact through B, and
//! the time without I/O (last acknowledgement through A to first through B) is printed and
//! bounded by the lease. Without Ceph it skips, except in CI.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iet_tests::ceph::{self, IMAGE};
use iet_tests::gateways::{self, AN, AO, BS, rtpg, write_fua};
use iet_tests::initiator::{Conn, INITIATOR};
use iet_tests::process::TempDir;

const IQN: &str = "iqn.2026-12.io.iet:failover";
/// `alua_lease=` of both gateways.
const LEASE: Duration = Duration::from_secs(4);
/// Writers, each with one WRITE in flight at a time.
const WRITERS: u32 = 4;
/// Blocks per WRITE (4 KiB).
const BLOCKS: u32 = 8;
/// Blocks of the image each writer owns (never written twice).
const SPAN: u32 = 1 << 18;
/// Writes each writer acknowledges through B before it stops.
const AFTER: u32 = 16;
/// How long the writers run through A before the kill.
const BEFORE_KILL: Duration = Duration::from_secs(2);

/// The block a writer sends as its `seq`th write: a tag then a pattern from both.
fn payload(writer: u32, seq: u32) -> Vec<u8> {
    let mut d: Vec<u8> = (0..BLOCKS * BS)
        .map(|i| (writer.wrapping_mul(977) ^ seq.wrapping_mul(131) ^ i.wrapping_mul(7)) as u8)
        .collect();
    for block in d.chunks_exact_mut(BS as usize) {
        block[..4].copy_from_slice(b"IETW");
        block[4..8].copy_from_slice(&writer.to_be_bytes());
        block[8..12].copy_from_slice(&seq.to_be_bytes());
    }
    d
}

fn lba_of(writer: u32, seq: u32) -> u32 {
    writer * SPAN + seq * BLOCKS
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    writer: u32,
    seq: u32,
    at: Instant,
    through_b: bool,
}

/// Polls REPORT TARGET PORT GROUPS through `c` until group 2 (B) is active/optimized.
fn wait_until_b_optimized(c: &mut Conn, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(groups) = rtpg(c).expect("RTPG through B")
            && groups.contains(&(2, AO))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "B not active/optimized in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One writer: writes through `a` until the path is lost, then as a multipath initiator
/// would, through `b` once B is active/optimized, retrying what A did not acknowledge.
fn writer(w: u32, mut a: Conn, mut b: Conn, acks: &Mutex<Vec<Ack>>, failed_over: &AtomicBool) {
    let mut on_b = false;
    let mut through_b = 0;
    let mut seq = 0;
    while through_b < AFTER {
        let data = payload(w, seq);
        loop {
            let path = if on_b { &mut b } else { &mut a };
            match write_fua(path, lba_of(w, seq), &data) {
                Ok(r) if r.status == 0 => break,
                // A unit attention (e.g. ASYMMETRIC ACCESS STATE CHANGED): send it again.
                Ok(r) if r.sense_key() == Some(0x06) => {}
                Ok(r) => panic!("writer {w}, write {seq}: {r:?}"),
                Err(e) if !on_b => {
                    failed_over.store(true, Ordering::Release);
                    eprintln!("writer {w}: path A lost at write {seq} ({e}); failing over to B");
                    wait_until_b_optimized(&mut b, LEASE * 3);
                    on_b = true;
                }
                Err(e) => panic!("writer {w}: path B failed too: {e}"),
            }
        }
        acks.lock().unwrap().push(Ack {
            writer: w,
            seq,
            at: Instant::now(),
            through_b: on_b,
        });
        through_b += u32::from(on_b);
        seq += 1;
    }
}

#[test]
fn failover_under_load() {
    let t0 = Instant::now();
    let Some(cluster) = ceph::start_for_test("failover") else {
        return;
    };
    let spec = cluster.lun_spec(IMAGE);
    let lun = |group: u16| format!("{spec}&alua_group={group}&alua_lease={}", LEASE.as_secs());
    let (dir_a, dir_b) = (TempDir::new("failover-a"), TempDir::new("failover-b"));
    // A opens the image first and so takes the owner lease.
    let mut a = gateways::start(&dir_a, IQN, &lun(1));
    let mut b = gateways::start(&dir_b, IQN, &lun(2));
    let mut probe = gateways::session(&b, IQN, INITIATOR, 0x7f);
    let deadline = Instant::now() + LEASE * 2;
    while rtpg(&mut probe).expect("RTPG") != Ok(vec![(1, AO), (2, AN)]) {
        assert!(Instant::now() < deadline, "A never became the owner");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Both paths of every writer are logged in before the load starts, as with multipath.
    let paths: Vec<(Conn, Conn)> = (0..WRITERS)
        .map(|w| {
            let tail = w as u8 + 1;
            (
                gateways::session(&a, IQN, INITIATOR, tail),
                gateways::session(&b, IQN, INITIATOR, tail),
            )
        })
        .collect();
    let acks = Mutex::new(Vec::new());
    let failed_over = AtomicBool::new(false);
    let killed = std::thread::scope(|s| {
        for (w, (ca, cb)) in (0..WRITERS).zip(paths) {
            let (acks, failed_over) = (&acks, &failed_over);
            s.spawn(move || writer(w, ca, cb, acks, failed_over));
        }
        std::thread::sleep(BEFORE_KILL);
        assert!(
            !failed_over.load(Ordering::Acquire),
            "no failover before the kill"
        );
        a.child.kill().expect("kill -9 gateway A");
        let killed = Instant::now();
        a.child.wait().expect("reap gateway A");
        killed
    });
    let acks = acks.into_inner().unwrap();

    let last_a = acks
        .iter()
        .filter(|k| !k.through_b)
        .map(|k| k.at)
        .max()
        .expect("writes acknowledged through A");
    let first_b = acks
        .iter()
        .filter(|k| k.through_b)
        .map(|k| k.at)
        .min()
        .expect("writes acknowledged through B");
    let through_a = acks.iter().filter(|k| !k.through_b).count();
    let gap = first_b.duration_since(last_a);
    println!(
        "failover: {through_a} FUA writes acknowledged through A, {} through B; \
         kill -9 {:.2?} after the last ack through A; I/O gap {gap:.2?} (lease {LEASE:?})",
        acks.len() - through_a,
        killed.saturating_duration_since(last_a),
    );
    // B takes the owner lease once A's runs out (at most LEASE + LEASE / 6 after A's last
    // renewal), then breaks A's image lock; the first write follows.
    let bound = LEASE + LEASE / 6 + Duration::from_secs(3);
    assert!(
        gap < bound,
        "I/O gap {gap:?} over the bound {bound:?}\n{}",
        b.log()
    );

    // B reports itself active/optimized, A's group gone or not optimized.
    // (The probe's first answers are the unit attentions of the takeover.)
    let groups = (0..8)
        .find_map(|_| rtpg(&mut probe).expect("RTPG").ok())
        .expect("RTPG answers once the unit attentions are reported");
    assert!(groups.contains(&(2, AO)), "B active/optimized: {groups:?}");
    assert!(!groups.contains(&(1, AO)), "one owner: {groups:?}");

    // Every acknowledged write reads back intact through B.
    for k in &acks {
        let r = probe
            .read10(0, lba_of(k.writer, k.seq), BLOCKS as u16, BS)
            .expect("READ(10) through B");
        assert!(
            r.status == 0 && r.data == payload(k.writer, k.seq),
            "writer {} write {} (acknowledged through {}) reads back through B: status {}, \
             tag {:02x?}",
            k.writer,
            k.seq,
            if k.through_b { "B" } else { "A" },
            r.status,
            r.data.get(..12)
        );
    }
    println!(
        "failover: all {} acknowledged writes read back through B",
        acks.len()
    );
    probe.logout().expect("logout");
    assert!(b.stop(), "gateway B exits cleanly:\n{}", b.log());
    drop(cluster);
    println!("failover test: whole test {:.1?}", t0.elapsed());
}
