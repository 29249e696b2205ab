//! RBD-backed LUNs on a real one-node Ceph cluster that the test starts and stops by PID:
//! libiscsi's SCSI family (the SBC and SPC suites), data written through one ietd read back
//! through a second ietd on the same image ("two gateways") and by `rbd export`, and an RBD
//! LUN added live with `ietadm lun new --path rbd:..`; gateway A takes its LUN from `--lun`,
//! gateway B from an ietd.conf. Without Ceph it skips, except in CI.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iet::backend::rbd::{RbdBackend, RbdSpec};
use iet::backend::{BackendErrorKind, BlockBackend, CompareOutcome};
use iet_tests::ceph::{self, Cluster, IMAGE, POOL};
use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::free_port;
use iet_tests::libiscsi::{self, INITIATOR_1, INITIATOR_2};
use iet_tests::process::{Ietd, TempDir};

const IQN: &str = "iqn.2026-11.io.iet:rbd";
const BS: u32 = 512;

fn gateway(dir: &TempDir, spec: &str) -> Ietd {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_arg = portal.to_string();
    Ietd::start(
        dir,
        portal,
        &[
            "--portal",
            &portal_arg,
            "--target",
            IQN,
            "--lun",
            spec,
            "--ebpf",
            "off",
        ],
    )
}

/// A gateway configured by IET's ietd.conf: `Lun 0 Path=rbd:..` works there too.
fn gateway_from_ietd_conf(dir: &TempDir, spec: &str) -> Ietd {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let conf = dir.path("ietd.conf");
    std::fs::write(
        &conf,
        format!("Target {IQN}\n\tLun 0 Path={spec},Type=fileio\n"),
    )
    .expect("write ietd.conf");
    Ietd::start(
        dir,
        portal,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--portal",
            &portal.to_string(),
            "--ebpf",
            "off",
        ],
    )
}

fn session(ietd: &Ietd, isid_tail: u8) -> Conn {
    let mut c = Conn::connect(ietd.portal).expect("connect");
    let mut opts = LoginOptions::normal(IQN);
    opts.isid[5] = isid_tail;
    c.login(&opts)
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

/// The SCSI family of iscsi-test-cu (every SBC and SPC suite) with SCSI logging (`-V`);
/// prints which tests ran, passed and were skipped, and asserts zero failures.
fn scsi_family(ietd: &Ietd) {
    let t0 = Instant::now();
    let url = format!("iscsi://{}/{IQN}/0", ietd.portal);
    let args = [
        "--dataloss",
        "-V",
        "-i",
        INITIATOR_1,
        "-I",
        INITIATOR_2,
        "-t",
        "SCSI",
        &url,
        &url,
    ];
    let run = libiscsi::run("iscsi-test-cu", &args, Duration::from_mins(10));
    let all = format!("{}\n{}", run.stdout, run.stderr);
    let summary = libiscsi::parse_summary(&all)
        .unwrap_or_else(|| panic!("no CUnit summary in:\n{all}\nietd log:\n{}", ietd.log()));
    let mut skipped: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("[SKIPPED]"))
        .map(str::trim)
        .collect();
    skipped.dedup();
    println!(
        "iscsi-test-cu SCSI on RBD: {} tests, {} ran, {} passed, {} failed, {} skip notes, {:.1?}",
        summary.total,
        summary.ran,
        summary.passed,
        summary.failed,
        skipped.len(),
        t0.elapsed()
    );
    for s in &skipped {
        println!("  {s}");
    }
    assert!(
        summary.ran >= 150,
        "the SCSI family ran ({} tests)",
        summary.ran
    );
    assert_eq!(
        summary.failed,
        0,
        "iscsi-test-cu SCSI failures on RBD: {:?}\nietd log:\n{}",
        libiscsi::failed_tests(&all),
        ietd.log()
    );
}

