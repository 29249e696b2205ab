//! Two-phase PDU framing (RFC 7143 §11.2): read the BHS, check every length
//! against what was negotiated, then wait for the rest. Nothing is allocated
//! from a length that has not been checked.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{BHS_LEN, Bhs, Pdu};
use crate::proto::digest::{self, DIGEST_LEN};

/// Digests in force on a connection (HeaderDigest / DataDigest = CRC32C).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestSettings {
    pub header: bool,
    pub data: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The header cannot be trusted, so neither can its lengths: the
    /// connection must be dropped (RFC 7143 §7.8, ErrorRecoveryLevel 0).
    #[error("header digest mismatch")]
    HeaderDigest,
    /// RFC 7143 §7.8: answered with Reject (Data-Digest-Error); the PDU was consumed.
    #[error("data digest mismatch on opcode {:#04x}", .bhs.opcode_raw())]
    DataDigest { bhs: Bhs },
    /// The initiator ignored our MaxRecvDataSegmentLength: protocol error.
    #[error("data segment of {len} bytes exceeds the negotiated {max}")]
    DataSegmentTooLong { bhs: Bhs, len: usize, max: usize },
}

/// Data segment length rounded up to the 4-byte boundary.
pub const fn padded_len(len: usize) -> usize {
    (len + 3) & !3
}

/// Incremental decoder for one connection.
#[derive(Debug, Clone)]
pub struct PduDecoder {
    /// Our MaxRecvDataSegmentLength (8192 during login, RFC 7143 §13.12).
    pub max_data_segment_len: usize,
    pub digests: DigestSettings,
}

impl Default for PduDecoder {
    fn default() -> Self {
        PduDecoder {
            max_data_segment_len: 8192,
            digests: DigestSettings::default(),
        }
    }
}

impl PduDecoder {
    /// Bytes the next PDU needs in total, once its BHS is buffered.
    fn frame_len(&self, bhs: &Bhs) -> Result<FrameLayout, CodecError> {
        let data_len = bhs.data_segment_len();
        if data_len > self.max_data_segment_len {
            return Err(CodecError::DataSegmentTooLong {
                bhs: *bhs,
                len: data_len,
                max: self.max_data_segment_len,
            });
        }
        let header = BHS_LEN + bhs.total_ahs_len();
        let header_digest = if self.digests.header { DIGEST_LEN } else { 0 };
        let data_digest = if self.digests.data && data_len > 0 {
            DIGEST_LEN
        } else {
            0
        };
        Ok(FrameLayout {
            header,
            header_digest,
            data_len,
            data_digest,
        })
    }

    /// Takes one PDU off the front of `buf`, or returns `Ok(None)` and
    /// reserves room when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Pdu>, CodecError> {
        if buf.len() < BHS_LEN {
            return Ok(None);
        }
        let mut raw = [0; BHS_LEN];
        raw.copy_from_slice(&buf[..BHS_LEN]);
        let bhs = Bhs(raw);
        let layout = self.frame_len(&bhs)?;
        let total = layout.total();
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        if layout.header_digest > 0 {
            let got = wire_u32(&buf[layout.header..layout.header + DIGEST_LEN]);
            if digest::crc32c_of(&[&buf[..layout.header]]) != got {
                return Err(CodecError::HeaderDigest);
            }
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(BHS_LEN);
        let ahs = frame.split_to(layout.header - BHS_LEN);
        frame.advance(layout.header_digest);
        let padded = padded_len(layout.data_len);
        let data_with_pad = frame.split_to(padded);
        if layout.data_digest > 0 {
            let got = wire_u32(&frame[..DIGEST_LEN]);
            if digest::crc32c_of(&[&data_with_pad]) != got {
                return Err(CodecError::DataDigest { bhs });
            }
        }
        let data: Bytes = data_with_pad.slice(..layout.data_len);
        Ok(Some(Pdu { bhs, ahs, data }))
    }
}

struct FrameLayout {
    header: usize,
    header_digest: usize,
    data_len: usize,
    data_digest: usize,
}

impl FrameLayout {
    fn total(&self) -> usize {
        self.header + self.header_digest + padded_len(self.data_len) + self.data_digest
    }
}

