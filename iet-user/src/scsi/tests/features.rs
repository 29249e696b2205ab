//! Issue 16's SCSI features through `LogicalUnits::execute`: EXTENDED COPY and RECEIVE
//! COPY RESULTS across LUs, WRITE ATOMIC(16), WRITE AND VERIFY and VERIFY with BYTCHK,
//! FORMAT UNIT, and REPORT SUPPORTED OPERATION CODES' reporting options.

use super::*;
use crate::scsi::lun::naa_designator;

const DEVICE_ID_1: u64 = 0x1111_2222_3333_4444;

fn two_luns() -> Rig {
    let rig = Rig::new();
    let mut cfg = mem_lun(4 << 20);
    cfg.device_id = DEVICE_ID_1;
    rig.units.add_lun(1, cfg).expect("add lun 1");
    // Adding LUN 1 raised REPORTED LUNS DATA HAS CHANGED on LUN 0.
    rig.clear_ua(&rig.a);
    rig.clear_ua(&rig.b);
    for lun in [0, 1] {
        for _ in 0..4 {
            if rig.cmd_lun(&rig.a, lun, &TUR, &[]).0.status == ScsiStatus::Good {
                break;
            }
        }
    }
    rig
}

/// An identification CSCD descriptor (E4h) naming `device_id` by NAA, 512-byte blocks.
fn ident_desc(device_id: u64) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0] = 0xe4;
    d[4] = 0x01; // binary
    d[5] = 0x03; // NAA, LU association
    d[7] = 16;
    d[8..24].copy_from_slice(&naa_designator(device_id));
    d[29..32].copy_from_slice(&[0, 2, 0]);
    d
}

