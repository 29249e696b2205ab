//! Mounts the storage tests make, each undone on drop: a small tmpfs, and a FUSE
//! filesystem served by the test process whose one file fails or lies on purpose.

use std::ffi::OsStr;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, TimeOrNow,
};

/// A mount made by the test, lazily unmounted on drop (also on panic).
pub struct Mount(pub PathBuf);

impl Mount {
    pub fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "ietfaults"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Mount(dir.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// What the FUSE file does wrong, changed by the test while ietd runs: fail I/O with EIO,
/// or lie without an error (a store that does not keep what is written).
#[derive(Default)]
pub struct Faults {
    pub read_eio: Mutex<Option<Range<u64>>>,
    pub write_eio: Mutex<Option<Range<u64>>>,
    pub fsync_eio: AtomicBool,
    /// Writes to these bytes are acknowledged and thrown away.
    pub drop_writes: Mutex<Option<Range<u64>>>,
    /// This byte reads back inverted (what was stored stays).
    pub flip_on_read: Mutex<Option<u64>>,
}

fn overlaps(r: &Mutex<Option<Range<u64>>>, offset: u64, len: u64) -> bool {
    r.lock()
        .unwrap()
        .as_ref()
        .is_some_and(|r| offset < r.end && offset + len > r.start)
}

/// One directory with one file, `disk.img`, kept in memory. With
/// `direct_io` every read and write reaches us (no page cache between);
/// without it, writes go through the page cache and a write with
/// RWF_DSYNC or an fdatasync reaches us as FUSE_FSYNC (with direct I/O the
/// kernel never asks the filesystem to sync a RWF_DSYNC write).
struct FaultFs {
    data: Vec<u8>,
    faults: Arc<Faults>,
    direct_io: bool,
}

const ROOT: u64 = 1;
const DISK: u64 = 2;
const TTL: Duration = Duration::from_secs(1);

impl FaultFs {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size) = if ino == ROOT {
            (FileType::Directory, 0o755, 0)
        } else {
            (FileType::RegularFile, 0o600, self.data.len() as u64)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink: if ino == ROOT { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for FaultFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == "disk.img" {
            reply.entry(&TTL, &self.attr(DISK), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT | DISK => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        if let Some(size) = size {
            self.data.resize(size as usize, 0);
        }
        reply.attr(&TTL, &self.attr(ino));
    }

    fn open(&mut self, _req: &Request<'_>, _ino: u64, _flags: i32, reply: ReplyOpen) {
        let flags = if self.direct_io {
            fuser::consts::FOPEN_DIRECT_IO
        } else {
            0
        };
        reply.opened(0, flags);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let offset = offset.cast_unsigned();
        if overlaps(&self.faults.read_eio, offset, u64::from(size)) {
            return reply.error(libc::EIO);
        }
        let start = (offset as usize).min(self.data.len());
        let end = (start + size as usize).min(self.data.len());
        let mut out = self.data[start..end].to_vec();
        if let Some(at) = *self.faults.flip_on_read.lock().unwrap()
            && (start as u64..end as u64).contains(&at)
        {
            out[(at - start as u64) as usize] ^= 0xff;
        }
        reply.data(&out);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let offset = offset.cast_unsigned() as usize;
        if overlaps(&self.faults.write_eio, offset as u64, data.len() as u64) {
            return reply.error(libc::EIO);
        }
        let end = offset + data.len();
        if end > self.data.len() {
            return reply.error(libc::ENOSPC);
        }
        let dropped = self.faults.drop_writes.lock().unwrap().clone();
        for (i, &b) in data.iter().enumerate() {
            if !dropped
                .as_ref()
                .is_some_and(|r| r.contains(&((offset + i) as u64)))
            {
                self.data[offset + i] = b;
            }
        }
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        if self.faults.fsync_eio.load(Ordering::SeqCst) {
            reply.error(libc::EIO);
        } else {
            reply.ok();
        }
    }
}

/// The FUSE filesystem mounted at `<dir>/fuse`, served by a thread of this
/// process; unmounted on drop.
pub struct FuseMount {
    pub dir: PathBuf,
    pub faults: Arc<Faults>,
    _session: fuser::BackgroundSession,
}

impl FuseMount {
    pub fn new(dir: &Path, size: usize, direct_io: bool) -> FuseMount {
        let dir = dir.join("fuse");
        std::fs::create_dir_all(&dir).expect("FUSE mount point");
        let faults = Arc::new(Faults::default());
        let fs = FaultFs {
            data: vec![0; size],
            faults: faults.clone(),
            direct_io,
        };
        let session = fuser::spawn_mount2(
            fs,
            &dir,
            &[MountOption::FSName("ietfaults".into()), MountOption::RW],
        )
        .unwrap_or_else(|e| panic!("mounting the FUSE filesystem on {}: {e}", dir.display()));
        FuseMount {
            dir,
            faults,
            _session: session,
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.img")
    }

    /// Aborts the FUSE connection (fusectl): every later request on the
    /// file fails at once with ENOTCONN, as for a device that went away.
    pub fn abort(&self) {
        let fusectl = Path::new("/sys/fs/fuse/connections");
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if !mounts.contains(" /sys/fs/fuse/connections ") {
            let st = Command::new("mount")
                .args(["-t", "fusectl", "fusectl"])
                .arg(fusectl)
                .status()
                .expect("mount fusectl");
            assert!(st.success(), "mounting fusectl");
        }
        let dev = std::fs::metadata(&self.dir).expect("stat the mount").dev();
        let minor = libc::minor(dev);
        std::fs::write(fusectl.join(minor.to_string()).join("abort"), "1")
            .expect("abort the FUSE connection");
    }
}
