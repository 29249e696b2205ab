//! WRITE AND VERIFY and VERIFY compare with what the store kept, not with a buffer or
//! the page cache: the real ietd serves FUSE files (this process serves them) that throw
//! away writes to one range, or read one byte back inverted, one file opened with direct
//! I/O and one through the page cache. Needs root (mounts); in CI it must run.

use std::net::SocketAddr;
use std::path::Path;

use iet_tests::initiator::{Conn, LoginOptions, ScsiResult};
use iet_tests::inprocess::free_port;
use iet_tests::mounts::FuseMount;
use iet_tests::process::{Ietd, TempDir, require_root};

const IQN: &str = "iqn.2026-12.io.iet:write-verify";
const BS: u32 = 512;
const MISCOMPARE: u8 = 0x0e;
/// MISCOMPARE DURING VERIFY OPERATION (SBC-4 §5.45).
const MISCOMPARE_DURING_VERIFY: (u8, u8) = (0x1d, 0x00);

fn start(dir: &TempDir, luns: &[&Path]) -> Ietd {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let portal_s = portal.to_string();
    let mut args = vec!["--portal", &portal_s, "--target", IQN, "--ebpf", "off"];
    for l in luns {
        args.push("--lun");
        args.push(l.to_str().expect("utf-8 path"));
    }
    Ietd::start(dir, portal, &args)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// WRITE AND VERIFY(10) with BYTCHK 01b.
fn write_and_verify10(c: &mut Conn, lun: u64, lba: u32, data: &[u8]) -> ScsiResult {
    let mut cdb = [0x2e, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((data.len() as u32 / BS) as u16).to_be_bytes());
    c.scsi(lun, &cdb, data, 0).expect("WRITE AND VERIFY(10)")
}

/// WRITE AND VERIFY(16) (opcode 8Eh) or VERIFY(16) (8Fh), BYTCHK 01b.
fn cdb16(opcode: u8, c: &mut Conn, lun: u64, lba: u64, data: &[u8]) -> ScsiResult {
    let mut cdb = [0u8; 16];
    cdb[0] = opcode;
    cdb[1] = 0x02;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&(data.len() as u32 / BS).to_be_bytes());
    c.scsi(lun, &cdb, data, 0)
        .expect("WRITE AND VERIFY(16) / VERIFY(16)")
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

/// CHECK CONDITION, MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION, with INFORMATION
/// (valid) the offset of the first differing byte in the Data-Out buffer.
fn assert_miscompare(r: &ScsiResult, at: u32, what: &str, ietd: &Ietd) {
    assert_eq!(
        r.status,
        0x02,
        "{what}: expected CHECK CONDITION, got {:#x}\n{}",
        r.status,
        ietd.log()
    );
    assert_eq!(
        (r.sense_key(), r.asc_ascq()),
        (Some(MISCOMPARE), Some(MISCOMPARE_DURING_VERIFY)),
        "{what}: sense {:02x?}",
        r.sense
    );
    assert_eq!(r.sense[0] & 0x80, 0x80, "{what}: INFORMATION is valid");
    assert_eq!(
        r.sense[3..7],
        at.to_be_bytes(),
        "{what}: INFORMATION {:02x?}",
        r.sense
    );
}

/// One LUN on a lying FUSE file: a WRITE AND VERIFY into a range whose writes the store
/// drops miscompares where the kept data begins; elsewhere it succeeds; a byte the store
/// returns inverted miscompares WRITE AND VERIFY and VERIFY at that byte.
fn lying_store_miscompares(c: &mut Conn, lun: u64, fuse: &FuseMount, ietd: &Ietd) {
    let what = |s: &str| format!("LUN {lun}: {s}");
    // Blocks 128..136 (64 KiB) hold `old`; then the store stops keeping bytes 1000.. of it.
    let base = 128u32 * BS;
    let old = pattern(1, 4096);
    let w = c.write10(lun, 128, &old, BS).expect("WRITE(10)");
    assert_good(&w, &what("write before the fault"), ietd);
    *fuse.faults.drop_writes.lock().unwrap() = Some(u64::from(base) + 1000..u64::from(base) + 4096);
    // Every byte of `new` differs from `old`: the store keeps new[..1000], old[1000..].
    let new = pattern(2, 4096);
    let r = write_and_verify10(c, lun, 128, &new);
    assert_miscompare(
        &r,
        1000,
        &what("WRITE AND VERIFY(10) into dropped writes"),
        ietd,
    );
    // A normal WRITE AND VERIFY on another range succeeds, and reads back.
    let data = pattern(3, 8192);
    let r = cdb16(0x8e, c, lun, 1024, &data);
    assert_good(&r, &what("WRITE AND VERIFY(16) elsewhere"), ietd);
    let back = c.read10(lun, 1024, 16, BS).expect("READ(10)");
    assert_good(&back, &what("read back"), ietd);
    assert_eq!(back.data, data, "{}", what("what WRITE AND VERIFY wrote"));
    *fuse.faults.drop_writes.lock().unwrap() = None;
    let r = write_and_verify10(c, lun, 128, &new);
    assert_good(&r, &what("WRITE AND VERIFY(10) once writes are kept"), ietd);

    // The store returns byte 77 of blocks 6144.. inverted.
    let flip_base = 6144u64 * u64::from(BS);
    *fuse.faults.flip_on_read.lock().unwrap() = Some(flip_base + 77);
    let data = pattern(4, 4096);
    let r = cdb16(0x8e, c, lun, 6144, &data);
    assert_miscompare(
        &r,
        77,
        &what("WRITE AND VERIFY(16) of a flipping byte"),
        ietd,
    );
    let r = cdb16(0x8f, c, lun, 6144, &data);
    assert_miscompare(&r, 77, &what("VERIFY(16) of a flipping byte"), ietd);
    *fuse.faults.flip_on_read.lock().unwrap() = None;
    let r = cdb16(0x8f, c, lun, 6144, &data);
    assert_good(&r, &what("VERIFY(16) once the byte reads true"), ietd);
}

#[test]
fn write_and_verify_miscompares_what_the_store_did_not_keep() {
    if !require_root("write_and_verify_miscompares_what_the_store_did_not_keep") {
        return;
    }
    let dir = TempDir::new("write-verify");
    // LUN 0 bypasses the page cache (FOPEN_DIRECT_IO); LUN 1 goes through it, where the
    // written pages would show the data the store dropped unless the read-back skips them.
    let direct = FuseMount::new(&dir.path("direct"), 4 << 20, true);
    let cached = FuseMount::new(&dir.path("cached"), 4 << 20, false);
    let ietd = start(&dir, &[&direct.disk(), &cached.disk()]);
    let mut c = Conn::connect(ietd.portal).expect("connect");
    c.login(&LoginOptions::normal(IQN))
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    for lun in [0, 1] {
        c.clear_unit_attention(lun).expect("TEST UNIT READY");
    }
    lying_store_miscompares(&mut c, 0, &direct, &ietd);
    lying_store_miscompares(&mut c, 1, &cached, &ietd);
    drop(c);
    drop(ietd);
    drop(direct);
    drop(cached);
}
