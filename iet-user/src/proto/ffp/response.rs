//! The PDUs that answer a SCSI command (RFC 7143 §11.4, §11.7): Data-In
//! (status in the last one when nothing else must be said), then a SCSI
//! Response when needed. The one place a command's answer is encoded.

use bytes::{BufMut, Bytes, BytesMut};

use super::{OutPdu, StatSnMode};
use crate::proto::datain::DataInSegments;
use crate::proto::pdu::{
    DataIn, DataInStatus, RESERVED_TAG, RESPONSE_COMPLETED, Residual, ScsiResponse,
};

/// What the answer needs to know of its command.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    pub itt: u32,
    pub lun: u64,
    pub read: bool,
    pub write: bool,
    pub expected_len: u32,
    /// Data-Out length the CDB implies (SPDTL), for write residuals.
    pub data_out_len: Option<u64>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    pub status: u8,
    pub sense: Option<&'a [u8]>,
}

/// Negotiated limits for Data-In.
#[derive(Debug, Clone, Copy)]
pub struct DataInLimits {
    /// The initiator's MaxRecvDataSegmentLength.
    pub max_segment: u32,
    pub max_burst: u32,
}

/// The SCSI Response data segment: SenseLength then the sense bytes.
pub fn sense_segment(sense: Option<&[u8]>) -> Bytes {
    match sense {
        Some(s) if !s.is_empty() => {
            let mut b = BytesMut::with_capacity(2 + s.len());
            b.put_u16(s.len() as u16);
            b.put_slice(s);
            b.freeze()
        }
        _ => Bytes::new(),
    }
}

/// Encodes the answer into `out`.
pub fn answer(
    cmd: &Answering,
    st: Status<'_>,
    data_in: &Bytes,
    mut exp_data_sn: u32,
    limits: DataInLimits,
    out: &mut impl Extend<OutPdu>,
) {
    let produced = data_in.len() as u64;
    let expected = u64::from(cmd.expected_len);
    let (sent_len, residual) = if cmd.read {
        (
            produced.min(expected) as usize,
            Residual::of(expected, produced),
        )
    } else if cmd.write {
        // FCP-4 §9.4.2: a mismatch is reported, not refused; the SCSI layer
        // wrote what arrived up to the CDB's length.
        (
            0,
            cmd.data_out_len
                .map_or(Residual::None, |s| Residual::of(expected, s)),
        )
    } else {
        (
            0,
            if produced > 0 {
                Residual::Overflow(produced.min(u64::from(u32::MAX)) as u32)
            } else {
                Residual::None
            },
        )
    };
    let good = st.status == 0 && st.sense.is_none();
    if sent_len > 0 {
        let mut data_sn = 0u32;
        let segments = DataInSegments::new(
            sent_len,
            limits.max_segment as usize,
            limits.max_burst as usize,
        );
        out.extend(segments.map(|seg| {
            let status = (seg.last && good).then_some(DataInStatus {
                status: st.status,
                stat_sn: 0,
                residual,
            });
            let pdu = DataIn {
                final_bit: seg.final_of_sequence,
                lun: cmd.lun,
                itt: cmd.itt,
                ttt: RESERVED_TAG,
                data_sn,
                buffer_offset: seg.offset as u32,
                status,
                ..DataIn::default()
            };
            data_sn = data_sn.wrapping_add(1);
            OutPdu {
                bhs: pdu.encode(),
                data: data_in.slice(seg.offset..seg.offset + seg.len),
                stat_sn: if status.is_some() {
                    StatSnMode::Advance
                } else {
                    StatSnMode::Reserved
                },
            }
        }));
        exp_data_sn = data_sn;
        if good {
            return;
        }
    }
    let resp = ScsiResponse {
        response: RESPONSE_COMPLETED,
        status: st.status,
        itt: cmd.itt,
        exp_data_sn,
        residual,
        ..ScsiResponse::default()
    };
    out.extend(std::iter::once(OutPdu {
        bhs: resp.encode(),
        data: sense_segment(st.sense),
        stat_sn: StatSnMode::Advance,
    }));
}
