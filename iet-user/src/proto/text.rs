//! The text data segment of Login and Text PDUs (RFC 7143 §6.1): `key=value`
//! pairs, each NUL-terminated, plus the value encodings (decimal, `0x` hex,
//! `0b` base64) and reassembly of segments split with the C bit.
//!
//! Everything here is bounded: a data segment is at most [`MAX_TEXT_LEN`]
//! bytes after reassembly, so no allocation follows an unchecked length.

use std::fmt::Write as _;

/// RFC 7143 §6.1: "A key-name ... MUST NOT exceed 63 bytes".
pub const MAX_KEY_NAME_LEN: usize = 63;
/// RFC 7143 §6.1: a text value is at most 255 bytes unless the key says otherwise.
pub const MAX_VALUE_LEN: usize = 255;
/// RFC 7143 §6.1 / §12.1.3: large-binary-values (CHAP_C, CHAP_R) may be up to
/// 8192 bytes in their encoded form.
pub const MAX_LONG_VALUE_LEN: usize = 8192;
/// Upper bound on a reassembled text data segment (login or Text Request).
/// Real initiators send well under 4 KiB; 64 KiB leaves room for vendor keys.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// At most this many pairs in one negotiation sequence.
pub const MAX_PAIRS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text data is {len} bytes, more than the {max}-byte bound")]
    TooLong { len: usize, max: usize },
    #[error("more than {MAX_PAIRS} key=value pairs")]
    TooManyPairs,
    #[error("pair without '=': {0:?}")]
    MissingEquals(String),
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    #[error("value of {key} is {len} bytes, more than {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    #[error("value of {0} is not UTF-8")]
    NotUtf8(String),
    #[error("key {0} offered twice")]
    DuplicateKey(String),
    #[error("invalid numerical value {0:?}")]
    InvalidNumber(String),
    #[error("invalid binary value {0:?}")]
    InvalidBinary(String),
}

/// One `key=value` pair, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// RFC 7143 §6.1: key-name characters are letters, digits, `.`, `-`, `+`,
/// `@`, `_`; at most 63 bytes; never empty. `#` is accepted too because
/// IANA-registered extension keys are spelled `X#name` (RFC 7143 §13.5.2).
pub fn is_valid_key_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_NAME_LEN
        && key.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_' | b'#')
        })
}

/// Parses a whole (reassembled) data segment. Empty pairs (`\0\0`, trailing
/// NULs) are skipped; a final pair without its NUL is accepted, since some
/// initiators pad the segment. A key appearing twice is an error (RFC 7143
/// §6.3: an attempt to redeclare or renegotiate a key "MUST be detected";
/// the target answers Login reject, initiator error). Callers that send
/// repeated keys (SendTargets answers) encode, never parse, them.
pub fn parse_pairs(data: &[u8]) -> Result<Vec<KeyValue>, TextError> {
    if data.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong {
            len: data.len(),
            max: MAX_TEXT_LEN,
        });
    }
    let mut pairs: Vec<KeyValue> = Vec::new();
    for raw in data.split(|b| *b == 0) {
        if raw.is_empty() {
            continue;
        }
        if pairs.len() == MAX_PAIRS {
            return Err(TextError::TooManyPairs);
        }
        let Some(eq) = raw.iter().position(|b| *b == b'=') else {
            return Err(TextError::MissingEquals(lossy(raw)));
        };
        let (key, value) = (&raw[..eq], &raw[eq + 1..]);
        let key = match std::str::from_utf8(key) {
            Ok(k) if is_valid_key_name(k) => k,
            _ => return Err(TextError::InvalidKeyName(lossy(key))),
        };
        if value.len() > MAX_LONG_VALUE_LEN {
            return Err(TextError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
                max: MAX_LONG_VALUE_LEN,
            });
        }
        let Ok(value) = std::str::from_utf8(value) else {
            return Err(TextError::NotUtf8(key.to_owned()));
        };
        if pairs.iter().any(|p| p.key == key) {
            return Err(TextError::DuplicateKey(key.to_owned()));
        }
        pairs.push(KeyValue::new(key, value));
    }
    Ok(pairs)
}

fn lossy(bytes: &[u8]) -> String {
    let cut = bytes.len().min(MAX_KEY_NAME_LEN + 1);
    String::from_utf8_lossy(&bytes[..cut]).into_owned()
}

