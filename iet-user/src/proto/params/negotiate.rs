//! The responder side of text negotiation (RFC 7143 §5.2, §6.2): the
//! initiator offers, we answer from the key table and our `TargetParams`;
//! when our limits are stricter than a default the initiator left alone, we
//! offer the key ourselves before leaving the operational stage.

use std::collections::BTreeMap;

use super::table::{Key, Kind, Range, Sender, Usage, bool_str, parse_bool};
use super::{ConnectionParams, Digest, Ours, SessionParams, TargetParams};
use crate::proto::text::{KeyValue, parse_number};

/// RFC 7143 §6.2 answer constants.
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
pub const IRRELEVANT: &str = "Irrelevant";
pub const REJECT: &str = "Reject";

/// Offers that end the login with Initiator Error (0x0200).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// RFC 7143 §6.3: neither side should declare or negotiate a key more
    /// than once during login, and an attempt "MUST be detected" and
    /// answered with Login reject (initiator error). A declarative key
    /// repeated with the same value is tolerated, because libiscsi repeats
    /// InitiatorName/TargetName/SessionType in the operational stage.
    #[error("key {0} offered twice")]
    OfferedTwice(&'static str),
    /// A declarative value that cannot be answered with Reject.
    #[error("invalid value for {key}: {value:?}")]
    InvalidDeclaration { key: &'static str, value: String },
    /// Our own offer answered with a value outside what we offered.
    #[error("invalid answer for {key}: {value:?}")]
    InvalidAnswer { key: &'static str, value: String },
    /// No value acceptable to us was agreed (e.g. we require CRC32C and the
    /// initiator only offered None).
    #[error("no acceptable value agreed for {0}")]
    Unacceptable(&'static str),
    /// Security keys belong to the authentication module and stage.
    #[error("key {0} is not allowed in this stage")]
    WrongStage(&'static str),
}

/// Login-time negotiation state for one connection.
#[derive(Debug, Clone)]
pub struct Negotiation {
    params: TargetParams,
    discovery: bool,
    leading: bool,
    /// Results of list, boolean and numerical keys, as wire strings.
    agreed: BTreeMap<Key, String>,
    /// Values the initiator declared.
    declared: BTreeMap<Key, String>,
    /// Our offers waiting for the initiator's answer.
    proposed: BTreeMap<Key, String>,
    /// Every key the initiator has sent so far in this login.
    seen: BTreeMap<Key, String>,
    declared_own_mrdsl: bool,
}

impl Negotiation {
    /// `leading` is false when the login adds a connection to an existing
    /// session (TSIH ≠ 0): leading-only keys are then Irrelevant.
    pub fn new(params: TargetParams, discovery: bool, leading: bool) -> Negotiation {
        Negotiation {
            params,
            discovery,
            leading,
            agreed: BTreeMap::new(),
            declared: BTreeMap::new(),
            proposed: BTreeMap::new(),
            seen: BTreeMap::new(),
            declared_own_mrdsl: false,
        }
    }

    pub fn params(&self) -> &TargetParams {
        &self.params
    }

    /// A value the initiator declared (InitiatorName, TargetName, ...).
    pub fn declared(&self, key: Key) -> Option<&str> {
        self.declared.get(&key).map(String::as_str)
    }

    /// Handles one pair the initiator sent during login (security keys are
    /// routed to `auth` by the caller). Returns the answer to send, if any.
    pub fn on_pair(&mut self, kv: &KeyValue) -> Result<Option<KeyValue>, NegotiationError> {
        let Some(key) = Key::from_name(&kv.key) else {
            // RFC 7143 §6.2: unknown keys, X- and X# keys included.
            return Ok(Some(KeyValue::new(kv.key.clone(), NOT_UNDERSTOOD)));
        };
        let def = key.def();
        if def.usage == Usage::Security {
            return Err(NegotiationError::WrongStage(def.name));
        }
        if let Some(ours) = self.proposed.remove(&key) {
            return self.on_answer(key, &ours, &kv.value).map(|()| None);
        }
        if let Some(previous) = self.seen.get(&key) {
            if def.kind == Kind::Declarative && *previous == kv.value {
                return Ok(None);
            }
            return Err(NegotiationError::OfferedTwice(def.name));
        }
        self.seen.insert(key, kv.value.clone());
        if def.sender == Sender::Target || def.usage == Usage::FullFeatureOnly {
            return Ok(Some(KeyValue::new(def.name, IRRELEVANT)));
        }
        if (self.discovery && def.irrelevant_in_discovery) || (def.leading_only && !self.leading) {
            return Ok(Some(KeyValue::new(def.name, IRRELEVANT)));
        }
        let answer = match def.kind {
            Kind::Declarative => {
                self.declare(key, &kv.value)?;
                return Ok(None);
            }
            Kind::Obsolete | Kind::Special => REJECT.to_owned(),
            Kind::List => self.choose(key, &kv.value),
            Kind::And | Kind::Or => match parse_bool(&kv.value) {
                Some(theirs) => {
                    let ours = self.our_bool(key);
                    bool_str(if def.kind == Kind::And {
                        theirs && ours
                    } else {
                        theirs || ours
                    })
                    .to_owned()
                }
                None => REJECT.to_owned(),
            },
            Kind::Min | Kind::Max => match in_range(key, &kv.value) {
                Some(theirs) => {
                    let ours = self.our_number(key);
                    let result = if def.kind == Kind::Min {
                        theirs.min(ours)
                    } else {
                        theirs.max(ours)
                    };
                    result.to_string()
                }
                None => REJECT.to_owned(),
            },
        };
        if answer != REJECT {
            self.agreed.insert(key, answer.clone());
        }
        Ok(Some(KeyValue::new(def.name, answer)))
    }

    fn declare(&mut self, key: Key, value: &str) -> Result<(), NegotiationError> {
        let valid = match key.def().range {
            Range::Number { .. } => in_range(key, value).is_some(),
            Range::Text { max_len } => !value.is_empty() && value.len() <= max_len,
            Range::Values(vs) => vs.contains(&value),
            Range::Boolean => parse_bool(value).is_some(),
            Range::Any => true,
        };
        if !valid {
            return Err(NegotiationError::InvalidDeclaration {
                key: key.name(),
                value: value.chars().take(64).collect(),
            });
        }
        self.declared.insert(key, value.to_owned());
        Ok(())
    }

    /// The initiator's answer to one of our offers.
    fn on_answer(&mut self, key: Key, ours: &str, value: &str) -> Result<(), NegotiationError> {
        let def = key.def();
        if matches!(value, NOT_UNDERSTOOD | IRRELEVANT | REJECT) {
            // The default stays in force; finish() clamps to our limits.
            return Ok(());
        }
        let ok = match def.kind {
            Kind::Min => in_range(key, value)
                .zip(parse_number(ours).ok())
                .is_some_and(|(v, o)| v <= o),
            Kind::Max => in_range(key, value)
                .zip(parse_number(ours).ok())
                .is_some_and(|(v, o)| v >= o),
            Kind::And | Kind::Or => parse_bool(value).is_some(),
            Kind::List => ours.split(',').any(|o| o == value),
            _ => true,
        };
        if !ok {
            return Err(NegotiationError::InvalidAnswer {
                key: def.name,
                value: value.chars().take(64).collect(),
            });
        }
        self.agreed.insert(key, value.to_owned());
        Ok(())
    }

    /// List result: the first offered value we support (RFC 7143 §6.2.1, list negotiations).
    fn choose(&self, key: Key, offered: &str) -> String {
        let supported = match (key, self.params.ours(key)) {
            (_, Some(Ours::List(values))) => values,
            (Key::TaskReporting, _) => vec!["RFC3720"],
            _ => Vec::new(),
        };
        offered
            .split(',')
            .find(|v| supported.contains(v))
            .map_or_else(|| REJECT.to_owned(), str::to_owned)
    }

    /// Our side of a boolean key, from the target's declared limits.
    fn our_bool(&self, key: Key) -> bool {
        match (key, self.params.ours(key)) {
            (_, Some(Ours::Bool(b))) => b,
            // We deliver data in order whatever is agreed (OR with Yes).
            (Key::DataPDUInOrder | Key::DataSequenceInOrder, _) => true,
            // OFMarker, IFMarker: markers are not implemented.
            _ => false,
        }
    }

    /// Our side of a numerical key, from the target's declared limits.
    fn our_number(&self, key: Key) -> u64 {
        let p = &self.params;
        match (key, p.ours(key)) {
            // RFC 7143 §13.14: "FirstBurstLength MUST NOT exceed MaxBurstLength".
            (Key::FirstBurstLength, _) => u64::from(p.first_burst_length.min(p.max_burst_length)),
            (Key::IscsiProtocolLevel, _) => 1,
            (_, Some(Ours::Number(n))) => n,
            _ => 0,
        }
    }

    /// Our declarations for the next operational-stage response: our
    /// MaxRecvDataSegmentLength, once (RFC 7143 §13.12).
    pub fn declarations(&mut self) -> Vec<KeyValue> {
        if self.declared_own_mrdsl {
            return Vec::new();
        }
        self.declared_own_mrdsl = true;
        vec![KeyValue::new(
            Key::MaxRecvDataSegmentLength.name(),
            self.params.max_recv_data_segment_length.to_string(),
        )]
    }

    /// Keys we must offer before the login may leave the operational stage:
    /// those the initiator did not negotiate whose RFC default lies outside
    /// our limits. Empty when there is nothing to wait for.
    pub fn target_offers(&mut self) -> Vec<KeyValue> {
        if !self.leading {
            return Vec::new();
        }
        let mut offers = Vec::new();
        for def in super::KEYS {
            let key = def.key;
            if self.seen.contains_key(&key)
                || self.agreed.contains_key(&key)
                || self.proposed.contains_key(&key)
                || (self.discovery && def.irrelevant_in_discovery)
                || def.sender != Sender::Both
                || def.usage != Usage::LoginOnly
            {
                continue;
            }
            let value = match def.kind {
                Kind::Min | Kind::Max => {
                    let Ok(default) = parse_number(def.default) else {
                        continue;
                    };
                    let ours = self.our_number(key);
                    let needed = if def.kind == Kind::Min {
                        ours < default
                    } else {
                        ours > default
                    };
                    if !needed {
                        continue;
                    }
                    ours.to_string()
                }
                Kind::And if key == Key::ImmediateData => {
                    if self.our_bool(key) || def.default != "Yes" {
                        continue;
                    }
                    bool_str(false).to_owned()
                }
                Kind::List => match self.params.ours(key) {
                    // Only when our list excludes the default (None digests).
                    Some(Ours::List(ours)) if !ours.is_empty() && !ours.contains(&def.default) => {
                        ours.join(",")
                    }
                    _ => continue,
                },
                _ => continue,
            };
            self.proposed.insert(key, value.clone());
            offers.push(KeyValue::new(def.name, value));
        }
        offers
    }

    /// True while an offer of ours is unanswered.
    pub fn awaiting_answers(&self) -> bool {
        !self.proposed.is_empty()
    }

    fn number_or_default(&self, key: Key) -> u64 {
        let value = self
            .agreed
            .get(&key)
            .map_or(key.def().default, String::as_str);
        parse_number(value).unwrap_or(0)
    }

    fn bool_or_default(&self, key: Key) -> bool {
        let value = self
            .agreed
            .get(&key)
            .map_or(key.def().default, String::as_str);
        parse_bool(value).unwrap_or(false)
    }

    fn digest(&self, key: Key) -> Digest {
        self.agreed
            .get(&key)
            .and_then(|v| Digest::from_wire(v))
            .unwrap_or(Digest::None)
    }

    /// Checks that what was agreed (or defaulted) is within our policy;
    /// only digests can fall outside it, when the initiator's offer was
    /// answered Reject and the default None stays in force.
    pub fn check_policy(&self) -> Result<(), NegotiationError> {
        for key in [Key::HeaderDigest, Key::DataDigest] {
            let Some(Ours::List(allowed)) = self.params.ours(key) else {
                continue;
            };
            if !allowed.contains(&self.digest(key).wire_name()) {
                return Err(NegotiationError::Unacceptable(key.name()));
            }
        }
        Ok(())
    }

    /// The negotiated values. Numbers are clamped to our limits as a last
    /// line of defence (an initiator that ignored our offer cannot push us
    /// past what we configured).
    pub fn finish(&self) -> (SessionParams, ConnectionParams) {
        let p = &self.params;
        let clamp = |key: Key| self.number_or_default(key).min(self.our_number(key));
        let narrow16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        let narrow32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let max_burst_length = narrow32(clamp(Key::MaxBurstLength));
        // Boolean results computed again from both sides, so an initiator
        // that ignored our answer cannot get what we refused.
        let and = |key: Key| self.bool_or_default(key) && self.our_bool(key);
        let or = |key: Key| self.bool_or_default(key) || self.our_bool(key);
        let session = SessionParams {
            max_connections: narrow16(clamp(Key::MaxConnections)),
            initial_r2t: or(Key::InitialR2T),
            immediate_data: and(Key::ImmediateData),
            max_burst_length,
            // RFC 7143 §13.14: "FirstBurstLength MUST NOT exceed MaxBurstLength".
            first_burst_length: narrow32(clamp(Key::FirstBurstLength)).min(max_burst_length),
            default_time2wait: narrow16(self.number_or_default(Key::DefaultTime2Wait)),
            default_time2retain: narrow16(clamp(Key::DefaultTime2Retain)),
            max_outstanding_r2t: narrow16(clamp(Key::MaxOutstandingR2T)),
            data_pdu_in_order: or(Key::DataPDUInOrder),
            data_sequence_in_order: or(Key::DataSequenceInOrder),
            error_recovery_level: clamp(Key::ErrorRecoveryLevel) as u8,
            task_reporting: "RFC3720",
            iscsi_protocol_level: clamp(Key::IscsiProtocolLevel) as u8,
        };
        let theirs = self
            .declared
            .get(&Key::MaxRecvDataSegmentLength)
            .and_then(|v| parse_number(v).ok())
            .unwrap_or(8192);
        let connection = ConnectionParams {
            header_digest: self.digest(Key::HeaderDigest),
            data_digest: self.digest(Key::DataDigest),
            max_send_data_segment_length: narrow32(
                theirs.min(u64::from(p.max_xmit_data_segment_length.max(512))),
            ),
            max_recv_data_segment_length: p.max_recv_data_segment_length,
        };
        (session, connection)
    }
}

fn in_range(key: Key, value: &str) -> Option<u64> {
    let n = parse_number(value).ok()?;
    match key.def().range {
        Range::Number { min, max } => (min..=max).contains(&n).then_some(n),
        _ => Some(n),
    }
}

/// What to do with one pair of a Text Request in Full Feature Phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullFeatureAnswer {
    pub answer: Option<KeyValue>,
    /// The initiator re-declared MaxRecvDataSegmentLength (RFC 7143 §13.12,
    /// "Use: ALL"): our max send segment changes from the next PDU.
    pub max_send_data_segment_length: Option<u32>,
}

/// Keys other than SendTargets in a Full Feature Phase Text Request
/// (RFC 7143 §6.2, §13): login-only keys are answered Reject, unknown keys
/// NotUnderstood; MaxRecvDataSegmentLength and InitiatorAlias may change.
pub fn full_feature_answer(kv: &KeyValue) -> FullFeatureAnswer {
    let mut out = FullFeatureAnswer {
        answer: None,
        max_send_data_segment_length: None,
    };
    let Some(key) = Key::from_name(&kv.key) else {
        out.answer = Some(KeyValue::new(kv.key.clone(), NOT_UNDERSTOOD));
        return out;
    };
    let def = key.def();
    out.answer = match (key, def.usage) {
        (Key::MaxRecvDataSegmentLength, _) => match in_range(key, &kv.value) {
            Some(v) => {
                out.max_send_data_segment_length = u32::try_from(v).ok();
                None
            }
            None => Some(KeyValue::new(def.name, REJECT)),
        },
        (Key::InitiatorAlias, _) => None,
        (_, Usage::All) => Some(KeyValue::new(def.name, IRRELEVANT)),
        _ => Some(KeyValue::new(def.name, REJECT)),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: &mut Negotiation, key: &str, value: &str) -> Option<String> {
        n.on_pair(&KeyValue::new(key, value))
            .unwrap_or_else(|e| panic!("{key}={value}: {e}"))
            .map(|kv| {
                assert_eq!(kv.key, key, "answer names the offered key");
                kv.value
            })
    }

    fn normal() -> Negotiation {
        Negotiation::new(TargetParams::default(), false, true)
    }

    #[test]
    fn numerical_min_and_max() {
        let mut n = normal();
        assert_eq!(
            answer(&mut n, "MaxBurstLength", "16776192").as_deref(),
            Some("1048576")
        );
        assert_eq!(
            answer(&mut n, "FirstBurstLength", "4096").as_deref(),
            Some("4096")
        );
        assert_eq!(answer(&mut n, "MaxConnections", "1").as_deref(), Some("1"));
        assert_eq!(
            answer(&mut n, "ErrorRecoveryLevel", "2").as_deref(),
            Some("0")
        );
        assert_eq!(
            answer(&mut n, "DefaultTime2Wait", "0").as_deref(),
            Some("2")
        );
        assert_eq!(
            answer(&mut n, "DefaultTime2Retain", "0").as_deref(),
            Some("0")
        );
        assert_eq!(
            answer(&mut n, "MaxOutstandingR2T", "0x10").as_deref(),
            Some("8")
        );
        assert_eq!(
            answer(&mut n, "iSCSIProtocolLevel", "2").as_deref(),
            Some("1")
        );
        let (s, _) = n.finish();
        assert_eq!(s.max_burst_length, 1_048_576);
        assert_eq!(s.first_burst_length, 4096);
        assert_eq!(s.max_connections, 1);
        assert_eq!(s.error_recovery_level, 0);
        assert_eq!(s.default_time2wait, 2);
        assert_eq!(s.default_time2retain, 0);
        assert_eq!(s.max_outstanding_r2t, 8);
    }

    #[test]
    fn boolean_and_or() {
        let mut n = Negotiation::new(
            TargetParams {
                immediate_data: false,
                initial_r2t: false,
                ..TargetParams::default()
            },
            false,
            true,
        );
        // AND: Yes only if both say Yes; OR: Yes if either does.
        assert_eq!(
            answer(&mut n, "ImmediateData", "Yes").as_deref(),
            Some("No")
        );
        assert_eq!(answer(&mut n, "InitialR2T", "No").as_deref(), Some("No"));
        assert_eq!(
            answer(&mut n, "DataPDUInOrder", "No").as_deref(),
            Some("Yes")
        );
        assert_eq!(answer(&mut n, "OFMarker", "Yes").as_deref(), Some("No"));
        assert_eq!(answer(&mut n, "IFMarker", "No").as_deref(), Some("No"));
        let (s, _) = n.finish();
        assert!(!s.immediate_data && !s.initial_r2t && s.data_pdu_in_order);

        let mut n = normal();
        assert_eq!(answer(&mut n, "InitialR2T", "No").as_deref(), Some("Yes"));
        assert_eq!(
            answer(&mut n, "ImmediateData", "Yes").as_deref(),
            Some("Yes")
        );
        assert_eq!(
            answer(&mut n, "DataSequenceInOrder", "maybe").as_deref(),
            Some("Reject")
        );
    }

    #[test]
    fn lists_pick_the_first_supported_offer() {
        let mut n = normal();
        assert_eq!(
            answer(&mut n, "HeaderDigest", "CRC32C,None").as_deref(),
            Some("CRC32C")
        );
        assert_eq!(
            answer(&mut n, "DataDigest", "None,CRC32C").as_deref(),
            Some("None")
        );
        assert_eq!(
            answer(&mut n, "TaskReporting", "FastAbort,RFC3720").as_deref(),
            Some("RFC3720")
        );
        let (_, c) = n.finish();
        assert_eq!(
            (c.header_digest, c.data_digest),
            (Digest::Crc32c, Digest::None)
        );

        let mut n = Negotiation::new(
            TargetParams {
                header_digest: vec![Digest::None],
                ..TargetParams::default()
            },
            false,
            true,
        );
        assert_eq!(
            answer(&mut n, "HeaderDigest", "CRC32C").as_deref(),
            Some("Reject")
        );
        assert_eq!(n.finish().1.header_digest, Digest::None);
    }

    #[test]
    fn special_answers() {
        let mut n = normal();
        assert_eq!(
            answer(&mut n, "X-com.example.Foo", "1").as_deref(),
            Some("NotUnderstood")
        );
        assert_eq!(
            answer(&mut n, "X#org.iana.bar", "1").as_deref(),
            Some("NotUnderstood")
        );
        assert_eq!(
            answer(&mut n, "Unknown", "1").as_deref(),
            Some("NotUnderstood")
        );
        assert_eq!(
            answer(&mut n, "IFMarkInt", "2048~8192").as_deref(),
            Some("Reject")
        );
        assert_eq!(
            answer(&mut n, "OFMarkInt", "2048").as_deref(),
            Some("Reject")
        );
        assert_eq!(
            answer(&mut n, "SendTargets", "All").as_deref(),
            Some("Irrelevant")
        );
        assert_eq!(
            answer(&mut n, "TargetAlias", "x").as_deref(),
            Some("Irrelevant")
        );
        // Out of range numbers are rejected, not clamped.
        assert_eq!(
            answer(&mut n, "MaxBurstLength", "511").as_deref(),
            Some("Reject")
        );
        assert_eq!(
            answer(&mut n, "MaxConnections", "0").as_deref(),
            Some("Reject")
        );
        assert_eq!(
            answer(&mut n, "ErrorRecoveryLevel", "3").as_deref(),
            Some("Reject")
        );
        assert_eq!(
            answer(&mut n, "DefaultTime2Wait", "-1").as_deref(),
            Some("Reject")
        );
    }

    #[test]
    fn discovery_and_non_leading_irrelevance() {
        let mut n = Negotiation::new(TargetParams::default(), true, true);
        for key in [
            "MaxConnections",
            "InitialR2T",
            "ImmediateData",
            "MaxBurstLength",
            "FirstBurstLength",
            "MaxOutstandingR2T",
            "DataPDUInOrder",
            "DataSequenceInOrder",
        ] {
            assert_eq!(
                answer(&mut n, key, "1").as_deref(),
                Some("Irrelevant"),
                "{key}"
            );
        }
        assert_eq!(
            answer(&mut n, "HeaderDigest", "None").as_deref(),
            Some("None")
        );
        assert_eq!(
            answer(&mut n, "ErrorRecoveryLevel", "0").as_deref(),
            Some("0")
        );

        let mut n = Negotiation::new(TargetParams::default(), false, false);
        assert_eq!(
            answer(&mut n, "MaxBurstLength", "65536").as_deref(),
            Some("Irrelevant")
        );
        assert_eq!(
            answer(&mut n, "HeaderDigest", "None").as_deref(),
            Some("None")
        );
    }

    #[test]
    fn offered_twice_is_a_protocol_error() {
        let mut n = normal();
        answer(&mut n, "MaxBurstLength", "65536");
        assert_eq!(
            n.on_pair(&KeyValue::new("MaxBurstLength", "65536")),
            Err(NegotiationError::OfferedTwice("MaxBurstLength"))
        );
        assert_eq!(answer(&mut n, "InitiatorName", "iqn.x"), None);
        assert_eq!(
            answer(&mut n, "InitiatorName", "iqn.x"),
            None,
            "repeat tolerated"
        );
        assert_eq!(
            n.on_pair(&KeyValue::new("InitiatorName", "iqn.y")),
            Err(NegotiationError::OfferedTwice("InitiatorName"))
        );
        assert_eq!(
            n.on_pair(&KeyValue::new("CHAP_A", "5")),
            Err(NegotiationError::WrongStage("CHAP_A"))
        );
    }

    #[test]
    fn declarations_are_validated() {
        let mut n = normal();
        assert_eq!(answer(&mut n, "MaxRecvDataSegmentLength", "65536"), None);
        assert!(matches!(
            normal().on_pair(&KeyValue::new("MaxRecvDataSegmentLength", "100")),
            Err(NegotiationError::InvalidDeclaration { .. })
        ));
        assert!(matches!(
            normal().on_pair(&KeyValue::new("InitiatorName", "i".repeat(224))),
            Err(NegotiationError::InvalidDeclaration { .. })
        ));
        let (_, c) = n.finish();
        assert_eq!(c.max_send_data_segment_length, 65536);
        assert_eq!(c.max_recv_data_segment_length, 262_144);
        assert_eq!(
            n.declarations(),
            vec![KeyValue::new("MaxRecvDataSegmentLength", "262144")]
        );
        assert!(n.declarations().is_empty(), "declared once");
    }

    #[test]
    fn target_offers_when_our_limit_is_below_the_default() {
        let mut n = Negotiation::new(
            TargetParams {
                max_burst_length: 65536,
                first_burst_length: 16384,
                immediate_data: false,
                header_digest: vec![Digest::Crc32c],
                ..TargetParams::default()
            },
            false,
            true,
        );
        answer(&mut n, "MaxBurstLength", "262144");
        let offers = n.target_offers();
        let names: Vec<&str> = offers.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            names,
            ["HeaderDigest", "ImmediateData", "FirstBurstLength"],
            "{offers:?}"
        );
        assert!(n.awaiting_answers());
        assert_eq!(answer(&mut n, "FirstBurstLength", "8192"), None);
        assert_eq!(answer(&mut n, "ImmediateData", "No"), None);
        assert!(matches!(
            n.on_pair(&KeyValue::new("HeaderDigest", "None")),
            Err(NegotiationError::InvalidAnswer { .. })
        ));
        assert_eq!(
            n.check_policy(),
            Err(NegotiationError::Unacceptable("HeaderDigest")),
            "CRC32C required but never agreed"
        );
        let (s, _) = n.finish();
        assert_eq!((s.max_burst_length, s.first_burst_length), (65536, 8192));
        assert!(!s.immediate_data);
        assert!(
            normal().target_offers().is_empty(),
            "defaults need no offers"
        );
    }

    #[test]
    fn full_feature_keys() {
        let a = full_feature_answer(&KeyValue::new("MaxRecvDataSegmentLength", "16384"));
        assert_eq!(
            (a.answer, a.max_send_data_segment_length),
            (None, Some(16384))
        );
        let a = full_feature_answer(&KeyValue::new("MaxBurstLength", "16384"));
        assert_eq!(a.answer, Some(KeyValue::new("MaxBurstLength", "Reject")));
        let a = full_feature_answer(&KeyValue::new("X-foo", "1"));
        assert_eq!(a.answer, Some(KeyValue::new("X-foo", "NotUnderstood")));
    }
}
