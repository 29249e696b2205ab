//! CHAP (RFC 1994) as iSCSI carries it (RFC 7143 §12.1.3), target side,
//! one-way and mutual, with MD5 (CHAP_A=5), SHA-1 (6), SHA-256 (7) and
//! SHA3-256 (8), the digests of RFC 7143bis (draft-ietf-storm-iscsi-bis)
//! and LIO; each target lists the ones it allows, most preferred first.
//!
//! Target: `AuthMethod=CHAP` → initiator `CHAP_A=<list>` → target
//! `CHAP_A, CHAP_I, CHAP_C` → initiator `CHAP_N, CHAP_R [, CHAP_I, CHAP_C]`
//! → target `[CHAP_N, CHAP_R]`.

use md5::Md5;
use rand::RngCore as _;
use sha1::Sha1;
use sha2::Sha256;
use sha3::Sha3_256;

use super::{AuthError, ChapAccount};
use crate::proto::text::{decode_binary, encode_hex};

/// The CHAP_A values we implement (RFC 7143 §12.1.3; IANA "PPP
/// Authentication Algorithms"), one row each: wire number, name, digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChapAlgorithm {
    Md5 = 5,
    Sha1 = 6,
    Sha256 = 7,
    Sha3_256 = 8,
}

/// Wire number, configuration name, and the algorithm.
const ALGORITHMS: [(&str, &str, ChapAlgorithm); 4] = [
    ("5", "MD5", ChapAlgorithm::Md5),
    ("6", "SHA-1", ChapAlgorithm::Sha1),
    ("7", "SHA-256", ChapAlgorithm::Sha256),
    ("8", "SHA3-256", ChapAlgorithm::Sha3_256),
];

fn digest<D: sha2::Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut h = D::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().to_vec()
}

impl ChapAlgorithm {
    /// Every algorithm, strongest first: the default preference.
    pub const ALL: [ChapAlgorithm; 4] = [
        ChapAlgorithm::Sha3_256,
        ChapAlgorithm::Sha256,
        ChapAlgorithm::Sha1,
        ChapAlgorithm::Md5,
    ];

    pub fn from_wire(value: &str) -> Option<ChapAlgorithm> {
        ALGORITHMS.iter().find(|(w, _, _)| *w == value).map(|r| r.2)
    }

    /// By name (`MD5`, `SHA-1`, `SHA-256`, `SHA3-256`, any case) or number.
    pub fn from_name(value: &str) -> Option<ChapAlgorithm> {
        ALGORITHMS
            .iter()
            .find(|(w, n, _)| *w == value || n.eq_ignore_ascii_case(value))
            .map(|r| r.2)
    }

    fn row(self) -> &'static (&'static str, &'static str, ChapAlgorithm) {
        // Every variant has a row; `names_and_numbers` proves it.
        ALGORITHMS
            .iter()
            .find(|r| r.2 == self)
            .unwrap_or(&ALGORITHMS[0])
    }

    pub fn wire(self) -> &'static str {
        self.row().0
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Our challenge length: the digest size, and at least 16 bytes
    /// (RFC 7143 §12.1.3 asks for at least as long as the digest).
    pub fn challenge_len(self) -> usize {
        match self {
            ChapAlgorithm::Md5 => 16,
            ChapAlgorithm::Sha1 => 20,
            ChapAlgorithm::Sha256 | ChapAlgorithm::Sha3_256 => 32,
        }
    }

    /// RFC 1994 §4.1: Response = H(Identifier || secret || Challenge).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            ChapAlgorithm::Md5 => digest::<Md5>(id, secret, challenge),
            ChapAlgorithm::Sha1 => digest::<Sha1>(id, secret, challenge),
            ChapAlgorithm::Sha256 => digest::<Sha256>(id, secret, challenge),
            ChapAlgorithm::Sha3_256 => digest::<Sha3_256>(id, secret, challenge),
        }
    }
}

/// Picks, among the algorithms the initiator's `CHAP_A` list offers, the
/// one the target prefers most (`allowed` is in the target's order).
pub fn choose_algorithm(offered: &str, allowed: &[ChapAlgorithm]) -> Option<ChapAlgorithm> {
    let offered: Vec<ChapAlgorithm> = offered
        .split(',')
        .filter_map(ChapAlgorithm::from_wire)
        .collect();
    allowed.iter().copied().find(|a| offered.contains(a))
}

/// The challenge we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapChallenge {
    pub algorithm: ChapAlgorithm,
    pub id: u8,
    pub challenge: Vec<u8>,
}

