//! What must survive ietd going away: writes acknowledged with FUA or
//! followed by SYNCHRONIZE CACHE, and persistent reservations registered
//! with APTPL, across a crash (SIGKILL) and restart of the real binary.

use std::net::SocketAddr;

use iet_tests::initiator::{Conn, LoginOptions, ScsiResult};
use iet_tests::inprocess::free_port;
use iet_tests::process::{Ietd, TempDir};

const IQN: &str = "iqn.2026-11.io.iet:durable";
const BS: u32 = 512;
const KEY: u64 = 0x1122_3344_5566_7788;

fn session(ietd: &Ietd) -> Conn {
    let mut c = Conn::connect(ietd.portal).expect("connect");
    c.login(&LoginOptions::normal(IQN))
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    c.clear_unit_attention(0).expect("TEST UNIT READY");
    c
}

fn pr_out(
    c: &mut Conn,
    service_action: u8,
    pr_type: u8,
    key: u64,
    sa_key: u64,
    aptpl: bool,
) -> ScsiResult {
    let mut param = [0u8; 24];
    param[0..8].copy_from_slice(&key.to_be_bytes());
    param[8..16].copy_from_slice(&sa_key.to_be_bytes());
    param[20] = u8::from(aptpl);
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5f;
    cdb[1] = service_action;
    cdb[2] = pr_type;
    cdb[8] = 24;
    c.scsi(0, &cdb, &param, 0).expect("PERSISTENT RESERVE OUT")
}

fn pr_in(c: &mut Conn, service_action: u8) -> Vec<u8> {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x5e;
    cdb[1] = service_action;
    cdb[8] = 255;
    let r = c.scsi(0, &cdb, &[], 255).expect("PERSISTENT RESERVE IN");
    assert_eq!(r.status, 0, "PRIN sense {:02x?}", r.sense);
    r.data
}

#[test]
fn fua_writes_and_aptpl_reservations_survive_a_crash() {
    let dir = TempDir::new("durable");
    let image = dir.path("lun.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let state = dir.path("state");
    let args = [
        "--portal",
        &portal.to_string(),
        "--target",
        IQN,
        "--lun",
        image.to_str().unwrap(),
        "--ebpf",
        "off",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let pattern: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 241) as u8).collect();
    {
        let ietd = Ietd::start(&dir, portal, &args);
        let mut c = session(&ietd);
        // WRITE(10) with FUA.
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[1] = 0x08;
        cdb[5] = 16;
        cdb[8] = 128;
        assert_eq!(c.scsi(0, &cdb, &pattern, 0).unwrap().status, 0, "FUA write");
        // A plain write made durable by SYNCHRONIZE CACHE(10).
        assert_eq!(c.write10(0, 1000, &pattern[..4096], BS).unwrap().status, 0);
        let mut sync = [0u8; 10];
        sync[0] = 0x35;
        assert_eq!(
            c.scsi(0, &sync, &[], 0).unwrap().status,
            0,
            "SYNCHRONIZE CACHE"
        );
        // REGISTER with APTPL, then RESERVE (Write Exclusive).
        let r = pr_out(&mut c, 0x00, 0, 0, KEY, true);
        assert_eq!(r.status, 0, "REGISTER sense {:02x?}", r.sense);
        let r = pr_out(&mut c, 0x01, 0x01, KEY, 0, false);
        assert_eq!(r.status, 0, "RESERVE sense {:02x?}", r.sense);
        // Crash: no chance to flush or log out.
        let mut ietd = ietd;
        ietd.child.kill().unwrap();
        ietd.child.wait().unwrap();
    }
    let ietd = Ietd::start(&dir, portal, &args);
    let mut c = session(&ietd);
    let r = c.read10(0, 16, 128, BS).unwrap();
    assert!(r.data == pattern, "the FUA write survived");
    let r = c.read10(0, 1000, 8, BS).unwrap();
    assert!(
        r.data[..] == pattern[..4096],
        "the synchronized write survived"
    );
    let keys = pr_in(&mut c, 0x00);
    let listed = u32::from_be_bytes([keys[4], keys[5], keys[6], keys[7]]) as usize;
    assert_eq!(listed, 8, "one registration survived");
    assert_eq!(&keys[8..16], &KEY.to_be_bytes(), "with its key");
    let resv = pr_in(&mut c, 0x01);
    assert_eq!(
        u32::from_be_bytes([resv[4], resv[5], resv[6], resv[7]]),
        16,
        "a reservation is held"
    );
    assert_eq!(&resv[8..16], &KEY.to_be_bytes(), "by the registered key");
    assert_eq!(resv[21] & 0x0f, 0x01, "type Write Exclusive");
}
