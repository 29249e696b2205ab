//! LUN addressing (SAM-5 §4.7): the 8-byte LUN field REPORT LUNS encodes and every
//! command carries, with peripheral (LUN < 256) and flat (< 16384) addressing.

/// Largest LUN number flat addressing can encode (SAM-5 §4.7.7).
pub(crate) const MAX_LUN: u64 = 0x3fff;

/// The 8-byte LUN field for `lun` (at most `MAX_LUN`): peripheral device addressing
/// (§4.7.6) below 256, flat space addressing (§4.7.7) above.
pub(crate) fn encode_lun(lun: u64) -> [u8; 8] {
    let first = if lun < 256 {
        0
    } else {
        0x40 | ((lun >> 8) as u8 & 0x3f)
    };
    [first, lun as u8, 0, 0, 0, 0, 0, 0]
}

/// The LUN number in a 64-bit LUN field (first level, peripheral or flat addressing).
/// Other addressing methods name LUNs we never report: they stay distinct (and unknown).
pub fn decode_lun(raw: u64) -> u64 {
    let top = (raw >> 48) as u16;
    match top >> 14 {
        0 => u64::from(top & 0xff),
        1 => u64::from(top & 0x3fff),
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing() {
        assert_eq!(decode_lun(0), 0);
        assert_eq!(decode_lun(0x0003_0000_0000_0000), 3);
        assert_eq!(decode_lun(0x4123_0000_0000_0000), 0x123);
        // Logical unit addressing (10b) is not decoded.
        assert_eq!(decode_lun(0x8001_0000_0000_0000), 0x8001_0000_0000_0000);
    }

    #[test]
    fn encode_round_trips() {
        for lun in [0, 1, 255, 256, 0x123, MAX_LUN] {
            let raw = u64::from_be_bytes(encode_lun(lun));
            assert_eq!(decode_lun(raw), lun);
        }
        assert_eq!(encode_lun(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(0x123), [0x41, 0x23, 0, 0, 0, 0, 0, 0]);
    }
}
