//! Storage faults are answers, not crashes: real faults under the real
//! ietd binary, each asserting the sense data of the failed command and
//! that the LU's other I/O and another LUN keep being served.
//! - ENOSPC: a sparse file on a small tmpfs that fills;
//! - EIO, and fdatasync failures: a FUSE filesystem (in this test process,
//!   `fuser`) whose file fails reads, writes or fsync for real, through the
//!   kernel, in a range or while a switch is set;
//! - a store that goes away: that FUSE connection aborted through fusectl
//!   (as a removed device), and a backing file deleted while served.
//!
//! All need root (mounts); in CI a test that cannot run fails.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use iet_tests::initiator::{Conn, LoginOptions, ScsiResult};
use iet_tests::inprocess::free_port;
use iet_tests::mounts::{FuseMount, Mount};
use iet_tests::process::{Ietd, TempDir, require_root};

const IQN: &str = "iqn.2026-11.io.iet:faults";
const BS: u32 = 512;
const MEDIUM_ERROR: u8 = 0x03;
const HARDWARE_ERROR: u8 = 0x04;
const DATA_PROTECT: u8 = 0x07;

fn start(dir: &TempDir, luns: &[&Path]) -> Ietd {
    start_engine(dir, luns, "file")
}

/// As [`start`], every LUN with the I/O engine `engine` (`file`, `uring`).
fn start_engine(dir: &TempDir, luns: &[&Path], engine: &str) -> Ietd {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_s = portal.to_string();
    let mut args = vec!["--portal", &portal_s, "--target", IQN, "--ebpf", "off"];
    let specs: Vec<String> = luns
        .iter()
        .map(|l| format!("{}?engine={engine}", l.to_str().expect("utf-8 path")))
        .collect();
    for l in &specs {
        args.push("--lun");
        args.push(l);
    }
    Ietd::start(dir, portal, &args)
}

fn session(ietd: &Ietd, luns: &[u64]) -> Conn {
    let mut c = Conn::connect(ietd.portal).expect("connect");
    c.login(&LoginOptions::normal(IQN))
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    for &l in luns {
        c.clear_unit_attention(l).expect("TEST UNIT READY");
    }
    c
}

