//! iSCSI TransportIDs (SPC-5 §7.6.4.6): format 00b names an initiator device (every one
//! of its ports), format 01b one initiator port, `<name>,i,0x<ISID>`.

use super::super::sense::SenseReason;

/// PROTOCOL IDENTIFIER for iSCSI (SPC-5 table 444).
const ISCSI: u8 = 0x5;
/// The ADDITIONAL LENGTH is at least 20 and a multiple of four.
const MIN_ADDITIONAL_LENGTH: usize = 20;

/// What a TransportID names, as the initiator-port strings nexuses and registrations use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TransportId {
    /// Format 00b: the iSCSI name of an initiator device.
    Name(String),
    /// Format 01b: one initiator port, normalized to `<name>,i,0x<isid in lower-case hex>`.
    Port(String),
}

impl TransportId {
    /// The string registrations keep: a bare name matches every port of that initiator.
    pub(super) fn initiator_port(&self) -> &str {
        match self {
            Self::Name(s) | Self::Port(s) => s,
        }
    }
}

/// Decode one TransportID at the start of `b`; returns it and the bytes it took.
/// Malformed TransportIDs are INVALID FIELD IN PARAMETER LIST (SPC-5 §6.17.4).
pub(super) fn parse(b: &[u8]) -> Result<(TransportId, usize), SenseReason> {
    let bad = SenseReason::InvalidFieldInParameterList;
    let [b0, _, l0, l1, ..] = *b else {
        return Err(SenseReason::ParameterListLengthError);
    };
    if b0 & 0x0f != ISCSI {
        return Err(bad);
    }
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    if len < MIN_ADDITIONAL_LENGTH || len % 4 != 0 {
        return Err(bad);
    }
    let body = b
        .get(4..4 + len)
        .ok_or(SenseReason::ParameterListLengthError)?;
    // The name is NUL-terminated (and NUL-padded).
    let end = body.iter().position(|&c| c == 0).ok_or(bad)?;
    let text = std::str::from_utf8(&body[..end]).map_err(|_| bad)?;
    let id = match b0 >> 6 {
        0b00 => {
            if text.is_empty() || text.contains(',') {
                return Err(bad);
            }
            TransportId::Name(text.to_owned())
        }
        0b01 => {
            // SEPARATOR ",i,0x" (either case), then the ISID as 12 hex digits.
            let lower = text.to_ascii_lowercase();
            let pos = lower.find(",i,0x").ok_or(bad)?;
            let (name, isid) = (&text[..pos], &lower[pos + 5..]);
            if name.is_empty() || isid.len() != 12 || !isid.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad);
            }
            TransportId::Port(format!("{name},i,0x{isid}"))
        }
        _ => return Err(bad),
    };
    Ok((id, 4 + len))
}

/// Encode the TransportID for a registration's initiator port (READ FULL STATUS): format
/// 01b for a port, 00b for a bare initiator name.
pub(crate) fn encode(initiator_port: &str) -> Vec<u8> {
    let format = if initiator_port.contains(",i,0x") {
        0x40
    } else {
        0x00
    };
    let mut name: Vec<u8> = initiator_port.bytes().take(220).collect();
    name.push(0);
    name.resize(name.len().next_multiple_of(4).max(MIN_ADDITIONAL_LENGTH), 0);
    let mut t = vec![format | ISCSI, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_round_trip() {
        let port = "iqn.2026-01.test:a,i,0x23d000000001";
        let t = encode(port);
        assert_eq!(t[0], 0x45);
        assert_eq!(t.len() % 4, 0);
        assert_eq!(parse(&t), Ok((TransportId::Port(port.into()), t.len())));
        let t = encode("iqn.2026-01.test:a");
        assert_eq!(t[0], 0x05);
        assert_eq!(t.len(), 24);
        assert_eq!(
            parse(&t),
            Ok((TransportId::Name("iqn.2026-01.test:a".into()), 24))
        );
    }

    #[test]
    fn separator_and_isid_are_normalized() {
        let mut t = vec![0x45, 0, 0, 32];
        let mut name = b"iqn.x:y,I,0X23D000000001".to_vec();
        name.resize(32, 0);
        t.extend_from_slice(&name);
        assert_eq!(
            parse(&t).map(|(id, _)| id),
            Ok(TransportId::Port("iqn.x:y,i,0x23d000000001".into()))
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        let bad = Err(SenseReason::InvalidFieldInParameterList);
        // Fibre Channel protocol identifier.
        let mut t = encode("iqn.x:y");
        t[0] = 0x00;
        assert_eq!(parse(&t), bad);
        // ADDITIONAL LENGTH not a multiple of four, or below 20.
        let mut t = encode("iqn.x:y");
        t[3] = 21;
        assert_eq!(
            parse(&t).map(|_| ()),
            Err(SenseReason::InvalidFieldInParameterList)
        );
        t[3] = 16;
        assert_eq!(
            parse(&t).map(|_| ()),
            Err(SenseReason::InvalidFieldInParameterList)
        );
        // Format 01b without an ISID, format 00b with one, truncated data.
        let mut t = encode("iqn.x:y");
        t[0] = 0x45;
        assert_eq!(parse(&t), bad);
        let mut t = encode("iqn.x:y,i,0x23d000000001");
        t[0] = 0x05;
        assert_eq!(parse(&t), bad);
        let t = encode("iqn.x:y");
        assert_eq!(
            parse(&t[..10]).map(|_| ()),
            Err(SenseReason::ParameterListLengthError)
        );
    }
}