impl ChapChallenge {
    /// Identifier and challenge from a CSPRNG (ThreadRng: ChaCha seeded
    /// from the OS), never derived from anything the peer controls.
    pub fn generate(algorithm: ChapAlgorithm) -> ChapChallenge {
        let mut rng = rand::rng();
        let mut challenge = vec![0; algorithm.challenge_len()];
        rng.fill_bytes(&mut challenge);
        let mut id = [0u8; 1];
        rng.fill_bytes(&mut id);
        ChapChallenge {
            algorithm,
            id: id[0],
            challenge,
        }
    }

    /// `CHAP_A`, `CHAP_I`, `CHAP_C` as sent to the initiator.
    pub fn wire_pairs(&self) -> [(&'static str, String); 3] {
        [
            ("CHAP_A", self.algorithm.wire().to_owned()),
            ("CHAP_I", self.id.to_string()),
            ("CHAP_C", encode_hex(&self.challenge)),
        ]
    }

    /// Checks `CHAP_N`/`CHAP_R` against the configured incoming accounts.
    /// Returns the authenticated user name.
    pub fn verify<'a>(
        &self,
        accounts: &'a [ChapAccount],
        name: &str,
        response: &str,
    ) -> Result<&'a ChapAccount, AuthError> {
        let got = decode_binary(response).map_err(|_| AuthError::Malformed("CHAP_R"))?;
        let account = accounts
            .iter()
            .find(|a| a.user == name)
            .ok_or(AuthError::UnknownUser)?;
        let expected = self
            .algorithm
            .response(self.id, &account.secret, &self.challenge);
        if constant_time_eq(&expected, &got) {
            Ok(account)
        } else {
            Err(AuthError::WrongResponse)
        }
    }

    /// Mutual CHAP: the initiator's `CHAP_I`/`CHAP_C`, answered with our
    /// outgoing account. Returns `CHAP_N` and `CHAP_R`.
    pub fn answer_mutual(
        &self,
        outgoing: Option<&ChapAccount>,
        id: &str,
        challenge: &str,
    ) -> Result<(String, String), AuthError> {
        // RFC 7143 §12.1.3: CHAP_I is a decimal 0..=255; no sign, no padding.
        let parsed: u8 = id.parse().map_err(|_| AuthError::Malformed("CHAP_I"))?;
        if parsed.to_string() != id {
            return Err(AuthError::Malformed("CHAP_I"));
        }
        let id = parsed;
        let challenge = decode_binary(challenge).map_err(|_| AuthError::Malformed("CHAP_C"))?;
        // RFC 7143 §12.1.3: the challenge is at most 1024 bytes.
        if challenge.len() > 1024 {
            return Err(AuthError::Malformed("CHAP_C"));
        }
        // RFC 7143 §12.1.3: "the target MUST NOT ... respond to a challenge
        // identical to the one it sent" (reflection attack).
        if challenge == self.challenge {
            return Err(AuthError::ReflectedChallenge);
        }
        let account = outgoing.ok_or(AuthError::MutualNotConfigured)?;
        let response = self.algorithm.response(id, &account.secret, &challenge);
        Ok((account.user.clone(), encode_hex(&response)))
    }
}

