//! Each I/O engine under the real ietd: one daemon whose TOML
//! configuration gives LUN 0 the file engine, LUN 1 io_uring and LUN 2
//! io_uring with O_DIRECT (on a filesystem that takes O_DIRECT: the
//! system temp dir, ext4 here; not a tmpfs). Each LUN takes writes, FUA
//! writes, reads compared, SYNCHRONIZE CACHE and UNMAP from the scripted
//! initiator, then libiscsi's READ(10)/WRITE(10) families; `ietadm show
//! volumes` reports the engine in use and `ietadm save` keeps the settings.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use iet::config::Config;
use iet_tests::initiator::{Conn, LoginOptions, ScsiResult};
use iet_tests::inprocess::free_port;
use iet_tests::libiscsi::{skipped_tests, test_cu_with};
use iet_tests::process::{Ietd, TempDir};

const IQN: &str = "iqn.2026-12.io.iet:engines";
const BS: u32 = 4096;
const SIZE: u64 = 64 << 20;
/// (LUN, engine setting, what `show volumes` reports).
const LUNS: [(u64, &str, &str); 3] = [
    (0, "engine = \"file\"", "file"),
    (1, "engine = \"uring\"", "uring"),
    (2, "engine = \"uring\"\ndirect = true", "uring+direct"),
];