fn wire_u32(bytes: &[u8]) -> u32 {
    let mut b = [0; DIGEST_LEN];
    b.copy_from_slice(&bytes[..DIGEST_LEN]);
    digest::from_wire(b)
}

/// Appends one PDU to `out`: header, header digest, data, padding, data
/// digest. DataSegmentLength and TotalAHSLength are set from the slices.
pub fn encode_pdu(bhs: &Bhs, ahs: &[u8], data: &[u8], digests: DigestSettings, out: &mut BytesMut) {
    let mut bhs = *bhs;
    bhs.set_total_ahs_len(ahs.len());
    bhs.set_data_segment_len(data.len());
    let pad = padded_len(data.len()) - data.len();
    out.reserve(BHS_LEN + ahs.len() + 2 * DIGEST_LEN + data.len() + pad);
    out.put_slice(&bhs.0);
    out.put_slice(ahs);
    if digests.header {
        out.put_slice(&digest::to_wire(digest::crc32c_of(&[&bhs.0, ahs])));
    }
    if !data.is_empty() {
        out.put_slice(data);
        out.put_bytes(0, pad);
        if digests.data {
            let zeros = [0u8; 3];
            out.put_slice(&digest::to_wire(digest::crc32c_of(&[data, &zeros[..pad]])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pdu::Opcode;

    fn sample(data: &[u8]) -> Bhs {
        let mut bhs = Bhs::new(Opcode::NopOut);
        bhs.set_itt(7);
        bhs.set_data_segment_len(data.len());
        bhs
    }

    #[test]
    fn round_trip_with_and_without_digests() {
        for header in [false, true] {
            for data in [false, true] {
                let digests = DigestSettings { header, data };
                let payload = b"hello";
                let mut out = BytesMut::new();
                encode_pdu(&sample(payload), &[], payload, digests, &mut out);
                let mut dec = PduDecoder {
                    digests,
                    ..PduDecoder::default()
                };
                // Byte by byte: every prefix is incomplete until the last.
                let wire = out.clone();
                let mut buf = BytesMut::new();
                for (i, b) in wire.iter().enumerate() {
                    buf.put_u8(*b);
                    let got = dec.decode(&mut buf).unwrap();
                    if i + 1 < wire.len() {
                        assert!(got.is_none(), "complete too early at {i}");
                    } else {
                        let pdu = got.unwrap();
                        assert_eq!(&pdu.data[..], payload);
                        assert_eq!(pdu.bhs.itt(), 7);
                    }
                }
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn oversized_segment_is_refused_before_buffering() {
        let mut bhs = Bhs::new(Opcode::ScsiCommand);
        bhs.set_data_segment_len((16 << 20) - 1);
        let mut buf = BytesMut::from(&bhs.0[..]);
        let err = PduDecoder::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::DataSegmentTooLong { len, .. } if len == (16 << 20) - 1));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn corrupt_header_digest_is_detected() {
        let digests = DigestSettings {
            header: true,
            data: false,
        };
        let mut out = BytesMut::new();
        encode_pdu(&sample(&[]), &[], &[], digests, &mut out);
        out[20] ^= 1;
        let mut dec = PduDecoder {
            digests,
            ..PduDecoder::default()
        };
        assert!(matches!(
            dec.decode(&mut out),
            Err(CodecError::HeaderDigest)
        ));
    }

    #[test]
    fn corrupt_data_digest_consumes_the_pdu() {
        let digests = DigestSettings {
            header: true,
            data: true,
        };
        let mut out = BytesMut::new();
        encode_pdu(&sample(b"abcdef"), &[], b"abcdef", digests, &mut out);
        encode_pdu(&sample(b"ok"), &[], b"ok", digests, &mut out);
        out[BHS_LEN + DIGEST_LEN] ^= 0x80;
        let mut dec = PduDecoder {
            digests,
            ..PduDecoder::default()
        };
        assert!(matches!(
            dec.decode(&mut out),
            Err(CodecError::DataDigest { .. })
        ));
        assert_eq!(&dec.decode(&mut out).unwrap().unwrap().data[..], b"ok");
    }
}
