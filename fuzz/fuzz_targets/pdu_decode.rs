//! Framing and every PDU loader on arbitrary bytes, with and without digests.
#![no_main]

use bytes::BytesMut;
use iet::proto::pdu::{
    DataOut, DigestSettings, LogoutRequest, NopOut, PduDecoder, ScsiCommand, SnackRequest,
    TaskMgmtRequest, TextRequest,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut dec = PduDecoder {
        max_data_segment_len: 8192,
        digests: DigestSettings {
            header: mode & 1 != 0,
            data: mode & 2 != 0,
        },
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(pdu)) = dec.decode(&mut buf) {
        let _ = ScsiCommand::load(&pdu);
        let _ = DataOut::load(&pdu.bhs);
        let _ = NopOut::load(&pdu.bhs);
        let _ = TaskMgmtRequest::load(&pdu.bhs);
        let _ = LogoutRequest::load(&pdu.bhs);
        let _ = SnackRequest::load(&pdu.bhs);
        let _ = TextRequest::load(&pdu.bhs);
    }
});
