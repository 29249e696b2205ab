//! Authentication in the SecurityNegotiation stage (RFC 7143 §6.3.1, §12):
//! AuthMethod selection and the CHAP exchange, as a state machine fed with
//! the security keys of each Login Request.

mod chap;

pub use chap::{ChapAlgorithm, ChapChallenge, choose_algorithm};

use crate::proto::text::KeyValue;

/// RFC 7143 §12.1.3 asks for secrets of at least 96 bits (12 bytes) when
/// IPsec is not used. Like LIO and IET we do not refuse shorter ones at
/// login (libiscsi's test suite and many deployments use short secrets);
/// configuration loading should warn with [`ChapAccount::meets_rfc_minimum`].
pub const RFC_MIN_SECRET_LEN: usize = 12;

/// A user name and secret: incoming (the initiator proves it knows it) or
/// outgoing (we prove it in mutual CHAP).
#[derive(Clone, PartialEq, Eq)]
pub struct ChapAccount {
    pub user: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapAccount")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ChapAccount {
    pub fn new(user: impl Into<String>, secret: impl Into<Vec<u8>>) -> ChapAccount {
        ChapAccount {
            user: user.into(),
            secret: secret.into(),
        }
    }

    pub fn meets_rfc_minimum(&self) -> bool {
        self.secret.len() >= RFC_MIN_SECRET_LEN
    }
}

/// Who may log in to a target (or to discovery): CHAP is required exactly
/// when at least one incoming account is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub incoming: Vec<ChapAccount>,
    pub outgoing: Option<ChapAccount>,
}

impl AuthConfig {
    pub fn requires_chap(&self) -> bool {
        !self.incoming.is_empty()
    }
}

/// Why authentication failed. `is_initiator_error` separates protocol
/// violations (Initiator error, 0x0200) from failed proofs (0x0201).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no common AuthMethod")]
    NoCommonMethod,
    #[error("no common CHAP algorithm")]
    UnsupportedAlgorithm,
    #[error("{0} missing")]
    MissingKey(&'static str),
    #[error("{0} malformed")]
    Malformed(&'static str),
    #[error("unknown CHAP user")]
    UnknownUser,
    #[error("wrong CHAP response")]
    WrongResponse,
    #[error("mutual CHAP requested but no outgoing account is configured")]
    MutualNotConfigured,
    #[error("initiator reflected our CHAP challenge")]
    ReflectedChallenge,
    #[error("security key {0} not expected now")]
    UnexpectedKey(String),
    #[error("authentication required before leaving the security stage")]
    NotAuthenticated,
}

impl AuthError {
    pub fn is_initiator_error(&self) -> bool {
        matches!(self, AuthError::UnexpectedKey(_))
    }
}

/// RFC 7143 §12.1.3 flow, one variant per point in the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// AuthMethod not yet negotiated.
    Start,
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    AwaitAlgorithm,
    /// CHAP_C sent; waiting for CHAP_N/CHAP_R.
    AwaitResponse(ChapChallenge),
    /// Authenticated (`user` is `None` for AuthMethod=None).
    Done { user: Option<String> },
}

/// Target-side authentication for one login.
#[derive(Debug, Clone)]
pub struct Authenticator {
    config: AuthConfig,
    /// CHAP digests the target allows, most preferred first.
    algorithms: Vec<ChapAlgorithm>,
    state: State,
}

