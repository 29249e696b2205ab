//! The Key=Value codec and its reassembly on arbitrary bytes.
#![no_main]

use iet::proto::text::{TextReassembly, parse_pairs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse_pairs(data) {
        let encoded = iet::proto::text::encode_pairs(&pairs);
        assert_eq!(parse_pairs(&encoded).ok(), Some(pairs));
    }
    let mut r = TextReassembly::default();
    for chunk in data.chunks(37) {
        if r.push(chunk, true).is_err() {
            break;
        }
    }
});
