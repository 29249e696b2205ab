//! The one table of text keys (RFC 7143 §12 and §13): name, when it may be
//! used, who sends it, its scope, its result function, default and range.
//! Parsing, defaults, answers and phase checks are all driven from here.

/// Every key RFC 7143 defines, plus the obsoleted marker keys (§13.26).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPDUInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    AuthMethod,
    ChapA,
    ChapI,
    ChapC,
    ChapN,
    ChapR,
    OFMarker,
    IFMarker,
    OFMarkInt,
    IFMarkInt,
    TaskReporting,
    IscsiProtocolLevel,
}

/// When a key may appear ("Use" in RFC 7143 §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Security negotiation stage only (§12).
    Security,
    /// Login only: "IO" (initialize only) and "LO" (leading only) keys.
    LoginOnly,
    /// Login and Full Feature Phase ("ALL").
    All,
    /// Full Feature Phase only ("FFP").
    FullFeatureOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Initiator,
    Target,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// "SW": session-wide.
    Session,
    /// "CO": per connection.
    Connection,
}

/// The result function (RFC 7143 §5.2.2 / §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Each side states its own value; no answer is required.
    Declarative,
    /// The responder picks the first offered value it supports.
    List,
    /// Boolean AND: "Yes" only if both say "Yes".
    And,
    /// Boolean OR: "Yes" if either says "Yes".
    Or,
    /// The smaller of the two numbers.
    Min,
    /// The larger of the two numbers.
    Max,
    /// Obsolete key answered with the constant "Reject" (§13.26).
    Obsolete,
    /// Handled by its own module (SendTargets, CHAP).
    Special,
}

/// What a value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Number {
        min: u64,
        max: u64,
    },
    Boolean,
    /// Values a list key may carry; others are ignored when choosing.
    Values(&'static [&'static str]),
    /// Free text (names, aliases, addresses) up to this many bytes.
    Text {
        max_len: usize,
    },
    /// Binary or other values checked by the owning module.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDef {
    pub key: Key,
    pub name: &'static str,
    pub usage: Usage,
    /// "LO": may only be negotiated on the leading connection of a session.
    pub leading_only: bool,
    pub sender: Sender,
    pub scope: Scope,
    pub kind: Kind,
    /// RFC default, as it would appear on the wire ("" when none).
    pub default: &'static str,
    pub range: Range,
    /// RFC 7143 §13: "Irrelevant when: SessionType=Discovery".
    pub irrelevant_in_discovery: bool,
}

const DIGESTS: &[&str] = &["None", "CRC32C"];
/// RFC 7143 §13.12: 512 to 2^24-1.
const SEGMENT: Range = Range::Number {
    min: 512,
    max: 16_777_215,
};
/// RFC 7143 §4.2.7.3 / §6.1: iSCSI names are at most 223 bytes.
const NAME: Range = Range::Text { max_len: 223 };
const TEXT: Range = Range::Text { max_len: 255 };

macro_rules! key {
    ($key:ident, $name:literal, $usage:ident, $lo:literal, $sender:ident, $scope:ident,
     $kind:ident, $default:literal, $range:expr, $disc:literal) => {
        KeyDef {
            key: Key::$key,
            name: $name,
            usage: Usage::$usage,
            leading_only: $lo,
            sender: Sender::$sender,
            scope: Scope::$scope,
            kind: Kind::$kind,
            default: $default,
            range: $range,
            irrelevant_in_discovery: $disc,
        }
    };
}