fn pattern(lba: u32, blocks: u32) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (lba.wrapping_mul(131).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

/// Writes through gateway A (with FUA), reads through gateway B on the same image and
/// through `rbd export`; then writes through B and reads through A.
fn two_gateways(cluster: &Cluster, a: &Ietd, b: &Ietd, dir: &TempDir) {
    let mut ca = session(a, 1);
    let mut cb = session(b, 2);
    let lbas = [0u32, 64, 4095, 8192 + 3, (1 << 21) - 16];
    for &lba in &lbas {
        let data = pattern(lba, 16);
        // WRITE(10) with FUA (byte 1 bit 3): acknowledged only once flushed to the cluster.
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[1] = 0x08;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&16u16.to_be_bytes());
        let r = ca.scsi(0, &cdb, &data, 0).expect("write through A");
        assert_eq!(r.status, 0, "write at {lba} through A: {r:?}");
    }
    for &lba in &lbas {
        let r = cb.read10(0, lba, 16, BS).expect("read through B");
        assert_eq!(r.status, 0, "read at {lba} through B: {r:?}");
        assert!(
            r.data == pattern(lba, 16),
            "gateway B reads what A wrote at {lba}: {} bytes, first difference at {:?}",
            r.data.len(),
            r.data
                .iter()
                .zip(pattern(lba, 16))
                .position(|(a, b)| *a != b)
        );
    }
    let export = dir.path("disk1.raw");
    cluster
        .rbd(&[
            "export",
            &format!("{POOL}/{IMAGE}"),
            export.to_str().unwrap(),
        ])
        .expect("rbd export");
    let raw = std::fs::read(&export).expect("read the export");
    assert_eq!(raw.len() as u64, ceph::IMAGE_MIB << 20, "export size");
    for &lba in &lbas {
        let at = lba as usize * BS as usize;
        assert!(
            raw[at..at + 16 * BS as usize] == pattern(lba, 16),
            "rbd export shows the data written at {lba}"
        );
    }
    let back = pattern(77, 8);
    let r = cb.write10(0, 100, &back, BS).expect("write through B");
    assert_eq!(r.status, 0, "write through B: {r:?}");
    let r = ca.read10(0, 100, 8, BS).expect("read through A");
    assert!(r.status == 0 && r.data == back, "A reads what B wrote");
    ca.logout().expect("logout A");
    cb.logout().expect("logout B");
}

/// `ietadm lun new --path rbd:..` opens a second image live; READ CAPACITY shows its size;
/// `ietadm lun resize` resizes the image in the cluster.
fn lun_added_live(cluster: &Cluster, a: &Ietd) {
    cluster
        .rbd(&["create", "--size", "64", &format!("{POOL}/disk2")])
        .expect("rbd create disk2");
    let spec = cluster.lun_spec("disk2");
    a.adm_ok(&["lun", "new", "--target", IQN, "--lun", "1", "--path", &spec]);
    let mut c = session(a, 3);
    c.clear_unit_attention(1).expect("TEST UNIT READY on LUN 1");
    let r = c
        .scsi(1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8)
        .expect("READ CAPACITY(10)");
    assert_eq!(r.status, 0, "READ CAPACITY on the RBD LUN: {r:?}");
    let last = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]);
    assert_eq!(
        u64::from(last) + 1,
        (64 << 20) / u64::from(BS),
        "disk2 has 64 MiB"
    );
    // `ietadm lun resize` resizes the image itself; the initiator hears of it by UA.
    a.adm_ok(&[
        "lun", "resize", "--target", IQN, "--lun", "1", "--size", "128M",
    ]);
    let seen = c
        .clear_unit_attention(1)
        .expect("TEST UNIT READY after resize");
    assert!(
        seen.contains(&(0x2a, 0x09)),
        "CAPACITY DATA HAS CHANGED after the resize: {seen:?}"
    );
    let info = cluster
        .rbd(&["info", &format!("{POOL}/disk2")])
        .expect("rbd info");
    assert!(info.contains("size 128 MiB"), "{info}");
    c.logout().expect("logout");
    let missing = a.adm(&[
        "lun",
        "new",
        "--target",
        IQN,
        "--lun",
        "2",
        "--path",
        &cluster.lun_spec("no-such-image"),
    ]);
    assert!(!missing.status.success(), "a missing image is not created");
}

