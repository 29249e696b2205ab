//! CRC32C header and data digests (RFC 7143 §13.1, §12.1).
//!
//! The digest is carried in little-endian byte order, as every deployed
//! initiator (Linux, libiscsi, Windows) sends it.

pub const DIGEST_LEN: usize = 4;

/// CRC32C over the given parts as if they were one buffer.
pub fn crc32c_of(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

pub fn to_wire(crc: u32) -> [u8; DIGEST_LEN] {
    crc.to_le_bytes()
}

pub fn from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_3720_test_vectors() {
        // RFC 3720 Appendix B.4: 32 bytes of zeros, 32 bytes of 0xff.
        assert_eq!(to_wire(crc32c_of(&[&[0u8; 32]])), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(
            to_wire(crc32c_of(&[&[0xffu8; 32]])),
            [0x43, 0xab, 0xa8, 0x62]
        );
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(to_wire(crc32c_of(&[&ascending])), [0x4e, 0x79, 0xdd, 0x46]);
    }

    #[test]
    fn parts_equal_whole() {
        let whole: Vec<u8> = (0..200u8).collect();
        assert_eq!(
            crc32c_of(&[&whole]),
            crc32c_of(&[&whole[..17], &whole[17..]])
        );
    }
}
