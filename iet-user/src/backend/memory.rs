//! RAM backing store (`mem:SIZE`): sparse 64 KiB chunks allocated on first write,
//! so discard really frees memory and GET LBA STATUS has something to report.

use std::sync::RwLock;

use super::{BackendError, BlockBackend, Extent, check_range};

const CHUNK: u64 = 64 * 1024;

#[derive(Debug)]
pub struct MemoryBackend {
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    size: u64,
    chunks: Vec<Option<Box<[u8]>>>,
}

fn chunk_count(size: u64) -> usize {
    usize::try_from(size.div_ceil(CHUNK)).unwrap_or(usize::MAX)
}

impl MemoryBackend {
    pub fn new(size: u64) -> Self {
        let mut chunks = Vec::new();
        chunks.resize_with(chunk_count(size), || None);
        Self {
            inner: RwLock::new(Inner { size, chunks }),
        }
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Split `[offset, offset+len)` into (chunk index, offset in chunk, length) pieces.
fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut pos = offset;
    let end = offset + len;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let idx = pos / CHUNK;
        let within = pos % CHUNK;
        let n = (CHUNK - within).min(end - pos);
        pos += n;
        Some((idx as usize, within as usize, n as usize))
    })
}

impl BlockBackend for MemoryBackend {
    fn describe(&self) -> String {
        format!("mem:{}", self.size())
    }

    fn engine(&self) -> &'static str {
        "memory"
    }

    fn size(&self) -> u64 {
        self.read_inner().size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let inner = self.read_inner();
        check_range(offset, buf.len() as u64, inner.size)?;
        let mut done = 0;
        for (idx, within, n) in pieces(offset, buf.len() as u64) {
            let dst = &mut buf[done..done + n];
            match inner.chunks.get(idx).and_then(Option::as_ref) {
                Some(chunk) => dst.copy_from_slice(&chunk[within..within + n]),
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn read_append(&self, out: &mut Vec<u8>, len: usize, offset: u64) -> Result<(), BackendError> {
        let inner = self.read_inner();
        check_range(offset, len as u64, inner.size)?;
        out.reserve(len);
        for (idx, within, n) in pieces(offset, len as u64) {
            match inner.chunks.get(idx).and_then(Option::as_ref) {
                Some(chunk) => out.extend_from_slice(&chunk[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
        }
        Ok(())
    }

    fn nowait_writes(&self) -> bool {
        true
    }

    fn write_at(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<(), BackendError> {
        let mut inner = self.write_inner();
        check_range(offset, buf.len() as u64, inner.size)?;
        let mut done = 0;
        for (idx, within, n) in pieces(offset, buf.len() as u64) {
            let src = &buf[done..done + n];
            done += n;
            let Some(slot) = inner.chunks.get_mut(idx) else {
                continue;
            };
            if slot.is_none() && src.iter().all(|&b| b == 0) {
                continue;
            }
            let chunk = slot.get_or_insert_with(|| vec![0u8; CHUNK as usize].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(src);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        let mut inner = self.write_inner();
        check_range(offset, len, inner.size)?;
        for (idx, within, n) in pieces(offset, len) {
            let Some(slot) = inner.chunks.get_mut(idx) else {
                continue;
            };
            if within == 0 && n as u64 == CHUNK {
                *slot = None;
            } else if let Some(chunk) = slot {
                chunk[within..within + n].fill(0);
            }
        }
        Ok(())
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn resize(&self, new_size: u64) -> Result<(), BackendError> {
        let mut inner = self.write_inner();
        let old = inner.size;
        if new_size < old {
            // Zero the tail of the last kept chunk so a later grow reads zeros.
            let tail = new_size % CHUNK;
            if tail != 0
                && let Some(Some(chunk)) = inner.chunks.get_mut((new_size / CHUNK) as usize)
            {
                chunk[tail as usize..].fill(0);
            }
        }
        inner.chunks.resize_with(chunk_count(new_size), || None);
        inner.size = new_size;
        Ok(())
    }

    fn extent_at(&self, offset: u64) -> Result<Extent, BackendError> {
        let inner = self.read_inner();
        if offset >= inner.size {
            return Err(BackendError::OutOfRange {
                offset,
                len: 0,
                size: inner.size,
            });
        }
        let first = (offset / CHUNK) as usize;
        let mapped = inner.chunks.get(first).is_some_and(Option::is_some);
        let mut end_chunk = first + 1;
        while inner
            .chunks
            .get(end_chunk)
            .is_some_and(|c| c.is_some() == mapped)
        {
            end_chunk += 1;
        }
        let end = (end_chunk as u64 * CHUNK).min(inner.size);
        Ok(Extent {
            mapped,
            len: end - offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_discard() {
        let m = MemoryBackend::new(1 << 20);
        let data = vec![0xabu8; 200_000];
        m.write_at(&data, 1000, false).expect("write");
        let mut back = vec![0u8; 200_000];
        m.read_at(&mut back, 1000).expect("read");
        assert_eq!(back, data);
        assert!(m.extent_at(0).expect("extent").mapped);
        m.discard(0, 1 << 20).expect("discard");
        m.read_at(&mut back, 1000).expect("read");
        assert!(back.iter().all(|&b| b == 0));
        assert_eq!(
            m.extent_at(0).expect("extent"),
            Extent {
                mapped: false,
                len: 1 << 20
            }
        );
        assert!(m.read_at(&mut back, (1 << 20) - 10).is_err());
    }

    #[test]
    fn resize_zeroes_tail() {
        let m = MemoryBackend::new(CHUNK * 2);
        m.write_at(&[1u8; 100], CHUNK - 50, false).expect("write");
        m.resize(CHUNK - 20).expect("shrink");
        m.resize(CHUNK * 2).expect("grow");
        let mut b = [9u8; 100];
        m.read_at(&mut b, CHUNK - 50).expect("read");
        assert!(b[..30].iter().all(|&x| x == 1));
        assert!(b[30..].iter().all(|&x| x == 0));
    }
}