/// Compares without an early exit, so timing does not reveal how many
/// leading bytes of a guessed response were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::text::encode_base64;

    fn account(user: &str, secret: &str) -> ChapAccount {
        ChapAccount {
            user: user.to_owned(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    #[test]
    fn known_vectors() {
        // Computed independently: python3 hashlib.md5(bytes([0x2a]) +
        // b"password1234" + bytes(range(16))).hexdigest()
        let challenge: Vec<u8> = (0..16).collect();
        assert_eq!(
            encode_hex(&ChapAlgorithm::Md5.response(0x2a, b"password1234", &challenge)),
            "0xa74b83bbd230c5c3c0ea72fcbdc95517"
        );
        // hashlib.sha256(bytes([7]) + b"secretsecret" + bytes(range(32)))
        let challenge: Vec<u8> = (0..32).collect();
        assert_eq!(
            encode_hex(&ChapAlgorithm::Sha256.response(7, b"secretsecret", &challenge)),
            "0x583de276d3bc72d94a976f01426d7d8d5b2cc7728e3a95ab8a60d25934c910c9"
        );
    }

    const SHA1_VECTOR: &str = "0x1e9b868771e32f55cca49a6339aacfe76d25e203";
    const SHA3_VECTOR: &str = "0x10c9046b580e3cbaa3cdee8d9d58ebf7c2ad202bb22d256b5e6f987fc6b9cb56";

    #[test]
    fn more_known_vectors() {
        // python3: hashlib.sha1(bytes([1]) + b"secretsecret" + bytes(range(20)))
        // and hashlib.sha3_256(bytes([2]) + b"secretsecret" + bytes(range(32))).
        let c20: Vec<u8> = (0..20).collect();
        let c32: Vec<u8> = (0..32).collect();
        assert_eq!(
            encode_hex(&ChapAlgorithm::Sha1.response(1, b"secretsecret", &c20)),
            SHA1_VECTOR
        );
        assert_eq!(
            encode_hex(&ChapAlgorithm::Sha3_256.response(2, b"secretsecret", &c32)),
            SHA3_VECTOR
        );
    }

    #[test]
    fn names_and_numbers() {
        for a in ChapAlgorithm::ALL {
            assert_eq!(ChapAlgorithm::from_wire(a.wire()), Some(a));
            assert_eq!(ChapAlgorithm::from_name(a.name()), Some(a));
            assert_eq!(a.wire(), (a as u8).to_string());
        }
        assert_eq!(
            ChapAlgorithm::from_name("sha3-256"),
            Some(ChapAlgorithm::Sha3_256)
        );
        assert_eq!(ChapAlgorithm::from_name("9"), None);
    }

    #[test]
    fn algorithm_choice_follows_the_target_preference() {
        let all = ChapAlgorithm::ALL;
        assert_eq!(choose_algorithm("5", &all), Some(ChapAlgorithm::Md5));
        assert_eq!(choose_algorithm("5,7", &all), Some(ChapAlgorithm::Sha256));
        assert_eq!(
            choose_algorithm("6,5,8", &all),
            Some(ChapAlgorithm::Sha3_256)
        );
        assert_eq!(choose_algorithm("6,5", &all), Some(ChapAlgorithm::Sha1));
        assert_eq!(choose_algorithm("1,2,9", &all), None);
        let md5_first = [ChapAlgorithm::Md5, ChapAlgorithm::Sha1];
        assert_eq!(
            choose_algorithm("8,6,5", &md5_first),
            Some(ChapAlgorithm::Md5)
        );
        assert_eq!(choose_algorithm("7,8", &md5_first), None);
    }

    #[test]
    fn challenges_are_random_and_sized() {
        let a = ChapChallenge::generate(ChapAlgorithm::Md5);
        let b = ChapChallenge::generate(ChapAlgorithm::Md5);
        assert_eq!(a.challenge.len(), 16);
        assert_ne!(a.challenge, b.challenge);
        assert_eq!(
            ChapChallenge::generate(ChapAlgorithm::Sha256)
                .challenge
                .len(),
            32
        );
    }

    #[test]
    fn verify_accepts_hex_and_base64_and_refuses_wrong_secrets() {
        let accounts = [account("alice", "alicesecret1"), account("bob", "short")];
        for alg in ChapAlgorithm::ALL {
            let c = ChapChallenge::generate(alg);
            let good = alg.response(c.id, b"alicesecret1", &c.challenge);
            let user = c
                .verify(&accounts, "alice", &encode_hex(&good))
                .expect("hex response");
            assert_eq!(user.user, "alice");
            c.verify(&accounts, "alice", &encode_base64(&good))
                .expect("base64 response");
            // Short secrets work: libiscsi's test suite uses them (see mod.rs).
            let bob = alg.response(c.id, b"short", &c.challenge);
            c.verify(&accounts, "bob", &encode_hex(&bob)).expect("bob");
            let wrong = alg.response(c.id, b"alicesecret2", &c.challenge);
            assert_eq!(
                c.verify(&accounts, "alice", &encode_hex(&wrong))
                    .unwrap_err(),
                AuthError::WrongResponse
            );
            assert_eq!(
                c.verify(&accounts, "mallory", &encode_hex(&good))
                    .unwrap_err(),
                AuthError::UnknownUser
            );
            assert_eq!(
                c.verify(&accounts, "alice", &encode_hex(&good[..8]))
                    .unwrap_err(),
                AuthError::WrongResponse
            );
            assert_eq!(
                c.verify(&accounts, "alice", "garbage").unwrap_err(),
                AuthError::Malformed("CHAP_R")
            );
        }
    }

    #[test]
    fn mutual_answer_and_reflection() {
        let out = account("target", "targetsecret");
        let c = ChapChallenge::generate(ChapAlgorithm::Md5);
        let theirs = [0x55u8; 16];
        let (n, r) = c
            .answer_mutual(Some(&out), "9", &encode_hex(&theirs))
            .expect("mutual");
        assert_eq!(n, "target");
        assert_eq!(
            r,
            encode_hex(&ChapAlgorithm::Md5.response(9, b"targetsecret", &theirs))
        );
        assert_eq!(
            c.answer_mutual(Some(&out), "9", &encode_hex(&c.challenge)),
            Err(AuthError::ReflectedChallenge)
        );
        assert_eq!(
            c.answer_mutual(None, "9", &encode_hex(&theirs)),
            Err(AuthError::MutualNotConfigured)
        );
        for bad_id in ["256", "-1", "x", "07"] {
            assert_eq!(
                c.answer_mutual(Some(&out), bad_id, &encode_hex(&theirs)),
                Err(AuthError::Malformed("CHAP_I")),
                "{bad_id}"
            );
        }
    }
}
