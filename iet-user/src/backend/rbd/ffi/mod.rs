//! The only unsafe code of the RBD store: the few librados/librbd C functions it uses
//! (declared from Debian's `rados/librados.h` and `rbd/librbd.h`, Ceph 16) and safe wrappers.
//! `rados.rs`: cluster connections and cls_lock locks; `object.rs`: one watched object read
//! whole and written under a version guard, with watch/notify; `rbd.rs`: images and their
//! asynchronous I/O.

use std::ffi::{CString, c_int, c_void};
use std::io;

mod object;
mod rados;
mod rbd;

pub(super) use object::WatchedObject;
pub(super) use rados::{LockKind, Pool};
pub(super) use rbd::Image;

#[allow(non_camel_case_types, reason = "the C names")]
type rados_t = *mut c_void;
#[allow(non_camel_case_types, reason = "the C names")]
type rados_ioctx_t = *mut c_void;

/// A negative errno from librados/librbd as an `io::Error`.
fn check(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(())
    }
}

/// As [`check`] for calls that return a byte count (`ssize_t`).
fn check_len(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(
            i32::try_from(-ret).unwrap_or(libc::EIO),
        ))
    } else {
        Ok(ret.cast_unsigned())
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}
