//! The Basic Header Segment (RFC 7143 §11.2.1): 48 bytes with fields common
//! to every PDU and opcode-specific fields addressed by offset.

use bytes::Bytes;

use super::Opcode;

pub const BHS_LEN: usize = 48;

/// A raw BHS. Opcode-specific PDU types read and write it through accessors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl Default for Bhs {
    fn default() -> Self {
        Bhs([0; BHS_LEN])
    }
}

impl std::fmt::Debug for Bhs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bhs")
            .field("opcode", &format_args!("{:#04x}", self.opcode_raw()))
            .field("itt", &format_args!("{:#010x}", self.itt()))
            .field("data_segment_len", &self.data_segment_len())
            .finish_non_exhaustive()
    }
}

impl Bhs {
    /// A BHS with the opcode set and every other byte zero.
    pub fn new(opcode: Opcode) -> Bhs {
        let mut bhs = Bhs::default();
        bhs.0[0] = opcode as u8;
        bhs
    }

    pub fn opcode_raw(&self) -> u8 {
        self.0[0] & 0x3f
    }

    pub fn opcode(&self) -> Option<Opcode> {
        Opcode::from_u8(self.opcode_raw())
    }

    /// The I bit: immediate delivery (initiator PDUs only).
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }

    pub fn set_immediate(&mut self, on: bool) {
        self.set_bit(0, 0x40, on);
    }

    /// The F bit in byte 1.
    pub fn final_bit(&self) -> bool {
        self.0[1] & 0x80 != 0
    }

    pub fn set_final(&mut self, on: bool) {
        self.set_bit(1, 0x80, on);
    }

    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    pub fn set_bit(&mut self, byte: usize, mask: u8, on: bool) {
        if on {
            self.0[byte] |= mask;
        } else {
            self.0[byte] &= !mask;
        }
    }

    /// TotalAHSLength in bytes (the wire field counts 4-byte words).
    pub fn total_ahs_len(&self) -> usize {
        usize::from(self.0[4]) * 4
    }

    pub fn set_total_ahs_len(&mut self, bytes: usize) {
        debug_assert!(bytes.is_multiple_of(4) && bytes / 4 <= 255);
        self.0[4] = (bytes / 4) as u8;
    }

    /// DataSegmentLength, without padding.
    pub fn data_segment_len(&self) -> usize {
        (usize::from(self.0[5]) << 16) | (usize::from(self.0[6]) << 8) | usize::from(self.0[7])
    }

    pub fn set_data_segment_len(&mut self, len: usize) {
        debug_assert!(len < 1 << 24);
        self.0[5] = (len >> 16) as u8;
        self.0[6] = (len >> 8) as u8;
        self.0[7] = len as u8;
    }

    /// LUN or opcode-specific field (bytes 8..16).
    pub fn lun(&self) -> u64 {
        self.u64_at(8)
    }

    pub fn set_lun(&mut self, lun: u64) {
        self.set_u64(8, lun);
    }

    /// Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    pub fn set_itt(&mut self, itt: u32) {
        self.set_u32(16, itt);
    }

    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }

    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_be_bytes(b)
    }

    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_be_bytes(b)
    }

    pub fn set_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_be_bytes());
    }
}

/// A whole PDU as received: header, additional header segments and the data
/// segment without padding or digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pdu {
    pub bhs: Bhs,
    pub ahs: Bytes,
    pub data: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_fields_round_trip() {
        let mut bhs = Bhs::new(Opcode::ScsiCommand);
        bhs.set_immediate(true);
        bhs.set_final(true);
        bhs.set_total_ahs_len(8);
        bhs.set_data_segment_len(0x01_02_03);
        bhs.set_lun(0x0001_0000_0000_0000);
        bhs.set_itt(0xdead_beef);
        assert_eq!(bhs.opcode(), Some(Opcode::ScsiCommand));
        assert!(bhs.immediate() && bhs.final_bit());
        assert_eq!(bhs.total_ahs_len(), 8);
        assert_eq!(bhs.data_segment_len(), 0x01_02_03);
        assert_eq!(&bhs.0[5..8], &[1, 2, 3]);
        assert_eq!(bhs.lun(), 0x0001_0000_0000_0000);
        assert_eq!(bhs.itt(), 0xdead_beef);
    }
}