fn sparse_file(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn assert_good(r: &ScsiResult, what: &str, ietd: &Ietd) {
    assert_eq!(
        r.status,
        0,
        "{what}: status {:#x}, sense {:02x?}\n{}",
        r.status,
        r.sense,
        ietd.log()
    );
}

fn assert_sense(r: &ScsiResult, key: u8, asc: (u8, u8), what: &str, ietd: &Ietd) {
    assert_eq!(
        r.status,
        0x02,
        "{what}: expected CHECK CONDITION, got {:#x}\n{}",
        r.status,
        ietd.log()
    );
    assert_eq!(
        (r.sense_key(), r.asc_ascq()),
        (Some(key), Some(asc)),
        "{what}: sense {:02x?}",
        r.sense
    );
}

/// A LUN that is still served: a write and a read of it match.
fn still_served(c: &mut Conn, lun: u64, ietd: &Ietd) {
    let data = pattern(lun as u8 + 7, 4096);
    let w = c.write10(lun, 16, &data, BS).expect("WRITE(10)");
    assert_good(&w, "write to a healthy LUN", ietd);
    let r = c.read10(lun, 16, 8, BS).expect("READ(10)");
    assert_good(&r, "read of a healthy LUN", ietd);
    assert_eq!(r.data, data, "healthy LUN {lun} reads back its data");
}

fn sync_cache(c: &mut Conn, lun: u64) -> ScsiResult {
    c.scsi(lun, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .expect("SYNCHRONIZE CACHE(10)")
}

fn write10_fua(c: &mut Conn, lun: u64, lba: u32, data: &[u8]) -> ScsiResult {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[1] = 0x08;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((data.len() as u32 / BS) as u16).to_be_bytes());
    c.scsi(lun, &cdb, data, 0).expect("WRITE(10) FUA")
}

/// SBC-4 §4.7.3.6: a thin LU that cannot allocate answers DATA PROTECT,
/// SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h); what was written
/// stays readable and the other LUN is untouched.
#[test]
fn enospc_is_space_allocation_failed_and_reads_go_on() {
    enospc_is_space_allocation_failed_and_reads_go_on_with("file");
}

/// The same under the io_uring engine: its errors map to the same sense.
#[test]
fn enospc_is_space_allocation_failed_and_reads_go_on_under_io_uring() {
    enospc_is_space_allocation_failed_and_reads_go_on_with("uring");
}

fn enospc_is_space_allocation_failed_and_reads_go_on_with(engine: &str) {
    if !require_root("enospc_is_space_allocation_failed_and_reads_go_on") {
        return;
    }
    let dir = TempDir::new("faults-enospc");
    let small = Mount::tmpfs(&dir.path("small"), "1m");
    let thin = small.0.join("thin.img");
    sparse_file(&thin, 64 << 20);
    let other = dir.path("other.img");
    sparse_file(&other, 8 << 20);
    let ietd = start_engine(&dir, &[&thin, &other], engine);
    let mut c = session(&ietd, &[0, 1]);

    let chunk = 64 * 1024;
    let first = pattern(1, chunk);
    assert_good(&c.write10(0, 0, &first, BS).unwrap(), "first write", &ietd);
    let mut failed = None;
    for i in 1..64u32 {
        let lba = i * (chunk as u32 / BS);
        let r = c.write10(0, lba, &pattern(i as u8, chunk), BS).unwrap();
        if r.status != 0 {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("a 1 MiB tmpfs filled within 4 MiB of writes");
    assert_sense(
        &r,
        DATA_PROTECT,
        (0x27, 0x07),
        "write on a full filesystem",
        &ietd,
    );

    let back = c.read10(0, 0, (chunk as u32 / BS) as u16, BS).unwrap();
    assert_good(&back, "read after ENOSPC", &ietd);
    assert_eq!(
        back.data, first,
        "data written before the filesystem filled"
    );
    still_served(&mut c, 1, &ietd);
    // The session and the full LU both still answer.
    assert_good(
        &sync_cache(&mut c, 0),
        "SYNCHRONIZE CACHE on the full LU",
        &ietd,
    );
    drop(c);
    drop(ietd);
    drop(small);
}

/// EIO from the medium: UNRECOVERED READ ERROR (11h/00h) for a read and
/// WRITE ERROR (0Ch/00h) for a write, MEDIUM ERROR, for that command
/// only: the rest of the LU and the other LUN are served.
#[test]
fn eio_is_a_medium_error_for_that_command_only() {
    eio_is_a_medium_error_for_that_command_only_with("file");
}

/// The same under the io_uring engine: its errors map to the same sense.
#[test]
fn eio_is_a_medium_error_for_that_command_only_under_io_uring() {
    eio_is_a_medium_error_for_that_command_only_with("uring");
}

fn eio_is_a_medium_error_for_that_command_only_with(engine: &str) {
    if !require_root("eio_is_a_medium_error_for_that_command_only") {
        return;
    }
    let dir = TempDir::new("faults-eio");
    let fuse = FuseMount::new(&dir.0, 4 << 20, true);
    let other = dir.path("other.img");
    sparse_file(&other, 8 << 20);
    let ietd = start_engine(&dir, &[&fuse.disk(), &other], engine);
    let mut c = session(&ietd, &[0, 1]);

    let data = pattern(3, 8192);
    assert_good(
        &c.write10(0, 2048, &data, BS).unwrap(),
        "write before the fault",
        &ietd,
    );
    *fuse.faults.read_eio.lock().unwrap() = Some(1 << 20..(1 << 20) + 65536);
    *fuse.faults.write_eio.lock().unwrap() = Some(2 << 20..(2 << 20) + 65536);

    let r = c.read10(0, 2048, 16, BS).unwrap();
    assert_sense(
        &r,
        MEDIUM_ERROR,
        (0x11, 0x00),
        "read of a failing range",
        &ietd,
    );
    let w = c.write10(0, 4096, &pattern(4, 4096), BS).unwrap();
    assert_sense(
        &w,
        MEDIUM_ERROR,
        (0x0c, 0x00),
        "write to a failing range",
        &ietd,
    );

    // Elsewhere on the same LU, and on the other LUN, all is well.
    let r = c.read10(0, 0, 8, BS).unwrap();
    assert_good(&r, "read outside the failing range", &ietd);
    let w = c.write10(0, 6144, &data, BS).unwrap();
    assert_good(&w, "write outside the failing range", &ietd);
    let r = c.read10(0, 6144, 16, BS).unwrap();
    assert_good(&r, "read back outside the failing range", &ietd);
    assert_eq!(r.data, data);
    still_served(&mut c, 1, &ietd);

    // The fault goes away: the range reads again.
    *fuse.faults.read_eio.lock().unwrap() = None;
    let r = c.read10(0, 2048, 16, BS).unwrap();
    assert_good(&r, "read once the fault is gone", &ietd);
    assert_eq!(r.data, data);
    drop(c);
    drop(ietd);
    drop(fuse);
}

/// A failed fdatasync is never reported as success: SYNCHRONIZE CACHE and
/// a FUA write answer MEDIUM ERROR, WRITE ERROR while fsync fails, and
/// GOOD again once it works.
#[test]
fn a_failed_fdatasync_fails_synchronize_cache_and_fua_writes() {
    a_failed_fdatasync_fails_synchronize_cache_and_fua_writes_with("file");
}

/// The same under the io_uring engine: its errors map to the same sense.
#[test]
fn a_failed_fdatasync_fails_synchronize_cache_and_fua_writes_under_io_uring() {
    a_failed_fdatasync_fails_synchronize_cache_and_fua_writes_with("uring");
}

fn a_failed_fdatasync_fails_synchronize_cache_and_fua_writes_with(engine: &str) {
    if !require_root("a_failed_fdatasync_fails_synchronize_cache_and_fua_writes") {
        return;
    }
    let dir = TempDir::new("faults-fsync");
    let fuse = FuseMount::new(&dir.0, 4 << 20, false);
    let other = dir.path("other.img");
    sparse_file(&other, 8 << 20);
    let ietd = start_engine(&dir, &[&fuse.disk(), &other], engine);
    let mut c = session(&ietd, &[0, 1]);

    let data = pattern(5, 4096);
    assert_good(&c.write10(0, 0, &data, BS).unwrap(), "plain write", &ietd);
    assert_good(
        &sync_cache(&mut c, 0),
        "SYNCHRONIZE CACHE, fsync working",
        &ietd,
    );
    assert_good(
        &write10_fua(&mut c, 0, 8, &data),
        "FUA write, fsync working",
        &ietd,
    );

    fuse.faults.fsync_eio.store(true, Ordering::SeqCst);
    let r = sync_cache(&mut c, 0);
    assert_sense(
        &r,
        MEDIUM_ERROR,
        (0x0c, 0x00),
        "SYNCHRONIZE CACHE with failing fsync",
        &ietd,
    );
    let r = write10_fua(&mut c, 0, 16, &data);
    assert_sense(
        &r,
        MEDIUM_ERROR,
        (0x0c, 0x00),
        "FUA write with failing fsync",
        &ietd,
    );
    still_served(&mut c, 1, &ietd);
    assert_good(
        &sync_cache(&mut c, 1),
        "SYNCHRONIZE CACHE on the healthy LUN",
        &ietd,
    );

    fuse.faults.fsync_eio.store(false, Ordering::SeqCst);
    assert_good(
        &sync_cache(&mut c, 0),
        "SYNCHRONIZE CACHE once fsync works",
        &ietd,
    );
    assert_good(
        &write10_fua(&mut c, 0, 16, &data),
        "FUA write once fsync works",
        &ietd,
    );
    drop(c);
    drop(ietd);
    drop(fuse);
}

/// A store that goes away (its FUSE connection aborted, as a device that
/// is removed) fails its commands with HARDWARE ERROR, INTERNAL TARGET
/// FAILURE; a deleted backing file keeps serving (the open file lives on);
/// the other LUN, and new sessions, are served throughout.
#[test]
fn a_store_that_goes_away_leaves_the_other_luns_served() {
    if !require_root("a_store_that_goes_away_leaves_the_other_luns_served") {
        return;
    }
    let dir = TempDir::new("faults-gone");
    let fuse = FuseMount::new(&dir.0, 4 << 20, true);
    let deleted = dir.path("deleted.img");
    sparse_file(&deleted, 8 << 20);
    let other = dir.path("other.img");
    sparse_file(&other, 8 << 20);
    let ietd = start(&dir, &[&fuse.disk(), &deleted, &other]);
    let mut c = session(&ietd, &[0, 1, 2]);
    still_served(&mut c, 0, &ietd);

    std::fs::remove_file(&deleted).expect("delete a served backing file");
    still_served(&mut c, 1, &ietd);

    fuse.abort();
    let r = c.read10(0, 0, 8, BS).unwrap();
    assert_sense(
        &r,
        HARDWARE_ERROR,
        (0x44, 0x00),
        "read of a vanished store",
        &ietd,
    );
    let w = c.write10(0, 0, &pattern(9, 4096), BS).unwrap();
    assert_sense(
        &w,
        HARDWARE_ERROR,
        (0x44, 0x00),
        "write to a vanished store",
        &ietd,
    );
    still_served(&mut c, 2, &ietd);
    still_served(&mut c, 1, &ietd);

    // A new session logs in and is served too.
    let mut c2 = session(&ietd, &[2]);
    still_served(&mut c2, 2, &ietd);
    drop(c2);
    drop(c);
    drop(ietd);
    drop(fuse);
}
