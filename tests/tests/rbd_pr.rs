//! Persistent reservations shared through the cluster: two real ietd gateways of one RBD
//! image on a real one-node Ceph cluster (started and stopped by PID). A reservation taken
//! through gateway A conflicts writes through gateway B, PREEMPT and RELEASE through one are
//! seen through the other with their unit attentions, an APTPL state survives a restart of
//! both gateways, and one saved without APTPL is gone after it. Without Ceph it skips,
//! except in CI.

use std::time::Instant;

use iet_tests::ceph::{self, IMAGE};
use iet_tests::gateways::{
    self, BS, RESERVATION_CONFLICT, pr_out, read_keys, read_reservation, write_fua,
};
use iet_tests::initiator::Conn;
use iet_tests::process::{Ietd, TempDir};

const IQN: &str = "iqn.2026-12.io.iet:shared-pr";
const X: &str = "iqn.2026-12.io.iet:host-x";
const Y: &str = "iqn.2026-12.io.iet:host-y";
const KEY_X: u64 = 0x1111_0000_0000_0001;
const KEY_Y: u64 = 0x2222_0000_0000_0002;

/// PERSISTENT RESERVE OUT service actions (SPC-5 table 240) and types (table 231).
const REGISTER: u8 = 0x00;
const RESERVE: u8 = 0x01;
const RELEASE: u8 = 0x02;
const PREEMPT: u8 = 0x04;
const REGISTER_AND_IGNORE: u8 = 0x06;
const WRITE_EXCLUSIVE: u8 = 0x1;
const WRITE_EXCLUSIVE_RO: u8 = 0x5;
const APTPL: u8 = 0x01;

fn write(c: &mut Conn, lba: u32) -> u8 {
    let data = vec![lba as u8; BS as usize];
    write_fua(c, lba, &data).expect("WRITE(10)").status
}

fn read(c: &mut Conn, lba: u32) -> u8 {
    c.read10(0, lba, 1, BS).expect("READ(10)").status
}

fn good(r: &iet_tests::initiator::ScsiResult, what: &str) {
    assert_eq!(r.status, 0, "{what}: {r:?}");
}

/// The target port name (SCSI name string designator, target port association) of VPD 83h.
fn target_port_name(c: &mut Conn) -> String {
    let r = c
        .scsi(0, &[0x12, 1, 0x83, 0x01, 0, 0], &[], 256)
        .expect("VPD 83h");
    let body = &r.data[4..];
    let mut at = 0;
    while at + 4 <= body.len() {
        let len = usize::from(body[at + 3]);
        if body[at + 1] == 0x98 {
            let name = &body[at + 4..at + 4 + len];
            return String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned();
        }
        at += 4 + len;
    }
    panic!("no target port name in VPD 83h: {:02x?}", r.data);
}

struct Gateways {
    a: Ietd,
    b: Ietd,
}

fn start_both(dirs: &(TempDir, TempDir), spec: &str) -> Gateways {
    Gateways {
        a: gateways::start(&dirs.0, IQN, spec),
        b: gateways::start(&dirs.1, IQN, spec),
    }
}

fn stop_both(g: &mut Gateways) {
    assert!(g.a.stop(), "gateway A exits cleanly:\n{}", g.a.log());
    assert!(g.b.stop(), "gateway B exits cleanly:\n{}", g.b.log());
}

