//! Write-then-verify over the scripted initiator: writes a seeded pattern
//! across a span of a LUN, reads it all back and compares every byte.
//! The seed changes the pattern, so data left by an earlier run never
//! passes for this one's.

use std::net::SocketAddr;
use std::time::Instant;

use crate::initiator::{Conn, LoginOptions};

#[derive(Debug, Clone)]
pub struct Verify {
    pub portal: SocketAddr,
    pub target: String,
    pub lun: u64,
    pub block_size: u32,
    /// Bytes per WRITE(10) and READ(10): a multiple of `block_size`.
    pub io_size: u32,
    /// Bytes written and read back, from LBA 0: a multiple of `io_size`.
    pub span_bytes: u64,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyResult {
    pub seed: u64,
    pub written_bytes: u64,
    pub verified_bytes: u64,
    /// Bytes that differ from the pattern, a short read's missing bytes
    /// included.
    pub mismatched_bytes: u64,
    /// Byte offset on the LUN of the first difference.
    pub first_mismatch: Option<u64>,
    pub milliseconds: u64,
}

/// The pattern's eight bytes at `offset / 8` (splitmix64 of seed and word
/// index).
fn word(seed: u64, index: u64) -> [u8; 8] {
    let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

/// The pattern for `buf.len()` bytes from `offset` (a multiple of 8).
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let w = word(seed, offset / 8 + i as u64);
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

/// Writes the whole span, then reads it back; a command that fails is an
/// error, a byte that differs is counted in the result.
pub fn verify(v: &Verify) -> std::io::Result<VerifyResult> {
    let bs = u64::from(v.block_size);
    let io = u64::from(v.io_size);
    if bs == 0
        || io == 0
        || !io.is_multiple_of(bs)
        || !io.is_multiple_of(8)
        || !v.span_bytes.is_multiple_of(io)
    {
        return Err(invalid(format!(
            "span {} and I/O size {io} must be multiples of I/O size and block size {bs}",
            v.span_bytes
        )));
    }
    let blocks = u16::try_from(io / bs)
        .map_err(|_| invalid(format!("{io} bytes is too many blocks for READ(10)")))?;
    if u32::try_from(v.span_bytes / bs).is_err() {
        return Err(invalid("span beyond READ(10)'s 32-bit LBA".to_owned()));
    }
    let started = Instant::now();
    let mut c = Conn::connect(v.portal)?;
    let mut opts = LoginOptions::normal(&v.target);
    opts.isid = [0x80, 0x56, 0x45, 0x52, 0x49, 0x46];
    c.login(&opts)
        .map_err(|e| std::io::Error::other(format!("login: {e:?}")))?;
    c.clear_unit_attention(v.lun)?;
    let len = usize::try_from(io).map_err(|_| invalid("I/O size".to_owned()))?;
    let mut expected = vec![0u8; len];
    let lba = |offset: u64| u32::try_from(offset / bs).unwrap_or(u32::MAX);
    let mut result = VerifyResult {
        seed: v.seed,
        ..VerifyResult::default()
    };
    for offset in (0..v.span_bytes).step_by(len) {
        fill(v.seed, offset, &mut expected);
        let r = c.write10(v.lun, lba(offset), &expected, v.block_size)?;
        if r.status != 0 {
            return Err(std::io::Error::other(format!(
                "WRITE(10) at byte {offset}: status {:#x} sense {:02x?}",
                r.status, r.sense
            )));
        }
        result.written_bytes += io;
    }
    for offset in (0..v.span_bytes).step_by(len) {
        fill(v.seed, offset, &mut expected);
        let r = c.read10(v.lun, lba(offset), blocks, v.block_size)?;
        if r.status != 0 {
            return Err(std::io::Error::other(format!(
                "READ(10) at byte {offset}: status {:#x} sense {:02x?}",
                r.status, r.sense
            )));
        }
        let missing = expected.len().saturating_sub(r.data.len());
        let mut differing = expected
            .iter()
            .zip(&r.data)
            .enumerate()
            .filter(|(_, (want, got))| want != got)
            .map(|(i, _)| i);
        let first = differing.next();
        let count = first.map_or(0, |_| 1 + differing.count());
        if let Some(first) = first.or((missing > 0).then_some(r.data.len())) {
            result.first_mismatch.get_or_insert(offset + first as u64);
        }
        result.mismatched_bytes += (count + missing) as u64;
        result.verified_bytes += io;
    }
    c.logout()?;
    result.milliseconds = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn pattern_depends_on_seed_and_offset_only() {
        let (mut a, mut b, mut c) = ([0u8; 64], [0u8; 32], [0u8; 64]);
        fill(7, 4096, &mut a);
        fill(7, 4096 + 32, &mut b);
        fill(8, 4096, &mut c);
        assert_eq!(&a[32..], &b[..], "the same bytes at the same offset");
        assert_ne!(a, c, "another seed, another pattern");
        assert!(a.iter().any(|&x| x != a[0]), "not a constant fill");
    }
}