fn start(dir: &TempDir) -> (Ietd, std::path::PathBuf) {
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut toml = format!(
        "state_dir = \"{}\"\n[ebpf]\nmode = \"off\"\n[[portal]]\nlisten = \"{portal}\"\n\
         [[target]]\nname = \"{IQN}\"\n",
        dir.path("state").display()
    );
    for (lun, setting, _) in LUNS {
        let image = dir.path(&format!("lun{lun}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(SIZE))
            .expect("image");
        writeln!(
            toml,
            "[[target.lun]]\nnumber = {lun}\npath = \"{}\"\nblock_size = {BS}\n{setting}",
            image.display()
        )
        .expect("write to a String");
    }
    let config = dir.path("iet.toml");
    std::fs::write(&config, toml).expect("config");
    let ietd = Ietd::start(dir, portal, &["--config", config.to_str().expect("utf-8")]);
    (ietd, config)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn good(r: &ScsiResult, what: &str, ietd: &Ietd) {
    assert_eq!(
        r.status,
        0,
        "{what}: status {:#x} sense {:02x?}\n{}",
        r.status,
        r.sense,
        ietd.log()
    );
}

fn write10(c: &mut Conn, lun: u64, lba: u32, data: &[u8], fua: bool) -> ScsiResult {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[1] = if fua { 0x08 } else { 0 };
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&((data.len() as u32 / BS) as u16).to_be_bytes());
    c.scsi(lun, &cdb, data, 0).expect("WRITE(10)")
}

fn unmap(c: &mut Conn, lun: u64, lba: u64, blocks: u32) -> ScsiResult {
    let mut param = [0u8; 24];
    param[0..2].copy_from_slice(&22u16.to_be_bytes());
    param[2..4].copy_from_slice(&16u16.to_be_bytes());
    param[8..16].copy_from_slice(&lba.to_be_bytes());
    param[16..20].copy_from_slice(&blocks.to_be_bytes());
    let mut cdb = [0u8; 10];
    cdb[0] = 0x42;
    cdb[7..9].copy_from_slice(&24u16.to_be_bytes());
    c.scsi(lun, &cdb, &param, 0).expect("UNMAP")
}

/// Writes (plain and FUA, one larger than a bounce buffer), reads them
/// back, SYNCHRONIZE CACHE, UNMAP and a read of the unmapped range.
fn data_path(c: &mut Conn, lun: u64, ietd: &Ietd) {
    let what = |s: &str| format!("LUN {lun}: {s}");
    let big = pattern(lun as u8, 512 << 10);
    good(&write10(c, lun, 16, &big, false), &what("write"), ietd);
    let small = pattern(lun as u8 ^ 0x55, 8192);
    good(
        &write10(c, lun, 1000, &small, true),
        &what("FUA write"),
        ietd,
    );
    let back = c
        .read10(lun, 16, (big.len() as u32 / BS) as u16, BS)
        .unwrap();
    good(&back, &what("read"), ietd);
    assert!(back.data == big, "LUN {lun}: read back the write");
    let back = c.read10(lun, 1000, 2, BS).unwrap();
    good(&back, &what("read the FUA write"), ietd);
    assert_eq!(back.data, small, "LUN {lun}: read back the FUA write");
    let mut sync = [0u8; 10];
    sync[0] = 0x35;
    good(
        &c.scsi(lun, &sync, &[], 0).unwrap(),
        &what("SYNCHRONIZE CACHE"),
        ietd,
    );
    good(&unmap(c, lun, 16, 64), &what("UNMAP"), ietd);
    let back = c.read10(lun, 16, 128, BS).unwrap();
    good(&back, &what("read after UNMAP"), ietd);
    assert!(
        back.data[..64 * BS as usize].iter().all(|&b| b == 0),
        "LUN {lun}: unmapped blocks read as zeros"
    );
    assert!(
        back.data[64 * BS as usize..] == big[64 * BS as usize..],
        "LUN {lun}: the rest is untouched"
    );
}

#[test]
fn every_engine_serves_writes_fua_sync_unmap_and_libiscsi_read_write() {
    let dir = TempDir::new("engines");
    let (ietd, _config) = start(&dir);

    let volumes = ietd.adm_ok(&["show", "volumes"]);
    for (lun, _, engine) in LUNS {
        assert!(
            volumes
                .lines()
                .any(|l| l.contains(&format!("lun:{lun} "))
                    && l.contains(&format!("engine:{engine} "))),
            "LUN {lun} is served by {engine}:\n{volumes}"
        );
    }

    let mut c = Conn::connect(ietd.portal).expect("connect");
    c.login(&LoginOptions::normal(IQN))
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", ietd.log()));
    for (lun, _, _) in LUNS {
        c.clear_unit_attention(lun).expect("TEST UNIT READY");
        data_path(&mut c, lun, &ietd);
    }
    drop(c);

    for (lun, _, engine) in LUNS {
        let url = format!("iscsi://{}/{IQN}/{lun}", ietd.portal);
        for family in ["SCSI.Read10", "SCSI.Write10"] {
            let (summary, out) = test_cu_with(family, &[&url], Duration::from_mins(5), &["-V"]);
            assert!(summary.ran >= 3, "{engine}: {family} ran:\n{out}");
            assert_eq!(
                summary.total, summary.ran,
                "{engine}: every {family} test ran:\n{out}"
            );
            assert_eq!(summary.failed, 0, "{engine}: {family} failures:\n{out}");
            let skipped = skipped_tests(&out);
            assert!(skipped.is_empty(), "{engine}: {family} skipped {skipped:?}");
        }
    }

    // `ietadm save` keeps each LUN's engine and O_DIRECT setting.
    let saved = dir.path("saved.toml");
    ietd.adm_ok(&["save", saved.to_str().expect("utf-8")]);
    let cfg = Config::load(&saved).expect("the saved configuration loads");
    let luns = &cfg.targets[0].luns;
    let setting = |n: u64| {
        let l = luns.iter().find(|l| l.number == n).expect("saved LUN");
        (l.engine.name(), l.direct)
    };
    assert_eq!(setting(0), ("file", false));
    assert_eq!(setting(1), ("uring", false));
    assert_eq!(setting(2), ("uring", true));
}

/// `ietadm lun new --engine uring --direct` adds a LUN served by io_uring
/// with O_DIRECT; the file engine refuses `--direct` with a clear error.
#[test]
fn lun_new_takes_engine_and_direct() {
    let dir = TempDir::new("engines-adm");
    let (ietd, _config) = start(&dir);
    let image = dir.path("added.img");
    let path = image.to_str().expect("utf-8");
    ietd.adm_ok(&[
        "lun",
        "new",
        "--target",
        IQN,
        "--lun",
        "5",
        "--path",
        path,
        "--size",
        "16M",
        "--block-size",
        "4096",
        "--engine",
        "uring",
        "--direct",
    ]);
    let volumes = ietd.adm_ok(&["show", "volumes"]);
    assert!(
        volumes
            .lines()
            .any(|l| l.contains("lun:5 ") && l.contains("engine:uring+direct ")),
        "{volumes}"
    );
    let refused = ietd.adm(&[
        "lun", "new", "--target", IQN, "--lun", "6", "--path", path, "--engine", "file", "--direct",
    ]);
    assert!(!refused.status.success(), "file engine with --direct");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("direct = true needs engine"), "{err}");
    let mut c = Conn::connect(ietd.portal).expect("connect");
    c.login(&LoginOptions::normal(IQN)).expect("login");
    c.clear_unit_attention(5).expect("TEST UNIT READY");
    data_path(&mut c, 5, &ietd);
}