/// Appends `key=value\0`.
pub fn push_pair(out: &mut Vec<u8>, key: &str, value: &str) {
    out.reserve(key.len() + value.len() + 2);
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// Encodes pairs into a data segment.
pub fn encode_pairs(pairs: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pairs {
        push_pair(&mut out, &p.key, &p.value);
    }
    out
}

/// RFC 7143 §6.1 numerical-value: decimal, or a hex-constant `0x…` of at
/// most 64 bits. (base64 numbers are legal but no deployed initiator sends
/// them for numerical keys; they are refused.)
pub fn parse_number(value: &str) -> Result<u64, TextError> {
    let bad = || TextError::InvalidNumber(value.chars().take(32).collect());
    let parsed = if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u64::from_str_radix(hex, 16)
    } else {
        // RFC 7143 §6.1: decimal-constant, no sign, no leading '+'.
        if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        value.parse::<u64>()
    };
    parsed.map_err(|_| bad())
}

/// RFC 7143 §6.1 binary-value / large-binary-value: `0x` hex or `0b` base64.
/// Bounded by [`MAX_LONG_VALUE_LEN`] on the encoded form.
pub fn decode_binary(value: &str) -> Result<Vec<u8>, TextError> {
    let bad = || TextError::InvalidBinary(value.chars().take(32).collect());
    if value.len() > MAX_LONG_VALUE_LEN {
        return Err(bad());
    }
    let (prefix, body) = value.split_at_checked(2).ok_or_else(bad)?;
    let out = match prefix {
        "0x" | "0X" => decode_hex(body),
        "0b" | "0B" => decode_base64(body),
        _ => None,
    };
    match out {
        Some(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(bad()),
    }
}

/// `0x` followed by lowercase hex, the form every initiator parses.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `0b` followed by standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    s.push_str("0b");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Odd-length hex is accepted with an implied leading zero, as LIO does.
fn decode_hex(body: &str) -> Option<Vec<u8>> {
    let digits = body.as_bytes();
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    let (head, rest) = if digits.len() % 2 == 1 {
        digits.split_at(1)
    } else {
        digits.split_at(0)
    };
    if let [d] = head {
        out.push(hex_val(*d)?);
    }
    for pair in rest.chunks_exact(2) {
        out.push((hex_val(pair[0])? << 4) | hex_val(pair[1])?);
    }
    Some(out)
}

fn hex_val(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

fn decode_base64(body: &str) -> Option<Vec<u8>> {
    let trimmed = body.trim_end_matches('=');
    if body.len() - trimmed.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in trimmed.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover sextet cannot encode a byte.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

/// Reassembles a text segment sent over several PDUs with the C (continue)
/// bit (RFC 7143 §11.10.2, §11.12.2): a pair may be split anywhere, so raw
/// bytes are concatenated and parsed once the last piece arrives.
#[derive(Debug, Clone, Default)]
pub struct TextReassembly {
    buf: Vec<u8>,
}

impl TextReassembly {
    /// Adds one PDU's data; returns the whole segment when `continues` is false.
    pub fn push(&mut self, data: &[u8], continues: bool) -> Result<Option<Vec<u8>>, TextError> {
        let len = self.buf.len().saturating_add(data.len());
        if len > MAX_TEXT_LEN {
            self.buf = Vec::new();
            return Err(TextError::TooLong {
                len,
                max: MAX_TEXT_LEN,
            });
        }
        self.buf.extend_from_slice(data);
        if continues {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_nul_terminated_pairs() {
        let pairs =
            parse_pairs(b"InitiatorName=iqn.1993-08.org.debian:01:abc\0SessionType=Normal\0")
                .expect("valid segment");
        assert_eq!(
            pairs,
            vec![
                KeyValue::new("InitiatorName", "iqn.1993-08.org.debian:01:abc"),
                KeyValue::new("SessionType", "Normal"),
            ]
        );
        // Tolerated: missing last NUL, empty pairs, empty values.
        let pairs = parse_pairs(b"A=1\0\0B=\0C=x").expect("lenient forms");
        assert_eq!(pairs.len(), 3, "{pairs:?}");
        assert_eq!(pairs[1].value, "");
        assert_eq!(
            parse_pairs(b"X#org.iana.k=v\0").expect("X# key")[0].key,
            "X#org.iana.k"
        );
        // Values may contain '='.
        assert_eq!(
            parse_pairs(b"X-a=b=c\0").expect("eq in value")[0].value,
            "b=c"
        );
    }

    #[test]
    fn rejects_malformed_segments() {
        assert!(matches!(
            parse_pairs(b"NoEquals\0"),
            Err(TextError::MissingEquals(_))
        ));
        assert!(matches!(
            parse_pairs(b"=v\0"),
            Err(TextError::InvalidKeyName(_))
        ));
        assert!(matches!(
            parse_pairs(b"Bad Key=v\0"),
            Err(TextError::InvalidKeyName(_))
        ));
        let long_key = format!("{}=v\0", "K".repeat(64));
        assert!(matches!(
            parse_pairs(long_key.as_bytes()),
            Err(TextError::InvalidKeyName(_))
        ));
        let ok_key = format!("{}=v\0", "K".repeat(63));
        assert!(parse_pairs(ok_key.as_bytes()).is_ok());
        assert!(matches!(
            parse_pairs(b"A=1\0B=2\0A=3\0"),
            Err(TextError::DuplicateKey(k)) if k == "A"
        ));
        assert!(matches!(
            parse_pairs(b"A=\xff\0"),
            Err(TextError::NotUtf8(_))
        ));
        let long_value = format!("A={}\0", "v".repeat(MAX_LONG_VALUE_LEN + 1));
        assert!(matches!(
            parse_pairs(long_value.as_bytes()),
            Err(TextError::ValueTooLong { .. })
        ));
        let huge = vec![b'a'; MAX_TEXT_LEN + 1];
        assert!(matches!(parse_pairs(&huge), Err(TextError::TooLong { .. })));
        let many: Vec<u8> = (0..=MAX_PAIRS)
            .flat_map(|i| format!("K{i}=v\0").into_bytes())
            .collect();
        assert_eq!(parse_pairs(&many), Err(TextError::TooManyPairs));
    }

    #[test]
    fn numbers_in_decimal_and_hex() {
        assert_eq!(parse_number("8192"), Ok(8192));
        assert_eq!(parse_number("0x2000"), Ok(8192));
        assert_eq!(parse_number("0XfF"), Ok(255));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "1k",
            "0x",
            "0x1ffffffffffffffff",
            "18446744073709551616",
            " 1",
        ] {
            assert!(parse_number(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn binary_values_hex_and_base64() {
        assert_eq!(decode_binary("0x0102ff"), Ok(vec![1, 2, 0xff]));
        assert_eq!(decode_binary("0xABC"), Ok(vec![0x0a, 0xbc]));
        // RFC 4648 test vectors.
        assert_eq!(decode_binary("0bZm9vYmFy"), Ok(b"foobar".to_vec()));
        assert_eq!(decode_binary("0bZm9vYg=="), Ok(b"foob".to_vec()));
        assert_eq!(decode_binary("0BZm9vYmE="), Ok(b"fooba".to_vec()));
        assert_eq!(encode_base64(b"fooba"), "0bZm9vYmE=");
        assert_eq!(encode_base64(b"foob"), "0bZm9vYg==");
        assert_eq!(encode_hex(&[0, 0xab]), "0x00ab");
        for bad in ["", "0x", "0b", "12", "0xzz", "0b!!!!", "0bZ", "0bZm9v==="] {
            assert!(decode_binary(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn reassembly_is_bounded() {
        let mut r = TextReassembly::default();
        assert_eq!(r.push(b"Initiator", true), Ok(None));
        assert_eq!(
            r.push(b"Name=x\0", false),
            Ok(Some(b"InitiatorName=x\0".to_vec()))
        );
        assert!(r.is_empty());
        let chunk = vec![b'a'; 8192];
        for _ in 0..(MAX_TEXT_LEN / 8192) {
            assert_eq!(r.push(&chunk, true), Ok(None));
        }
        assert!(matches!(r.push(b"x", true), Err(TextError::TooLong { .. })));
        assert!(r.is_empty(), "buffer dropped after overflow");
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_pairs(&data);
        }

        #[test]
        fn pairs_round_trip(pairs in proptest::collection::btree_map(
            "[A-Za-z0-9.+@_-]{1,63}", "[ -~]{0,255}", 0..20)) {
            let pairs: Vec<KeyValue> = pairs.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let encoded = encode_pairs(&pairs);
            prop_assert_eq!(parse_pairs(&encoded).expect("own encoding parses"), pairs);
        }

        #[test]
        fn binary_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..300)) {
            prop_assert_eq!(decode_binary(&encode_hex(&bytes)).expect("hex"), bytes.clone());
            prop_assert_eq!(decode_binary(&encode_base64(&bytes)).expect("base64"), bytes);
        }

        #[test]
        fn binary_decoder_never_panics(s in "0[xXbB][ -~]{0,64}") {
            let _ = decode_binary(&s);
        }
    }
}
