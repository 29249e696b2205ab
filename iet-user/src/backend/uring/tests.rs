//! The io_uring engine on real temporary files (the system temp dir must
//! take O_DIRECT for the direct cases; ext4 and xfs do).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::*;
use crate::backend::{BackendErrorKind, Engine};

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("iet-uring-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open(path: &std::path::Path, size: u64, direct: bool, block_size: u32) -> UringBackend {
    let opts = OpenOptions {
        create_size: Some(size),
        engine: Engine::Uring,
        direct,
        block_size,
        ..OpenOptions::default()
    };
    let file = FileBackend::open(path, Some(size)).expect("create the file");
    UringBackend::new(file, &opts).unwrap_or_else(|e| panic!("io_uring engine: {e}"))
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Writes, FUA writes, reads back, flushes, discards and zeroes.
fn exercise(b: &UringBackend, path: &std::path::Path) {
    let data = pattern(7, 1 << 20);
    b.write_at(&data, 1 << 20, false).expect("write");
    b.write_at(&data[..4096], 8 << 20, true).expect("FUA write");
    let mut back = vec![0u8; 1 << 20];
    b.read_at(&mut back, 1 << 20).expect("read");
    assert!(back == data, "read back what was written");
    let mut small = vec![0u8; 4096];
    b.read_at(&mut small, 8 << 20).expect("read the FUA write");
    assert_eq!(small, data[..4096]);
    b.flush().expect("fdatasync");
    // Larger than one O_DIRECT chunk, and through read_append.
    let mut out = vec![1, 2, 3];
    b.read_append(&mut out, 600 << 10, 1 << 20)
        .expect("read_append");
    assert_eq!(out[..3], [1, 2, 3]);
    assert!(out[3..] == data[..600 << 10]);

    let blocks = std::fs::metadata(path).expect("stat").blocks();
    b.discard(1 << 20, 1 << 20).expect("punch a hole");
    assert!(
        std::fs::metadata(path).expect("stat").blocks() < blocks,
        "the hole freed blocks"
    );
    b.read_at(&mut back, 1 << 20).expect("read the hole");
    assert!(back.iter().all(|&x| x == 0), "a hole reads as zeros");
    assert!(!b.extent_at(1 << 20).expect("extent").mapped);

    b.write_at(&data[..8192], 8 << 20, false).expect("write");
    b.write_zeroes(8 << 20, 8192).expect("zero range");
    b.read_at(&mut small, 8 << 20).expect("read zeros");
    assert!(small.iter().all(|&x| x == 0), "zeroed");
    assert!(
        b.extent_at(8 << 20).expect("extent").mapped,
        "still allocated"
    );

    let e = b
        .write_at(&[0u8; 512], (16 << 20) - 256, false)
        .unwrap_err();
    assert_eq!(e.kind(), BackendErrorKind::OutOfRange);
}

#[test]
fn buffered_reads_writes_flush_discard() {
    let f = TempFile::new("buffered");
    let b = open(&f.0, 16 << 20, false, 512);
    assert_eq!(b.engine(), "uring");
    assert!(b.serial_writes(), "buffered writes keep the LU's lane");
    exercise(&b, &f.0);
}

#[test]
fn direct_reads_writes_flush_discard() {
    let f = TempFile::new("direct");
    let b = open(&f.0, 16 << 20, true, 4096);
    assert_eq!(b.engine(), "uring+direct");
    assert!(
        !b.nowait_writes(),
        "O_DIRECT never takes the RWF_NOWAIT path"
    );
    exercise(&b, &f.0);
    // Unaligned I/O (not from SCSI) goes through the page cache, coherently.
    let data = pattern(3, 1000);
    b.write_at(&data, 12345, false).expect("unaligned write");
    let mut back = vec![0u8; 1000];
    b.read_at(&mut back, 12345).expect("unaligned read");
    assert_eq!(back, data);
    let mut block = vec![0u8; 4096];
    b.read_at(&mut block, 12288).expect("aligned O_DIRECT read");
    assert_eq!(block[57..1057], data[..]);
}

#[test]
fn data_survives_reopening_with_the_other_engine() {
    let f = TempFile::new("reopen");
    let data = pattern(9, 64 << 10);
    {
        let b = open(&f.0, 4 << 20, true, 512);
        b.write_at(&data, 4096, true).expect("FUA O_DIRECT write");
    }
    let file = FileBackend::open(&f.0, None).expect("reopen");
    let mut back = vec![0u8; data.len()];
    file.read_at(&mut back, 4096).expect("file engine read");
    assert!(back == data);
}

/// Reads past the end of a file truncated under the LU (short reads that
/// end in EOF) read as zeros, in both modes.
#[test]
fn short_reads_at_end_of_file_read_zeros() {
    for direct in [false, true] {
        let f = TempFile::new(if direct { "short-d" } else { "short" });
        let b = open(&f.0, 1 << 20, direct, 4096);
        let data = pattern(5, 1 << 20);
        b.write_at(&data, 0, false).expect("fill");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f.0)
            .and_then(|f| f.set_len(512 << 10))
            .expect("truncate under the LU");
        let mut back = vec![0xffu8; 64 << 10];
        b.read_at(&mut back, (512 - 16) << 10)
            .expect("read across EOF");
        assert_eq!(back[..16 << 10], data[(512 - 16) << 10..512 << 10]);
        assert!(back[16 << 10..].iter().all(|&x| x == 0), "past EOF: zeros");
    }
}