#[test]
fn reservations_shared_by_two_gateways() {
    let t0 = Instant::now();
    let Some(cluster) = ceph::start_for_test("rbd-pr") else {
        return;
    };
    let spec = cluster.lun_spec(IMAGE);
    let dirs = (TempDir::new("pr-a"), TempDir::new("pr-b"));
    let mut g = start_both(&dirs, &spec);
    let mut xa = gateways::session(&g.a, IQN, X, 1);
    let mut xb = gateways::session(&g.b, IQN, X, 1);
    let mut yb = gateways::session(&g.b, IQN, Y, 1);

    // Both gateways name their target port `<IQN>,t,0x0001` (iet's TPGT is 1 on every
    // gateway), so SPC-5's I_T nexus of X through B is X's nexus through A: same initiator
    // port, same target port name. X with another ISID through B is a different nexus.
    let port_a = target_port_name(&mut xa);
    assert_eq!(port_a, target_port_name(&mut xb), "target port names");
    assert_eq!(port_a, format!("{IQN},t,0x0001"));
    let mut x2b = gateways::session(&g.b, IQN, X, 2);

    // X registers through A; Y through B sees the key, and registers too.
    good(
        &pr_out(&mut xa, REGISTER, 0, 0, KEY_X, 0),
        "X registers via A",
    );
    assert_eq!(read_keys(&mut yb), vec![KEY_X], "B sees A's registration");
    good(
        &pr_out(&mut yb, REGISTER, 0, 0, KEY_Y, 0),
        "Y registers via B",
    );
    assert_eq!(read_keys(&mut xa), vec![KEY_X, KEY_Y], "A sees B's");

    // WRITE EXCLUSIVE through A: writes of everyone else through B conflict, reads do not.
    good(
        &pr_out(&mut xa, RESERVE, WRITE_EXCLUSIVE, KEY_X, 0, 0),
        "X reserves via A",
    );
    assert_eq!(
        read_reservation(&mut yb),
        Some((KEY_X, WRITE_EXCLUSIVE)),
        "B reports A's reservation"
    );
    assert_eq!(write(&mut yb, 10), RESERVATION_CONFLICT, "Y's write via B");
    assert_eq!(read(&mut yb, 10), 0, "Y's read via B");
    assert_eq!(
        write(&mut x2b, 11),
        RESERVATION_CONFLICT,
        "X's other initiator port via B (not registered)"
    );
    assert_eq!(read(&mut x2b, 11), 0, "X's other port reads via B");
    assert_eq!(write(&mut xb, 12), 0, "X's same nexus via B holds it");
    assert_eq!(write(&mut xa, 13), 0, "the holder writes via A");

    // RELEASE through A lets Y write through B (WRITE EXCLUSIVE: no unit attention).
    good(
        &pr_out(&mut xa, RELEASE, WRITE_EXCLUSIVE, KEY_X, 0, 0),
        "X releases via A",
    );
    assert_eq!(read_reservation(&mut yb), None);
    assert_eq!(write(&mut yb, 14), 0, "Y writes via B after the release");

    // A registrants-only reservation released through A: Y through B hears RESERVATIONS
    // RELEASED (SPC-5 §5.13.11.2.2) on its next command.
    good(
        &pr_out(&mut xa, RESERVE, WRITE_EXCLUSIVE_RO, KEY_X, 0, 0),
        "X reserves registrants-only via A",
    );
    assert_eq!(write(&mut yb, 15), 0, "registered Y writes via B");
    assert_eq!(write(&mut x2b, 15), RESERVATION_CONFLICT, "unregistered");
    good(
        &pr_out(&mut xa, RELEASE, WRITE_EXCLUSIVE_RO, KEY_X, 0, 0),
        "X releases via A",
    );
    let seen = yb.clear_unit_attention(0).expect("TEST UNIT READY via B");
    assert!(
        seen.contains(&(0x2a, 0x04)),
        "RESERVATIONS RELEASED reaches Y through B: {seen:02x?}"
    );

    // PREEMPT by Y through B: X through A hears REGISTRATIONS PREEMPTED and conflicts.
    good(
        &pr_out(&mut xa, RESERVE, WRITE_EXCLUSIVE, KEY_X, 0, 0),
        "X reserves again via A",
    );
    good(
        &pr_out(&mut yb, PREEMPT, WRITE_EXCLUSIVE, KEY_Y, KEY_X, 0),
        "Y preempts X via B",
    );
    let seen = xa.clear_unit_attention(0).expect("TEST UNIT READY via A");
    assert!(
        seen.contains(&(0x2a, 0x05)),
        "REGISTRATIONS PREEMPTED reaches X through A: {seen:02x?}"
    );
    assert_eq!(write(&mut xa, 16), RESERVATION_CONFLICT, "X via A after");
    assert_eq!(read_keys(&mut xa), vec![KEY_Y], "X's key is gone");
    assert_eq!(read_reservation(&mut xa), Some((KEY_Y, WRITE_EXCLUSIVE)));
    assert_eq!(write(&mut yb, 16), 0, "the new holder writes via B");

    // APTPL: the state survives a restart of both gateways.
    good(
        &pr_out(&mut yb, REGISTER_AND_IGNORE, 0, 0, KEY_Y, APTPL),
        "Y sets APTPL via B",
    );
    drop((xa, xb, x2b, yb));
    stop_both(&mut g);
    let mut g = start_both(&dirs, &spec);
    let mut xa = gateways::session(&g.a, IQN, X, 1);
    let mut yb = gateways::session(&g.b, IQN, Y, 1);
    assert_eq!(read_keys(&mut xa), vec![KEY_Y], "keys after the restart");
    assert_eq!(
        read_reservation(&mut xa),
        Some((KEY_Y, WRITE_EXCLUSIVE)),
        "reservation after the restart"
    );
    assert_eq!(
        write(&mut xa, 17),
        RESERVATION_CONFLICT,
        "X via A after restart"
    );
    assert_eq!(write(&mut yb, 17), 0, "the holder via B after restart");

    // Without APTPL the state is lost when every gateway stopped (SPC-5 §5.13.5).
    good(
        &pr_out(&mut yb, REGISTER, 0, KEY_Y, KEY_Y, 0),
        "Y clears APTPL via B",
    );
    drop((xa, yb));
    stop_both(&mut g);
    let mut g = start_both(&dirs, &spec);
    let mut xa = gateways::session(&g.a, IQN, X, 1);
    let mut yb = gateways::session(&g.b, IQN, Y, 1);
    assert_eq!(
        read_keys(&mut yb),
        Vec::<u64>::new(),
        "no keys after power on"
    );
    assert_eq!(read_reservation(&mut yb), None);
    assert_eq!(write(&mut xa, 18), 0, "X writes again");
    drop((xa, yb));
    stop_both(&mut g);
    drop(cluster);
    println!("rbd_pr test: whole test {:.1?}", t0.elapsed());
}
