//! The data path on a file LUN: buffered writes from many sessions share
//! the LU's write lane and every byte reads back.

use iet_tests::initiator::{Conn, LoginOptions};
use iet_tests::inprocess::{InProcessTarget, TARGET, mem_config};

const BS: u32 = 512;

fn lane_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| c.starts_with("iet-lane"))
        .collect()
}

fn is_ext4(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs is plain old data; all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statfs buffer we own.
    unsafe { libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type == 0xEF53 }
}

#[test]
fn writes_from_many_sessions_share_one_lane_and_read_back() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("iet-data-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("lun.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(32 << 20))
        .unwrap();
    let t = InProcessTarget::start(mem_config(&[image.to_str().unwrap()]));
    let addr = t.addr;
    let sessions: Vec<_> = (0..8u8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr).unwrap();
                let mut opts = LoginOptions::normal(TARGET);
                opts.isid = [0x80, 0, 0, 0, 2, i];
                c.login(&opts).unwrap();
                c.clear_unit_attention(0).unwrap();
                // Interleaved 4 KiB blocks: neighbours belong to other sessions.
                for n in 0..64u32 {
                    let lba = (n * 8 + u32::from(i)) * 8;
                    let data = vec![i.wrapping_mul(31).wrapping_add(n as u8); 4096];
                    assert_eq!(c.write10(0, lba, &data, BS).unwrap().status, 0);
                }
                assert_eq!(c.logout().unwrap(), 0);
            })
        })
        .collect();
    for s in sessions {
        s.join().expect("session");
    }
    // ext4 refuses non-blocking buffered writes, so they take the lane
    // (filesystems that accept them are written inline instead).
    if is_ext4(&dir) {
        assert_eq!(
            lane_threads(),
            ["iet-lane-0"],
            "one lane for the LU, shared by every session"
        );
    }
    let mut c = Conn::connect(addr).unwrap();
    c.login(&LoginOptions::normal(TARGET)).unwrap();
    c.clear_unit_attention(0).unwrap();
    let all = c.read10(0, 0, 8 * 64 * 8, BS).unwrap();
    assert_eq!(all.status, 0);
    for (block, chunk) in all.data.chunks(4096).enumerate() {
        let (n, i) = (block / 8, block % 8);
        let want = (i as u8).wrapping_mul(31).wrapping_add(n as u8);
        assert!(
            chunk.iter().all(|b| *b == want),
            "block {block} (session {i}, write {n}) read back wrong"
        );
    }
    drop(c);
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}