/// A block-to-block segment descriptor (02h).
fn b2b(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; 28];
    d[0] = 0x02;
    d[2..4].copy_from_slice(&0x18u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn xcopy(list_id: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> ([u8; 16], Vec<u8>) {
    let tgt: Vec<u8> = targets.concat();
    let seg: Vec<u8> = segments.concat();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[2..4].copy_from_slice(&(tgt.len() as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(seg.len() as u32).to_be_bytes());
    p.extend_from_slice(&tgt);
    p.extend_from_slice(&seg);
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(p.len() as u32).to_be_bytes());
    (cdb, p)
}

fn rcr(sa: u8, list_id: u8) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x84;
    cdb[1] = sa;
    cdb[2] = list_id;
    cdb[10..14].copy_from_slice(&1024u32.to_be_bytes());
    cdb
}

fn write16_cdb(opcode: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = opcode;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn extended_copy_moves_blocks_between_luns_and_reports_status() {
    let rig = two_luns();
    let data: Vec<u8> = (0..4 * 512u32).map(|i| (i % 251) as u8).collect();
    rig.ok(&rig.a, &write10(8, 4, false), &data);
    let (cdb, p) = xcopy(
        7,
        &[ident_desc(0x0123_4567_89ab_cdef), ident_desc(DEVICE_ID_1)],
        &[b2b(0, 1, 4, 8, 100)],
    );
    rig.ok(&rig.a, &cdb, &p);
    let (o, copied) = rig.cmd_lun(&rig.a, 1, &read10(100, 4), &[]);
    assert_eq!(o.status, ScsiStatus::Good);
    assert_eq!(copied, data);
    // COPY STATUS(LID1) once, then no longer held.
    let d = rig.ok(&rig.a, &rcr(0x00, 7), &[]);
    assert_eq!(&d[..12], &[0, 0, 0, 8, 0, 0, 1, 0, 0, 0, 0x08, 0]);
    assert_eq!(rig.check(&rig.a, &rcr(0x00, 7), &[]), INVALID_FIELD);
    // Another nexus never sees this nexus's list.
    let (cdb, p) = xcopy(
        8,
        &[ident_desc(0x0123_4567_89ab_cdef)],
        &[b2b(0, 0, 1, 0, 1)],
    );
    rig.ok(&rig.a, &cdb, &p);
    assert_eq!(rig.check(&rig.b, &rcr(0x00, 8), &[]), INVALID_FIELD);
    // OPERATING PARAMETERS: limits and the two implemented descriptor types.
    let d = rig.ok(&rig.a, &rcr(0x03, 0), &[]);
    assert_eq!(&d[8..12], &[0, 8, 0, 16]);
    assert_eq!(d[43], 2);
    assert_eq!(&d[44..46], &[0x02, 0xe4]);
}

#[test]
fn extended_copy_within_one_lun_overlapping_forward() {
    let rig = Rig::new();
    let data: Vec<u8> = (0..8 * 512u32).map(|i| (i / 512) as u8 + 1).collect();
    rig.ok(&rig.a, &write10(0, 8, false), &data);
    let (cdb, p) = xcopy(
        1,
        &[ident_desc(0x0123_4567_89ab_cdef)],
        &[b2b(0, 0, 6, 0, 2)],
    );
    rig.ok(&rig.a, &cdb, &p);
    let d = rig.ok(&rig.a, &read10(2, 6), &[]);
    assert_eq!(d, data[..6 * 512]);
}

#[test]
fn extended_copy_errors() {
    let rig = two_luns();
    let me = ident_desc(0x0123_4567_89ab_cdef);
    // Unknown NAA: the CSCD is not reachable.
    let (cdb, p) = xcopy(1, &[ident_desc(0xdead)], &[b2b(0, 0, 1, 0, 1)]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (0x0a, 0x0d, 0x02));
    // A segment naming a descriptor index past the list.
    let (cdb, p) = xcopy(1, std::slice::from_ref(&me), &[b2b(0, 1, 1, 0, 1)]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (0x0a, 0x08, 0x04));
    // Beyond the end of the destination.
    let (cdb, p) = xcopy(1, std::slice::from_ref(&me), &[b2b(0, 0, 2, 0, 8191)]);
    assert_eq!(rig.check(&rig.a, &cdb, &p).0, 0x0a);
    // Unsupported descriptor types.
    let mut fc = me.clone();
    fc[0] = 0xe0;
    let (cdb, p) = xcopy(1, &[fc], &[b2b(0, 0, 1, 0, 1)]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (5, 0x26, 0x07));
    let mut stream = b2b(0, 0, 1, 0, 1);
    stream[0] = 0x09;
    let (cdb, p) = xcopy(1, std::slice::from_ref(&me), &[stream]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (5, 0x26, 0x09));
    // Too many descriptors, and a truncated list.
    let (cdb, p) = xcopy(1, &vec![me.clone(); 9], &[b2b(0, 0, 1, 0, 1)]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (5, 0x26, 0x06));
    let (cdb, p) = xcopy(1, std::slice::from_ref(&me), &vec![b2b(0, 0, 1, 0, 1); 17]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (5, 0x26, 0x08));
    let (mut cdb, p) = xcopy(1, std::slice::from_ref(&me), &[b2b(0, 0, 1, 0, 1)]);
    cdb[13] -= 1;
    assert_eq!(rig.check(&rig.a, &cdb, &p[..p.len() - 1]), (5, 0x1a, 0));
    // PARAMETER LIST LENGTH zero copies nothing.
    let mut empty = [0u8; 16];
    empty[0] = 0x83;
    rig.ok(&rig.a, &empty, &[]);
    // A write-protected destination.
    rig.units.set_read_only(1, true).expect("read-only");
    for _ in 0..3 {
        rig.cmd_lun(&rig.a, 1, &TUR, &[]);
    }
    let (cdb, p) = xcopy(1, &[me, ident_desc(DEVICE_ID_1)], &[b2b(0, 1, 1, 0, 1)]);
    assert_eq!(rig.check(&rig.a, &cdb, &p), (7, 0x27, 0));
}

#[test]
fn write_atomic_16() {
    let rig = Rig::new();
    let data = vec![0x5au8; 3 * 512];
    rig.ok(&rig.a, &atomic16(10, 3, 0), &data);
    assert_eq!(rig.ok(&rig.a, &read10(10, 3), &[]), data);
    // WRPROTECT without protection information, a non-zero ATOMIC BOUNDARY.
    assert_eq!(
        rig.check(&rig.a, &atomic16(10, 3, 0x20), &data),
        INVALID_FIELD
    );
    let mut c = atomic16(10, 3, 0);
    c[11] = 1;
    assert_eq!(rig.check(&rig.a, &c, &data), INVALID_FIELD);
    // Beyond the end, and short Data-Out (nothing is written).
    assert_eq!(rig.check(&rig.a, &atomic16(8191, 2, 0), &data), LBA_OOR);
    assert_eq!(
        rig.check(&rig.a, &atomic16(20, 3, 0), &data[..1024]),
        (5, 0x0e, 0x03)
    );
    assert_eq!(rig.ok(&rig.a, &read10(20, 3), &[]), vec![0u8; 3 * 512]);
    // Block Limits VPD: MAXIMUM ATOMIC TRANSFER LENGTH is the maximum transfer length.
    let d = rig.ok(&rig.a, &[0x12, 1, 0xb0, 0, 0xff, 0], &[]);
    assert_eq!(&d[44..48], &d[8..12]);
    assert_eq!(&d[48..64], &[0; 16]);
}

fn atomic16(lba: u64, blocks: u16, byte1: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9c;
    c[1] = byte1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[12..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A medium that acknowledges writes and keeps none (what a failing disk does).
#[derive(Debug)]
struct LosesWrites(MemoryBackend);

impl BlockBackend for LosesWrites {
    fn describe(&self) -> String {
        "loses-writes".into()
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), crate::backend::BackendError> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, _: &[u8], _: u64, _: bool) -> Result<(), crate::backend::BackendError> {
        Ok(())
    }
    fn flush(&self) -> Result<(), crate::backend::BackendError> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> Result<(), crate::backend::BackendError> {
        Ok(())
    }
    fn supports_discard(&self) -> bool {
        false
    }
}

#[test]
fn write_and_verify_compares_what_the_medium_holds() {
    let rig = Rig::new();
    let mut data = vec![0u8; 2 * 512];
    data[700] = 9;
    // WRITE AND VERIFY(10), BYTCHK 01b: written and read back equal.
    let mut wav = write10(4, 2, false);
    wav[0] = 0x2e;
    wav[1] = 0x02;
    rig.ok(&rig.a, &wav, &data);
    assert_eq!(rig.ok(&rig.a, &read10(4, 2), &[]), data);
    // BYTCHK 1xb is reserved.
    wav[1] = 0x04;
    assert_eq!(rig.check(&rig.a, &wav, &data), INVALID_FIELD);
    // VERIFY(10) BYTCHK 01b against different data: MISCOMPARE at the byte's offset.
    let mut verify = read10(4, 2);
    verify[0] = 0x2f;
    verify[1] = 0x02;
    rig.ok(&rig.a, &verify, &data);
    let mut other = data.clone();
    other[513] = 1;
    let (o, _) = rig.cmd(&rig.a, &verify, &other);
    let sense = o.sense.expect("sense");
    assert_eq!(sense_code(&sense), (0x0e, 0x1d, 0));
    assert_eq!(&sense[3..7], &513u32.to_be_bytes());
    // A medium that loses the write: WRITE AND VERIFY reports the miscompare.
    let lossy = Rig::with(LunConfig::new(
        Arc::new(LosesWrites(MemoryBackend::new(1 << 20))),
        "SN0002",
        2,
    ));
    let mut wav = write16_cdb(0x8e, 3, 2);
    wav[1] = 0x02;
    let (o, _) = lossy.cmd(&lossy.a, &wav, &data);
    let sense = o.sense.expect("sense");
    assert_eq!(sense_code(&sense), (0x0e, 0x1d, 0));
    assert_eq!(&sense[3..7], &700u32.to_be_bytes());
    // Without BYTCHK nothing is compared.
    wav[1] = 0;
    lossy.ok(&lossy.a, &wav, &data);
}

#[test]
fn format_unit_without_defect_lists() {
    let rig = Rig::new();
    rig.ok(&rig.a, &write10(0, 1, false), &[0xffu8; 512]);
    // FMTDATA 0: default format, the medium reads as zeros.
    rig.ok(&rig.a, &[0x04, 0, 0, 0, 0, 0], &[]);
    assert_eq!(rig.ok(&rig.a, &read10(0, 1), &[]), vec![0u8; 512]);
    // FMTPINFO needs protection information.
    assert_eq!(
        rig.check(&rig.a, &[0x04, 0x80, 0, 0, 0, 0], &[]),
        INVALID_FIELD
    );
    // A short header with an initialization pattern (FOV, IP; type 01h "repeat").
    let mut p = vec![0, 0x88, 0, 0];
    p.extend_from_slice(&[0, 0x01, 0, 2, 0xab, 0xcd]);
    rig.ok(&rig.a, &[0x04, 0x10, 0, 0, 0, 0], &p);
    let d = rig.ok(&rig.a, &read10(100, 1), &[]);
    assert!(d.chunks(2).all(|c| c == [0xab, 0xcd]));
    // A defect list, or IP without FOV: INVALID FIELD IN PARAMETER LIST.
    assert_eq!(
        rig.check(&rig.a, &[0x04, 0x10, 0, 0, 0, 0], &[0, 0, 0, 8]),
        (5, 0x26, 0)
    );
    assert_eq!(
        rig.check(&rig.a, &[0x04, 0x10, 0, 0, 0, 0], &[0, 0x08, 0, 0]),
        (5, 0x26, 0)
    );
}

#[test]
fn report_supported_opcodes_one_command_options() {
    let rig = Rig::new();
    let rsoc = |options: u8, opcode: u8, sa: u16| {
        let mut c = [0u8; 12];
        c[0] = 0xa3;
        c[1] = 0x0c;
        c[2] = options;
        c[3] = opcode;
        c[4..6].copy_from_slice(&sa.to_be_bytes());
        c[6..10].copy_from_slice(&512u32.to_be_bytes());
        c
    };
    // Option 010b for an opcode without service actions (TEST UNIT READY) fails with a
    // field pointer at REPORTING OPTIONS (SPC-5 §6.35.1).
    let (o, _) = rig.cmd(&rig.a, &rsoc(2, 0x00, 0), &[]);
    let s = o.sense.expect("sense");
    assert_eq!(sense_code(&s), INVALID_FIELD);
    assert_eq!(&s[15..18], &[0xca, 0, 2]);
    // Option 001b for one with service actions fails the same way.
    let (o, _) = rig.cmd(&rig.a, &rsoc(1, 0x9e, 0), &[]);
    assert_eq!(&o.sense.expect("sense")[15..18], &[0xca, 0, 2]);
    // The new commands are reported.
    let d = rig.ok(&rig.a, &rsoc(2, 0x83, 0), &[]);
    assert_eq!(d[1] & 0x07, 0x03);
    let d = rig.ok(&rig.a, &rsoc(1, 0x9c, 0), &[]);
    assert_eq!((d[1] & 0x07, d[4], d[5] & 0x18), (0x03, 0x9c, 0x18));
    let d = rig.ok(&rig.a, &rsoc(1, 0x04, 0), &[]);
    assert_eq!(d[1] & 0x07, 0x03);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    /// EXTENDED COPY parameter lists with a plausible header and random descriptors.
    #[test]
    fn random_copy_parameter_lists_never_panic(
        tgt_len in 0u16..120,
        seg_len in 0u32..120,
        body in proptest::collection::vec(any::<u8>(), 0..260),
        first in proptest::sample::select(vec![0x02u8, 0xe4, 0x09, 0xe0]),
    ) {
        let rig = Rig::new();
        let mut p = vec![0u8; 16];
        p[2..4].copy_from_slice(&tgt_len.to_be_bytes());
        p[8..12].copy_from_slice(&seg_len.to_be_bytes());
        p.push(first);
        p.extend_from_slice(&body);
        let mut cdb = [0u8; 16];
        cdb[0] = 0x83;
        cdb[10..14].copy_from_slice(&(p.len() as u32).to_be_bytes());
        let _ = rig.cmd(&rig.a, &cdb, &p);
    }

    /// REGISTER with SPEC_I_PT and random TransportID data.
    #[test]
    fn random_spec_i_pt_lists_never_panic(
        tids in proptest::collection::vec(any::<u8>(), 0..200),
        claimed in 0u32..300,
        flags in 0u8..16,
    ) {
        let rig = Rig::new();
        let mut p = vec![0u8; 28];
        p[8..16].copy_from_slice(&5u64.to_be_bytes());
        p[20] = flags;
        p[24..28].copy_from_slice(&claimed.to_be_bytes());
        p.extend_from_slice(&tids);
        let mut cdb = [0x5f, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
        let _ = rig.cmd(&rig.a, &cdb, &p);
    }
}