/// Many threads at once: every completion reaches its own caller.
#[test]
fn concurrent_callers_get_their_own_completions() {
    let f = TempFile::new("concurrent");
    let b = std::sync::Arc::new(open(&f.0, 8 << 20, false, 512));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let at = (u64::from(t) * 256 + i % 256) * 4096;
                    let data = pattern(t ^ i as u8, 4096);
                    b.write_at(&data, at, i % 16 == 0).expect("write");
                    let mut back = vec![0u8; 4096];
                    b.read_at(&mut back, at).expect("read");
                    assert_eq!(back, data, "thread {t} block {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn async_callers_await_completions_without_blocking() {
    let f = TempFile::new("async");
    let b = std::sync::Arc::new(open(&f.0, 4 << 20, false, 512));
    // Several in flight on one thread: they can only finish by being woken.
    let writes: Vec<_> = (0..16u8)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                b.write_owned(pattern(i, 8192), u64::from(i) * 8192, i == 3)
                    .await
            })
        })
        .collect();
    for w in writes {
        w.await.expect("task").expect("async write");
    }
    for i in 0..16u8 {
        let back = b.read_owned(8192, u64::from(i) * 8192).await.expect("read");
        assert_eq!(back, pattern(i, 8192));
    }
    // A dropped read leaves its buffer with the ring; the engine goes on.
    drop(b.ring.read_owned(vec![0; 4096], 0));
    let back = b.read_owned(4096, 0).await.expect("read after a drop");
    assert_eq!(back, pattern(0, 4096));
}

#[test]
fn errors_are_classified_like_the_file_engine() {
    let f = TempFile::new("errors");
    drop(open(&f.0, 1 << 20, false, 512));
    let opts = OpenOptions {
        read_only: true,
        engine: Engine::Uring,
        ..OpenOptions::default()
    };
    let ro = UringBackend::new(FileBackend::open_read_only(&f.0).expect("open"), &opts)
        .expect("read-only ring");
    let e = ro.write_at(&[1u8; 512], 0, false).unwrap_err();
    let file_e = FileBackend::open_read_only(&f.0)
        .expect("open")
        .write_at(&[1u8; 512], 0, false)
        .unwrap_err();
    assert_eq!(e.kind(), file_e.kind(), "EBADF: {e} / {file_e}");
    // ENOSPC from a real full filesystem (a 64 KiB tmpfs; needs root).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipping the ENOSPC case: needs root to mount a tmpfs");
        return;
    }
    let dir = std::env::temp_dir().join(format!("iet-uring-{}-full", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "ieturing"])
        .arg(&dir)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mount a tmpfs on {}", dir.display());
    let full = dir.join("thin.img");
    let result = std::panic::catch_unwind(|| {
        let b = open(&full, 4 << 20, false, 512);
        let e = b.write_at(&vec![7u8; 1 << 20], 0, false).unwrap_err();
        assert_eq!(e.kind(), BackendErrorKind::OutOfSpace, "{e}");
    });
    let _ = std::process::Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn direct_refuses_a_block_size_below_the_store_alignment() {
    // A 4096-byte-sector loop device refuses 512-byte O_DIRECT I/O; needs root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipping: needs root for a loop device");
        return;
    }
    let img = TempFile::new("loop");
    std::fs::File::create(&img.0)
        .and_then(|f| f.set_len(4 << 20))
        .expect("image");
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show", "--sector-size", "4096"])
        .arg(&img.0)
        .output()
        .expect("run losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let result = std::panic::catch_unwind(|| {
        let opts = |block_size| OpenOptions {
            engine: Engine::Uring,
            direct: true,
            block_size,
            ..OpenOptions::default()
        };
        let open_dev = |bs| {
            let file = FileBackend::open(dev.as_ref(), None).expect("open the loop device");
            UringBackend::new(file, &opts(bs))
        };
        let e = open_dev(512).unwrap_err();
        assert_eq!(e.kind(), BackendErrorKind::InvalidSpec);
        assert!(e.to_string().contains("512-byte blocks"), "{e}");
        let b = open_dev(4096).expect("4096-byte blocks are fine");
        let data = pattern(1, 8192);
        b.write_at(&data, 4096, true)
            .expect("O_DIRECT write on the device");
        let mut back = vec![0u8; 8192];
        b.read_at(&mut back, 4096).expect("O_DIRECT read");
        assert_eq!(back, data);
        b.discard(0, 4 << 20).expect("discard on a block device");
        b.read_at(&mut back, 4096).expect("read");
        assert!(
            back.iter().all(|&x| x == 0),
            "discarded blocks read as zeros"
        );
    });
    let _ = std::process::Command::new("losetup")
        .args(["-d", &dev])
        .status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