/// The store itself on its own image: compare-and-write (match and miscompare offset),
/// write-zeroes, discard reading back zeros, requests overlapping in librbd, and a resize by
/// `rbd resize` seen through the header watch.
fn backend_operations(cluster: &Cluster) {
    cluster
        .rbd(&["create", "--size", "16", &format!("{POOL}/store")])
        .expect("rbd create store");
    let spec = cluster.lun_spec("store");
    let rbd = RbdBackend::open(RbdSpec::parse(spec.strip_prefix("rbd:").unwrap()).unwrap())
        .expect("open rbd/store");
    assert_eq!(rbd.size(), 16 << 20);
    assert!(rbd.supports_compare_and_write() && rbd.supports_discard());

    // librbd 16 compares and writes one 512-byte sector at a time.
    let old = vec![0x11u8; 512];
    let new = vec![0x22u8; 512];
    rbd.write_at(&old, 8192, true).expect("write");
    assert_eq!(
        rbd.compare_and_write(&old, &new, 8192).expect("C&W"),
        CompareOutcome::Written
    );
    let mut close = new.clone();
    close[300] = 0x33;
    assert_eq!(
        rbd.compare_and_write(&close, &old, 8192).expect("C&W"),
        CompareOutcome::Miscompare(300),
        "librbd reports the offset of the first differing byte from the start"
    );
    let mut sector = vec![0u8; 512];
    rbd.read_at(&mut sector, 8192).expect("read");
    assert!(sector == new, "a miscompare writes nothing");
    let big = rbd
        .compare_and_write(&[0; 1024], &[1; 1024], 8192)
        .expect_err("two sectors");
    assert_eq!(big.kind(), BackendErrorKind::NotSupported);
    let mut buf = vec![0u8; 4096];
    let new = vec![0x22u8; 4096];

    rbd.write_zeroes(8192, 4096).expect("write-zeroes");
    rbd.read_at(&mut buf, 8192).expect("read");
    assert!(buf.iter().all(|&b| b == 0), "write-zeroes zeroes");
    rbd.write_at(&new, 1 << 20, false).expect("write");
    rbd.discard((1 << 20) + 512, 1024).expect("discard");
    rbd.read_at(&mut buf, 1 << 20).expect("read");
    assert!(
        buf[512..1536].iter().all(|&b| b == 0) && buf[..512] == new[..512],
        "a partial discard reads back as zeros"
    );

    // Sixteen threads, one blocking request each at a time: librbd holds several at once.
    std::thread::scope(|s| {
        for t in 0..16u64 {
            let rbd = &rbd;
            s.spawn(move || {
                let data = vec![t as u8; 65536];
                for i in 0..8 {
                    rbd.write_at(&data, (t * 8 + i) * 65536, false)
                        .expect("write");
                }
            });
        }
    });
    let max = rbd
        .counters()
        .max_in_flight
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("rbd store: up to {max} requests in flight at once");
    assert!(max > 1, "concurrent callers overlap in librbd (max {max})");
    let m = rbd.metrics();
    let metric = |n: &str| m.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    assert_eq!(metric("rbd_in_flight"), Some(0));
    assert!(metric("rbd_writes").unwrap_or(0) >= 16 * 8, "{m:?}");
    assert_eq!(metric("rbd_miscompares"), Some(1), "{m:?}");
    rbd.flush().expect("flush");

    cluster
        .rbd(&["resize", "--size", "32", &format!("{POOL}/store")])
        .expect("rbd resize");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rbd.size() != 32 << 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rbd.size(), 32 << 20, "the header watch sees the resize");
    assert_eq!(rbd.size_changes(), 1);
}

#[test]
fn rbd_luns_on_a_one_node_cluster() {
    let t0 = Instant::now();
    let Some(cluster) = ceph::start_for_test("rbd") else {
        return;
    };
    backend_operations(&cluster);
    let spec = cluster.lun_spec(IMAGE);
    let (dir_a, dir_b) = (TempDir::new("rbd-a"), TempDir::new("rbd-b"));
    let mut a = gateway(&dir_a, &spec);
    let mut b = gateway_from_ietd_conf(&dir_b, &spec);
    two_gateways(&cluster, &a, &b, &dir_a);
    assert!(b.stop(), "gateway B exits cleanly:\n{}", b.log());
    lun_added_live(&cluster, &a);
    scsi_family(&a);
    assert!(a.stop(), "gateway A exits cleanly:\n{}", a.log());
    let startup = cluster.startup;
    drop(cluster);
    println!(
        "rbd test: cluster start {startup:.1?}, whole test {:.1?}",
        t0.elapsed()
    );
}
