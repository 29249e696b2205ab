//! The control-socket protocol (`control::protocol`) on arbitrary lines:
//! a request ietd cannot read is an error answer, never a panic, and one
//! it reads means the same once written back (ietadm writes what ietd
//! reads). Answers (`Response`) are read the same way.
#![no_main]

use iet::control::protocol::{Envelope, MAX_LINE, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_LINE {
        return;
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(data) {
        let line = serde_json::to_vec(&env).expect("a request serialises");
        let back: Envelope = serde_json::from_slice(&line).unwrap_or_else(|e| {
            panic!(
                "request does not read back: {e}\n{}",
                String::from_utf8_lossy(&line)
            )
        });
        assert_eq!(back, env);
    }
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        let line = serde_json::to_vec(&resp).expect("an answer serialises");
        serde_json::from_slice::<Response>(&line).expect("an answer reads back");
    }
});
