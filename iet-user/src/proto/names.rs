//! iSCSI names (RFC 7143 §4.2.7): iqn., eui. and naa. formats.

/// Whether `name` is a well-formed iSCSI name. Checks the type prefix,
/// length (at most 223 bytes) and the stringprep-safe character set.
pub fn valid_iscsi_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 223 {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    let body_ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
    };
    if let Some(rest) = lower.strip_prefix("iqn.") {
        // iqn.yyyy-mm.reversed.domain[:anything]
        rest.len() >= 8
            && rest.as_bytes()[4] == b'-'
            && rest[..4].bytes().all(|b| b.is_ascii_digit())
            && body_ok(rest)
    } else if let Some(hex) = lower.strip_prefix("eui.") {
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    } else if let Some(hex) = lower.strip_prefix("naa.") {
        matches!(hex.len(), 16 | 32) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_iscsi_name("iqn.2026-11.io.iet:default"));
        assert!(valid_iscsi_name("eui.02004567A425678D"));
        assert!(valid_iscsi_name("naa.52004567BA64678D"));
        assert!(!valid_iscsi_name("iqn.2026.io.iet"));
        assert!(!valid_iscsi_name("target0"));
        assert!(!valid_iscsi_name("iqn.2026-11.io iet"));
    }
}