/// RFC 7143 §12 and §13, in section order. Columns: key, wire name, use,
/// leading-only, senders, scope, result function, default, range,
/// irrelevant in discovery sessions.
#[rustfmt::skip]
pub static KEYS: &[KeyDef] = &[
    // §13.1
    key!(HeaderDigest, "HeaderDigest", LoginOnly, false, Both, Connection, List, "None", Range::Values(DIGESTS), false),
    key!(DataDigest, "DataDigest", LoginOnly, false, Both, Connection, List, "None", Range::Values(DIGESTS), false),
    // §13.2
    key!(MaxConnections, "MaxConnections", LoginOnly, true, Both, Session, Min, "1", Range::Number { min: 1, max: 65535 }, true),
    // §13.3
    key!(SendTargets, "SendTargets", FullFeatureOnly, false, Initiator, Session, Special, "", Range::Any, false),
    // §13.4 - §13.9
    key!(TargetName, "TargetName", LoginOnly, false, Both, Session, Declarative, "", NAME, false),
    key!(InitiatorName, "InitiatorName", LoginOnly, false, Initiator, Session, Declarative, "", NAME, false),
    key!(TargetAlias, "TargetAlias", All, false, Target, Session, Declarative, "", TEXT, false),
    key!(InitiatorAlias, "InitiatorAlias", All, false, Initiator, Session, Declarative, "", TEXT, false),
    key!(TargetAddress, "TargetAddress", All, false, Target, Session, Declarative, "", TEXT, false),
    key!(TargetPortalGroupTag, "TargetPortalGroupTag", LoginOnly, false, Target, Session, Declarative, "", Range::Number { min: 0, max: 65535 }, false),
    // §13.10 - §13.11
    key!(InitialR2T, "InitialR2T", LoginOnly, true, Both, Session, Or, "Yes", Range::Boolean, true),
    key!(ImmediateData, "ImmediateData", LoginOnly, true, Both, Session, And, "Yes", Range::Boolean, true),
    // §13.12 - §13.14
    key!(MaxRecvDataSegmentLength, "MaxRecvDataSegmentLength", All, false, Both, Connection, Declarative, "8192", SEGMENT, false),
    key!(MaxBurstLength, "MaxBurstLength", LoginOnly, true, Both, Session, Min, "262144", SEGMENT, true),
    key!(FirstBurstLength, "FirstBurstLength", LoginOnly, true, Both, Session, Min, "65536", SEGMENT, true),
    // §13.15 - §13.17
    key!(DefaultTime2Wait, "DefaultTime2Wait", LoginOnly, true, Both, Session, Max, "2", Range::Number { min: 0, max: 3600 }, false),
    key!(DefaultTime2Retain, "DefaultTime2Retain", LoginOnly, true, Both, Session, Min, "20", Range::Number { min: 0, max: 3600 }, false),
    key!(MaxOutstandingR2T, "MaxOutstandingR2T", LoginOnly, true, Both, Session, Min, "1", Range::Number { min: 1, max: 65535 }, true),
    // §13.18 - §13.20
    key!(DataPDUInOrder, "DataPDUInOrder", LoginOnly, true, Both, Session, Or, "Yes", Range::Boolean, true),
    key!(DataSequenceInOrder, "DataSequenceInOrder", LoginOnly, true, Both, Session, Or, "Yes", Range::Boolean, true),
    key!(ErrorRecoveryLevel, "ErrorRecoveryLevel", LoginOnly, true, Both, Session, Min, "0", Range::Number { min: 0, max: 2 }, false),
    // §13.21
    key!(SessionType, "SessionType", LoginOnly, true, Initiator, Session, Declarative, "Normal", Range::Values(&["Discovery", "Normal"]), false),
    // §12.1, §12.1.3
    key!(AuthMethod, "AuthMethod", Security, false, Both, Connection, List, "None", Range::Values(&["None", "CHAP", "KRB5", "SPKM1", "SPKM2", "SRP"]), false),
    key!(ChapA, "CHAP_A", Security, false, Both, Connection, Special, "", Range::Any, false),
    key!(ChapI, "CHAP_I", Security, false, Both, Connection, Special, "", Range::Any, false),
    key!(ChapC, "CHAP_C", Security, false, Both, Connection, Special, "", Range::Any, false),
    key!(ChapN, "CHAP_N", Security, false, Both, Connection, Special, "", Range::Any, false),
    key!(ChapR, "CHAP_R", Security, false, Both, Connection, Special, "", Range::Any, false),
    // §13.26: obsoleted. "SHOULD respond with Reject ... MAY alternatively
    // respond with No": Linux, libiscsi and Windows offer "No", and answering
    // "No" (AND with our "No") is what LIO and IET do.
    key!(OFMarker, "OFMarker", LoginOnly, false, Both, Connection, And, "No", Range::Boolean, false),
    key!(IFMarker, "IFMarker", LoginOnly, false, Both, Connection, And, "No", Range::Boolean, false),
    // "When an IFMarkInt or OFMarkInt key is received ... MUST respond with Reject".
    key!(OFMarkInt, "OFMarkInt", LoginOnly, false, Both, Connection, Obsolete, "", Range::Any, false),
    key!(IFMarkInt, "IFMarkInt", LoginOnly, false, Both, Connection, Obsolete, "", Range::Any, false),
    // §13.23
    key!(TaskReporting, "TaskReporting", LoginOnly, true, Both, Session, List, "RFC3720", Range::Values(&["RFC3720", "ResponseFence", "FastAbort"]), true),
    // §13.24 (RFC 7144): this implementation is RFC 7143, level 1.
    key!(IscsiProtocolLevel, "iSCSIProtocolLevel", LoginOnly, true, Both, Session, Min, "1", Range::Number { min: 0, max: 31 }, false),
];

impl Key {
    /// Exact, case-sensitive lookup (RFC 7143 §6.1: key names are case sensitive).
    pub fn from_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|d| d.name == name).map(|d| d.key)
    }

    pub fn def(self) -> &'static KeyDef {
        // Every variant has a row; the `table_is_complete` test proves it.
        KEYS.iter().find(|d| d.key == self).unwrap_or(&KEYS[0])
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }
}

/// Parses "Yes"/"No" (RFC 7143 §6.1 boolean-value).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

pub fn bool_str(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_unique() {
        for (i, d) in KEYS.iter().enumerate() {
            assert_eq!(Key::from_name(d.name), Some(d.key), "row {i}");
            assert_eq!(d.key.def().name, d.name, "row {i}");
            assert!(
                KEYS.iter().filter(|o| o.key == d.key).count() == 1,
                "{} appears twice",
                d.name
            );
        }
        assert_eq!(KEYS.len(), 34, "one row per Key variant");
        assert_eq!(
            Key::from_name("headerdigest"),
            None,
            "names are case sensitive"
        );
        assert_eq!(Key::from_name("X-com.example.Foo"), None);
    }

    #[test]
    fn defaults_fit_their_ranges() {
        for d in KEYS {
            match d.range {
                Range::Number { min, max } if !d.default.is_empty() => {
                    let v: u64 = d.default.parse().expect("numeric default");
                    assert!((min..=max).contains(&v), "{}", d.name);
                }
                Range::Boolean => assert!(parse_bool(d.default).is_some(), "{}", d.name),
                Range::Values(vs) if !d.default.is_empty() => {
                    assert!(vs.contains(&d.default), "{}", d.name);
                }
                _ => {}
            }
        }
    }
}