fn find<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Authenticator {
        Authenticator {
            config,
            algorithms: ChapAlgorithm::ALL.to_vec(),
            state: State::Start,
        }
    }

    /// Restricts CHAP to `algorithms`, in the target's order of preference.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: Vec<ChapAlgorithm>) -> Authenticator {
        self.algorithms = algorithms;
        self
    }

    /// True once the login may leave the SecurityNegotiation stage: CHAP
    /// succeeded, AuthMethod=None was agreed, or nothing was asked and no
    /// CHAP is required.
    pub fn may_leave_security(&self) -> bool {
        match &self.state {
            State::Done { .. } => true,
            State::Start => !self.config.requires_chap(),
            _ => false,
        }
    }

    /// The CHAP user that authenticated, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Done { user } => user.as_deref(),
            _ => None,
        }
    }

    /// The login skipped the security stage (CSG=1 in the first request).
    pub fn skip(&mut self) -> Result<(), AuthError> {
        if self.config.requires_chap() {
            return Err(AuthError::NotAuthenticated);
        }
        self.state = State::Done { user: None };
        Ok(())
    }

    /// Handles the security keys (AuthMethod, CHAP_*) of one request and
    /// returns the answers.
    pub fn on_keys(&mut self, pairs: &[KeyValue]) -> Result<Vec<KeyValue>, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Start);
        let (next, answers) = self.step(state, pairs)?;
        self.state = next;
        Ok(answers)
    }

    fn step(&self, state: State, pairs: &[KeyValue]) -> Result<(State, Vec<KeyValue>), AuthError> {
        let unexpected = |allowed: &[&str]| {
            pairs
                .iter()
                .find(|kv| !allowed.contains(&kv.key.as_str()))
                .map(|kv| AuthError::UnexpectedKey(kv.key.clone()))
        };
        match state {
            State::Start => {
                if let Some(e) = unexpected(&["AuthMethod"]) {
                    return Err(e);
                }
                let Some(offered) = find(pairs, "AuthMethod") else {
                    return Ok((State::Start, Vec::new()));
                };
                let ours = if self.config.requires_chap() {
                    "CHAP"
                } else {
                    "None"
                };
                if !offered.split(',').any(|m| m == ours) {
                    return Err(AuthError::NoCommonMethod);
                }
                let next = if ours == "CHAP" {
                    State::AwaitAlgorithm
                } else {
                    State::Done { user: None }
                };
                Ok((next, vec![KeyValue::new("AuthMethod", ours)]))
            }
            State::AwaitAlgorithm => {
                if let Some(e) = unexpected(&["CHAP_A"]) {
                    return Err(e);
                }
                let offered = find(pairs, "CHAP_A").ok_or(AuthError::MissingKey("CHAP_A"))?;
                let algorithm = choose_algorithm(offered, &self.algorithms)
                    .ok_or(AuthError::UnsupportedAlgorithm)?;
                let challenge = ChapChallenge::generate(algorithm);
                let answers = challenge
                    .wire_pairs()
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect();
                Ok((State::AwaitResponse(challenge), answers))
            }
            State::AwaitResponse(challenge) => {
                if let Some(e) = unexpected(&["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"]) {
                    return Err(e);
                }
                let name = find(pairs, "CHAP_N").ok_or(AuthError::MissingKey("CHAP_N"))?;
                let response = find(pairs, "CHAP_R").ok_or(AuthError::MissingKey("CHAP_R"))?;
                let account = challenge.verify(&self.config.incoming, name, response)?;
                let mut answers = Vec::new();
                match (find(pairs, "CHAP_I"), find(pairs, "CHAP_C")) {
                    (None, None) => {}
                    (Some(id), Some(c)) => {
                        let (n, r) =
                            challenge.answer_mutual(self.config.outgoing.as_ref(), id, c)?;
                        answers.push(KeyValue::new("CHAP_N", n));
                        answers.push(KeyValue::new("CHAP_R", r));
                    }
                    (None, Some(_)) => return Err(AuthError::MissingKey("CHAP_I")),
                    (Some(_), None) => return Err(AuthError::MissingKey("CHAP_C")),
                }
                let user = Some(account.user.clone());
                Ok((State::Done { user }, answers))
            }
            State::Done { user } => {
                if let Some(kv) = pairs.first() {
                    return Err(AuthError::UnexpectedKey(kv.key.clone()));
                }
                Ok((State::Done { user }, Vec::new()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::text::{decode_binary, encode_hex};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    fn get<'a>(answers: &'a [KeyValue], key: &str) -> &'a str {
        find(answers, key).unwrap_or_else(|| panic!("{key} missing from {answers:?}"))
    }

    fn chap_config() -> AuthConfig {
        AuthConfig {
            incoming: vec![ChapAccount::new("user", "usersecret12")],
            outgoing: Some(ChapAccount::new("tgt", "targetsecret")),
        }
    }

    #[test]
    fn none_when_no_accounts() {
        let mut a = Authenticator::new(AuthConfig::default());
        assert!(a.may_leave_security());
        let answers = a.on_keys(&[kv("AuthMethod", "CHAP,None")]).expect("none");
        assert_eq!(answers, vec![kv("AuthMethod", "None")]);
        assert!(a.may_leave_security());
        assert_eq!(
            Authenticator::new(AuthConfig::default()).on_keys(&[kv("AuthMethod", "CHAP")]),
            Err(AuthError::NoCommonMethod)
        );
    }

    #[test]
    fn one_way_and_mutual_chap() {
        for (alg, mutual) in [
            ("5", false),
            ("6", false),
            ("7", false),
            ("8", false),
            ("5", true),
            ("6", true),
            ("7,5", true),
            ("8,7,6,5", true),
        ] {
            let mut a = Authenticator::new(chap_config());
            assert!(!a.may_leave_security());
            let r = a.on_keys(&[kv("AuthMethod", "CHAP,None")]).expect("method");
            assert_eq!(r, vec![kv("AuthMethod", "CHAP")]);
            let r = a.on_keys(&[kv("CHAP_A", alg)]).expect("algorithm");
            let chosen = ChapAlgorithm::from_wire(get(&r, "CHAP_A")).expect("5 or 7");
            assert_eq!(chosen.wire(), &alg[..1]);
            let id: u8 = get(&r, "CHAP_I").parse().expect("CHAP_I decimal");
            let c = decode_binary(get(&r, "CHAP_C")).expect("CHAP_C hex");
            assert_eq!(c.len(), chosen.challenge_len());
            let mut req = vec![
                kv("CHAP_N", "user"),
                kv(
                    "CHAP_R",
                    &encode_hex(&chosen.response(id, b"usersecret12", &c)),
                ),
            ];
            let ours = [0xa5u8; 16];
            if mutual {
                req.push(kv("CHAP_I", "200"));
                req.push(kv("CHAP_C", &encode_hex(&ours)));
            }
            let r = a.on_keys(&req).expect("response accepted");
            if mutual {
                assert_eq!(get(&r, "CHAP_N"), "tgt");
                let expected = chosen.response(200, b"targetsecret", &ours);
                assert_eq!(decode_binary(get(&r, "CHAP_R")), Ok(expected));
            } else {
                assert!(r.is_empty(), "{r:?}");
            }
            assert!(a.may_leave_security());
            assert_eq!(a.user(), Some("user"));
            assert!(matches!(
                a.on_keys(&[kv("CHAP_A", "5")]),
                Err(AuthError::UnexpectedKey(_))
            ));
        }
    }

    #[test]
    fn wrong_secret_and_protocol_errors() {
        let mut a = Authenticator::new(chap_config());
        a.on_keys(&[kv("AuthMethod", "CHAP")]).expect("method");
        let r = a.on_keys(&[kv("CHAP_A", "5")]).expect("algorithm");
        let id: u8 = get(&r, "CHAP_I").parse().expect("id");
        let c = decode_binary(get(&r, "CHAP_C")).expect("c");
        let bad = ChapAlgorithm::Md5.response(id, b"wrongsecret!", &c);
        assert_eq!(
            a.on_keys(&[kv("CHAP_N", "user"), kv("CHAP_R", &encode_hex(&bad))]),
            Err(AuthError::WrongResponse)
        );

        let mut a = Authenticator::new(chap_config());
        assert!(matches!(
            a.on_keys(&[kv("CHAP_A", "5")]),
            Err(e) if e.is_initiator_error()
        ));
        let mut a = Authenticator::new(chap_config());
        a.on_keys(&[kv("AuthMethod", "CHAP")]).expect("method");
        assert_eq!(
            a.on_keys(&[kv("CHAP_A", "9,1")]),
            Err(AuthError::UnsupportedAlgorithm)
        );
        let mut a = Authenticator::new(chap_config()).with_algorithms(vec![ChapAlgorithm::Sha256]);
        a.on_keys(&[kv("AuthMethod", "CHAP")]).expect("method");
        assert_eq!(
            a.on_keys(&[kv("CHAP_A", "8,6,5")]),
            Err(AuthError::UnsupportedAlgorithm),
            "only the target's allowed digests"
        );
        let mut a = Authenticator::new(chap_config())
            .with_algorithms(vec![ChapAlgorithm::Md5, ChapAlgorithm::Sha3_256]);
        a.on_keys(&[kv("AuthMethod", "CHAP")]).expect("method");
        let r = a.on_keys(&[kv("CHAP_A", "8,5")]).expect("algorithm");
        assert_eq!(get(&r, "CHAP_A"), "5", "the target's preference wins");
        let mut a = Authenticator::new(chap_config());
        assert_eq!(a.skip(), Err(AuthError::NotAuthenticated));
    }
}
