//! Scripted logins: raw Login Request bytes in, Login Response bytes out.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::*;
use crate::proto::auth::{AuthConfig, ChapAccount};
use crate::proto::params::{Digest, SessionParams, TargetParams};
use crate::proto::pdu::{DigestSettings, Opcode, PduDecoder, encode_pdu};
use crate::proto::text::{decode_binary, encode_hex};

const TARGET: &str = "iqn.2026-11.org.example:disk1";
const INITIATOR: &str = "iqn.1993-08.org.debian:01:abcdef";
const ISID: [u8; 6] = [0x80, 0x00, 0x12, 0x34, 0x00, 0x01];

struct TestEnv {
    target: TargetLogin,
    denied: Vec<String>,
    discovery: DiscoveryLogin,
    bind_result: Result<SessionBinding, LoginFailure>,
    binds: RefCell<Vec<(SessionKind, u16, u16)>>,
}

impl TestEnv {
    fn new() -> TestEnv {
        TestEnv {
            target: TargetLogin {
                name: TARGET.to_owned(),
                alias: Some("disk one".to_owned()),
                portal_group_tag: 1,
                params: TargetParams::default(),
                auth: AuthConfig::default(),
            },
            denied: Vec::new(),
            discovery: DiscoveryLogin::default(),
            bind_result: Ok(SessionBinding {
                tsih: 0x0101,
                exp_cmd_sn: 5,
                max_cmd_sn: 132,
            }),
            binds: RefCell::new(Vec::new()),
        }
    }

    fn with_chap(mut self) -> TestEnv {
        self.target.auth = AuthConfig {
            incoming: vec![ChapAccount::new("alice", "alicesecret1")],
            outgoing: Some(ChapAccount::new("target", "targetsecret")),
        };
        self
    }
}

impl LoginEnv for TestEnv {
    fn target(&self, name: &str) -> Option<TargetLogin> {
        (name == self.target.name).then(|| self.target.clone())
    }

    fn initiator_allowed(&self, target: &str, initiator_name: &str, peer: IpAddr) -> bool {
        assert_eq!(target, TARGET);
        assert_eq!(peer, IpAddr::V4(Ipv4Addr::LOCALHOST));
        !self.denied.iter().any(|d| d == initiator_name)
    }

    fn discovery(&self) -> DiscoveryLogin {
        self.discovery.clone()
    }

    fn bind_session(&self, req: &SessionBindRequest<'_>) -> Result<SessionBinding, LoginFailure> {
        assert_eq!(req.isid, ISID);
        assert_eq!(req.initiator_name, INITIATOR);
        self.binds
            .borrow_mut()
            .push((req.kind.clone(), req.tsih, req.cid));
        self.bind_result
    }
}

/// A Login Request as bytes on the wire, decoded by the real PDU decoder.
fn wire_pdu(bhs: &Bhs, data: &[u8]) -> Pdu {
    let mut buf = BytesMut::new();
    encode_pdu(bhs, &[], data, DigestSettings::default(), &mut buf);
    PduDecoder::default()
        .decode(&mut buf)
        .expect("valid framing")
        .expect("complete PDU")
}

fn data_of(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(format!("{k}={v}\0").as_bytes());
    }
    out
}

#[derive(Clone, Copy)]
struct Req {
    transit: bool,
    cont: bool,
    csg: u8,
    nsg: u8,
    tsih: u16,
    exp_stat_sn: u32,
    version_min: u8,
}

const SEC_TO_OP: Req = Req {
    transit: true,
    cont: false,
    csg: 0,
    nsg: 1,
    tsih: 0,
    exp_stat_sn: 0x1000,
    version_min: 0,
};
const SEC_STAY: Req = Req {
    transit: false,
    ..SEC_TO_OP
};
const OP_TO_FFP: Req = Req {
    csg: 1,
    nsg: 3,
    ..SEC_TO_OP
};
const OP_STAY: Req = Req {
    transit: false,
    nsg: 0,
    ..OP_TO_FFP
};

fn request(r: Req, pairs: &[(&str, &str)]) -> Pdu {
    let bhs = LoginRequest {
        immediate: true,
        transit: r.transit,
        continue_bit: r.cont,
        csg: r.csg,
        nsg: r.nsg,
        version_max: 0,
        version_min: r.version_min,
        isid: ISID,
        tsih: r.tsih,
        itt: 0x77,
        cid: 0,
        cmd_sn: 5,
        exp_stat_sn: r.exp_stat_sn,
    }
    .encode();
    wire_pdu(&bhs, &data_of(pairs))
}

struct Answer {
    rsp: LoginResponse,
    pairs: Vec<KeyValue>,
    outcome: LoginOutcome,
}

impl Answer {
    fn get(&self, key: &str) -> &str {
        find(&self.pairs, key).unwrap_or_else(|| panic!("{key} missing in {:?}", self.pairs))
    }

    fn has(&self, key: &str) -> bool {
        find(&self.pairs, key).is_some()
    }

    fn result(&self) -> &LoginResult {
        match &self.outcome {
            LoginOutcome::FullFeature(r) => r,
            other => panic!("expected Full Feature Phase, got {other:?}"),
        }
    }

    fn failure(&self) -> LoginFailure {
        match self.outcome {
            LoginOutcome::Failed(f) => f,
            ref other => panic!("expected failure, got {other:?}"),
        }
    }
}

fn send(login: &mut Login, env: &TestEnv, pdu: &Pdu) -> Answer {
    let step = login.on_request(pdu, env);
    assert_eq!(step.response.opcode(), Some(Opcode::LoginResponse));
    assert_eq!(
        step.response.data_segment_len(),
        0,
        "encode_pdu sets the length"
    );
    let rsp = LoginResponse::load(&step.response).expect("login response");
    let pairs = parse_pairs(&step.data).expect("our answers parse");
    // Every response goes through the real encoder too.
    let mut buf = BytesMut::new();
    encode_pdu(
        &step.response,
        &[],
        &step.data,
        DigestSettings::default(),
        &mut buf,
    );
    assert!(buf.len() <= 48 + LOGIN_MAX_DATA_SEGMENT_LEN + 3);
    Answer {
        rsp,
        pairs,
        outcome: step.outcome,
    }
}

fn new_login() -> Login {
    Login::new(LoginContext {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
    })
}

fn identity_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("InitiatorAlias", "host1"),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
    ]
}

/// What open-iscsi / libiscsi send in the operational stage.
fn operational_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HeaderDigest", "CRC32C,None"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ]
}

#[test]
fn status_table_matches_rfc_7143() {
    let expected: [(LoginFailure, u16); 17] = [
        (LoginFailure::TargetMovedTemporarily, 0x0101),
        (LoginFailure::TargetMovedPermanently, 0x0102),
        (LoginFailure::InitiatorError, 0x0200),
        (LoginFailure::AuthenticationFailure, 0x0201),
        (LoginFailure::AuthorizationFailure, 0x0202),
        (LoginFailure::NotFound, 0x0203),
        (LoginFailure::TargetRemoved, 0x0204),
        (LoginFailure::UnsupportedVersion, 0x0205),
        (LoginFailure::TooManyConnections, 0x0206),
        (LoginFailure::MissingParameter, 0x0207),
        (LoginFailure::CantIncludeInSession, 0x0208),
        (LoginFailure::SessionTypeNotSupported, 0x0209),
        (LoginFailure::SessionDoesNotExist, 0x020a),
        (LoginFailure::InvalidDuringLogin, 0x020b),
        (LoginFailure::TargetError, 0x0300),
        (LoginFailure::ServiceUnavailable, 0x0301),
        (LoginFailure::OutOfResources, 0x0302),
    ];
    for (f, code) in expected {
        let (class, detail) = f.status();
        assert_eq!(u16::from(class) << 8 | u16::from(detail), code, "{f:?}");
        assert_eq!(LoginFailure::from_status(class, detail), Some(f));
    }
}

#[test]
fn normal_session_from_raw_bytes() {
    let env = TestEnv::new();
    let mut login = new_login();
    let mut pairs = identity_keys();
    pairs.extend(operational_keys());
    pairs.push(("X-com.example.Vendor", "1"));
    let data = data_of(&pairs);
    // The BHS byte by byte: immediate Login Request, T=1 CSG=1 NSG=3,
    // version 0..0, ISID, TSIH 0, ITT 0x77, CID 0, CmdSN 5, ExpStatSN 0x1000.
    let len = data.len();
    let mut raw = [0u8; 48];
    raw[..8].copy_from_slice(&[
        0x43,
        0x87,
        0,
        0,
        0,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
    ]);
    raw[8..16].copy_from_slice(&[0x80, 0x00, 0x12, 0x34, 0x00, 0x01, 0, 0]);
    raw[16..24].copy_from_slice(&[0, 0, 0, 0x77, 0, 0, 0, 0]);
    raw[24..32].copy_from_slice(&[0, 0, 0, 5, 0, 0, 0x10, 0]);
    let mut wire = raw.to_vec();
    wire.extend_from_slice(&data);
    wire.resize(wire.len().div_ceil(4) * 4, 0);
    let mut buf = BytesMut::from(&wire[..]);
    let pdu = PduDecoder::default()
        .decode(&mut buf)
        .expect("framing")
        .expect("whole PDU");

    let a = send(&mut login, &env, &pdu);
    assert_eq!((a.rsp.status_class, a.rsp.status_detail), (0, 0));
    assert!(a.rsp.transit && !a.rsp.continue_bit);
    assert_eq!((a.rsp.csg, a.rsp.nsg), (1, 3));
    assert_eq!(a.rsp.isid, ISID);
    assert_eq!(a.rsp.tsih, 0x0101, "TSIH from bind_session");
    assert_eq!(a.rsp.itt, 0x77);
    assert_eq!(
        a.rsp.stat_sn, 0x1000,
        "StatSN starts at the first ExpStatSN"
    );
    assert_eq!((a.rsp.exp_cmd_sn, a.rsp.max_cmd_sn), (5, 132));
    assert_eq!(a.get("TargetPortalGroupTag"), "1");
    assert_eq!(a.get("TargetAlias"), "disk one");
    assert_eq!(a.get("HeaderDigest"), "CRC32C");
    assert_eq!(a.get("DataDigest"), "None");
    assert_eq!(a.get("InitialR2T"), "Yes");
    assert_eq!(a.get("ImmediateData"), "Yes");
    assert_eq!(a.get("MaxBurstLength"), "1048576");
    assert_eq!(a.get("FirstBurstLength"), "262144");
    assert_eq!(a.get("DefaultTime2Retain"), "0");
    assert_eq!(a.get("MaxOutstandingR2T"), "1");
    assert_eq!(a.get("IFMarker"), "No");
    assert_eq!(a.get("MaxConnections"), "1");
    assert_eq!(a.get("MaxRecvDataSegmentLength"), "262144");
    assert_eq!(a.get("X-com.example.Vendor"), "NotUnderstood");
    assert!(
        !a.has("InitiatorName") && !a.has("TargetName"),
        "declaratives get no answer"
    );

    let r = a.result();
    assert_eq!(
        r.kind,
        SessionKind::Normal {
            target_name: TARGET.to_owned()
        }
    );
    assert_eq!(r.initiator_name, INITIATOR);
    assert_eq!(r.initiator_alias.as_deref(), Some("host1"));
    assert_eq!((r.tsih, r.cid, r.stat_sn), (0x0101, 0, 0x1000));
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (5, 132));
    assert_eq!(r.portal_group_tag, Some(1));
    assert_eq!(r.chap_user, None);
    assert_eq!(r.session.max_burst_length, 1_048_576);
    assert_eq!(r.session.first_burst_length, 262_144);
    assert!(r.session.initial_r2t && r.session.immediate_data);
    assert_eq!(r.session.max_connections, 1);
    assert_eq!(r.connection.header_digest, Digest::Crc32c);
    assert_eq!(r.connection.max_send_data_segment_length, 65536);
    assert_eq!(r.connection.max_recv_data_segment_length, 262_144);
    assert!(r.connection.digests().header && !r.connection.digests().data);
    assert!(login.is_full_feature());
    assert_eq!(env.binds.borrow().len(), 1);

    // Nothing more is accepted on this state machine.
    let again = send(&mut login, &env, &pdu);
    assert_eq!(again.failure(), LoginFailure::InvalidDuringLogin);
}

fn chap_login(env: &TestEnv, algorithms: &str, mutual: bool) -> (Login, Answer) {
    let mut login = new_login();
    // libiscsi: first leg with AuthMethod and T=1.
    let mut first = identity_keys();
    first.push(("AuthMethod", "CHAP,None"));
    let a = send(&mut login, env, &request(SEC_TO_OP, &first));
    assert_eq!((a.rsp.status_class, a.rsp.status_detail), (0, 0));
    assert!(!a.rsp.transit, "CHAP pending: no transit yet");
    assert_eq!(a.rsp.stat_sn, 0x1000);
    assert_eq!(a.get("AuthMethod"), "CHAP");
    assert_eq!(a.get("TargetPortalGroupTag"), "1");

    let a = send(
        &mut login,
        env,
        &request(SEC_STAY, &[("CHAP_A", algorithms)]),
    );
    assert_eq!(a.rsp.stat_sn, 0x1001);
    assert!(!a.rsp.transit);
    let alg = a.get("CHAP_A").to_owned();
    let id: u8 = a.get("CHAP_I").parse().expect("CHAP_I");
    let challenge = decode_binary(a.get("CHAP_C")).expect("CHAP_C");
    let secret = b"alicesecret1";
    // Computed here, independently of auth::chap.
    let response = if alg == "5" {
        assert_eq!(challenge.len(), 16);
        let mut h = Md5::new();
        h.update([id]);
        h.update(secret);
        h.update(&challenge);
        h.finalize().to_vec()
    } else {
        assert_eq!(alg, "7");
        assert_eq!(challenge.len(), 32);
        let mut h = Sha256::new();
        h.update([id]);
        h.update(secret);
        h.update(&challenge);
        h.finalize().to_vec()
    };
    let r_hex = encode_hex(&response);
    let our_challenge = [0x3cu8; 16];
    let c_hex = encode_hex(&our_challenge);
    let mut third = vec![("CHAP_N", "alice"), ("CHAP_R", r_hex.as_str())];
    if mutual {
        third.push(("CHAP_I", "17"));
        third.push(("CHAP_C", c_hex.as_str()));
    }
    let a = send(&mut login, env, &request(SEC_TO_OP, &third));
    assert_eq!(a.rsp.stat_sn, 0x1002);
    if mutual {
        assert_eq!(a.get("CHAP_N"), "target");
        let got = decode_binary(a.get("CHAP_R")).expect("CHAP_R");
        let expected = if alg == "5" {
            let mut h = Md5::new();
            h.update([17u8]);
            h.update(b"targetsecret");
            h.update(our_challenge);
            h.finalize().to_vec()
        } else {
            let mut h = Sha256::new();
            h.update([17u8]);
            h.update(b"targetsecret");
            h.update(our_challenge);
            h.finalize().to_vec()
        };
        assert_eq!(got, expected, "mutual CHAP_R");
    }
    (login, a)
}

#[test]
fn chap_logins_md5_sha256_one_way_and_mutual() {
    let env = TestEnv::new().with_chap();
    for (algs, mutual) in [("5", false), ("5", true), ("7", false), ("7,5", true)] {
        let (mut login, a) = chap_login(&env, algs, mutual);
        assert_eq!((a.rsp.status_class, a.rsp.status_detail), (0, 0), "{algs}");
        assert!(a.rsp.transit);
        assert_eq!((a.rsp.csg, a.rsp.nsg), (0, 1));
        // libiscsi repeats the identity keys in the operational stage.
        let mut op = identity_keys();
        op.extend(operational_keys());
        let a = send(&mut login, &env, &request(OP_TO_FFP, &op));
        assert_eq!(a.rsp.stat_sn, 0x1003);
        assert!(a.rsp.transit);
        assert_eq!(a.rsp.nsg, 3);
        assert!(
            !a.has("TargetPortalGroupTag"),
            "sent once, in the first response"
        );
        assert_eq!(a.result().chap_user.as_deref(), Some("alice"));
    }
}

#[test]
fn wrong_chap_secret_is_authentication_failure() {
    let env = TestEnv::new().with_chap();
    let mut login = new_login();
    let mut first = identity_keys();
    first.push(("AuthMethod", "CHAP"));
    send(&mut login, &env, &request(SEC_TO_OP, &first));
    let a = send(&mut login, &env, &request(SEC_STAY, &[("CHAP_A", "5")]));
    let id: u8 = a.get("CHAP_I").parse().expect("id");
    let c = decode_binary(a.get("CHAP_C")).expect("c");
    let mut h = Md5::new();
    h.update([id]);
    h.update(b"not-the-secret");
    h.update(&c);
    let bad = encode_hex(&h.finalize());
    let a = send(
        &mut login,
        &env,
        &request(SEC_TO_OP, &[("CHAP_N", "alice"), ("CHAP_R", &bad)]),
    );
    assert_eq!(a.failure(), LoginFailure::AuthenticationFailure);
    assert_eq!((a.rsp.status_class, a.rsp.status_detail), (2, 1));
    assert!(a.pairs.is_empty(), "failures carry no data");
}

#[test]
fn chap_required_but_skipped_or_refused() {
    let env = TestEnv::new().with_chap();
    let mut pairs = identity_keys();
    pairs.extend(operational_keys());
    let a = send(&mut new_login(), &env, &request(OP_TO_FFP, &pairs));
    assert_eq!(a.failure(), LoginFailure::AuthenticationFailure);

    let a = send(
        &mut new_login(),
        &env,
        &request(SEC_TO_OP, &identity_keys()),
    );
    assert_eq!(a.failure(), LoginFailure::AuthenticationFailure);

    let mut first = identity_keys();
    first.push(("AuthMethod", "None"));
    let a = send(&mut new_login(), &env, &request(SEC_TO_OP, &first));
    assert_eq!(a.failure(), LoginFailure::AuthenticationFailure);
}

#[test]
fn discovery_session() {
    let env = TestEnv::new();
    let mut login = new_login();
    let pairs = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("AuthMethod", "None"),
    ];
    let a = send(&mut login, &env, &request(SEC_TO_OP, &pairs));
    assert!(a.rsp.transit);
    assert_eq!(a.get("AuthMethod"), "None");
    assert!(
        !a.has("TargetPortalGroupTag"),
        "discovery has no portal group answer"
    );
    let a = send(&mut login, &env, &request(OP_TO_FFP, &operational_keys()));
    assert_eq!(a.get("MaxBurstLength"), "Irrelevant");
    assert_eq!(a.get("InitialR2T"), "Irrelevant");
    assert_eq!(a.get("HeaderDigest"), "CRC32C");
    let r = a.result();
    assert_eq!(r.kind, SessionKind::Discovery);
    assert_eq!(r.portal_group_tag, None);
    assert_eq!(env.binds.borrow()[0].0, SessionKind::Discovery);
}

#[test]
fn discovery_with_chap() {
    let mut env = TestEnv::new();
    env.discovery.auth.incoming = vec![ChapAccount::new("disc", "discsecret12")];
    let mut login = new_login();
    let pairs = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("AuthMethod", "CHAP,None"),
    ];
    let a = send(&mut login, &env, &request(SEC_TO_OP, &pairs));
    assert_eq!(a.get("AuthMethod"), "CHAP");
    assert!(!a.rsp.transit);
}

#[test]
fn login_failures_map_to_statuses() {
    let run = |env: &TestEnv, r: Req, pairs: &[(&str, &str)]| {
        let a = send(&mut new_login(), env, &request(r, pairs));
        let (class, detail) = (a.rsp.status_class, a.rsp.status_detail);
        assert_eq!(a.failure().status(), (class, detail));
        assert!(!a.rsp.transit);
        a.failure()
    };
    let env = TestEnv::new();
    let ok = identity_keys();
    let unsupported = Req {
        version_min: 1,
        ..OP_TO_FFP
    };
    assert_eq!(
        run(&env, unsupported, &ok),
        LoginFailure::UnsupportedVersion
    );
    assert_eq!(
        run(&env, OP_TO_FFP, &[("TargetName", TARGET)]),
        LoginFailure::MissingParameter
    );
    assert_eq!(
        run(&env, OP_TO_FFP, &[("InitiatorName", INITIATOR)]),
        LoginFailure::MissingParameter
    );
    assert_eq!(
        run(
            &env,
            OP_TO_FFP,
            &[("InitiatorName", INITIATOR), ("TargetName", "iqn.nope")]
        ),
        LoginFailure::NotFound
    );
    assert_eq!(
        run(
            &env,
            OP_TO_FFP,
            &[("InitiatorName", INITIATOR), ("SessionType", "Bogus")]
        ),
        LoginFailure::SessionTypeNotSupported
    );
    let mut denied = TestEnv::new();
    denied.denied.push(INITIATOR.to_owned());
    assert_eq!(
        run(&denied, OP_TO_FFP, &ok),
        LoginFailure::AuthorizationFailure
    );

    let both = Req {
        cont: true,
        ..OP_TO_FFP
    };
    assert_eq!(run(&env, both, &ok), LoginFailure::InitiatorError);
    let reserved_csg = Req {
        csg: 2,
        ..OP_TO_FFP
    };
    assert_eq!(run(&env, reserved_csg, &ok), LoginFailure::InitiatorError);
    let backwards = Req {
        nsg: 0,
        ..OP_TO_FFP
    };
    assert_eq!(run(&env, backwards, &ok), LoginFailure::InitiatorError);
    let mut with_chap = ok.clone();
    with_chap.push(("CHAP_A", "5"));
    assert_eq!(
        run(&env, OP_TO_FFP, &with_chap),
        LoginFailure::InitiatorError
    );
    assert_eq!(
        run(
            &env,
            OP_TO_FFP,
            &[("InitiatorName", INITIATOR), ("InitiatorName", "x")]
        ),
        LoginFailure::InitiatorError,
        "duplicate key in one request"
    );

    for (bind, expected) in [
        (LoginFailure::SessionDoesNotExist, 0x020a_u16),
        (LoginFailure::TooManyConnections, 0x0206),
        (LoginFailure::OutOfResources, 0x0302),
        (LoginFailure::TargetError, 0x0300),
    ] {
        let mut env = TestEnv::new();
        env.bind_result = Err(bind);
        let join = Req {
            tsih: 0x0bad,
            ..OP_TO_FFP
        };
        assert_eq!(run(&env, join, &ok), bind);
        let (c, d) = bind.status();
        assert_eq!(u16::from(c) << 8 | u16::from(d), expected);
        assert_eq!(
            env.binds.borrow()[0].1,
            0x0bad,
            "TSIH passed to bind_session"
        );
    }

    // Any other opcode during login.
    let mut bhs = Bhs::new(Opcode::ScsiCommand);
    bhs.set_itt(9);
    let a = send(&mut new_login(), &env, &wire_pdu(&bhs, &[]));
    assert_eq!(a.failure(), LoginFailure::InvalidDuringLogin);
    assert_eq!((a.rsp.status_class, a.rsp.status_detail), (2, 0x0b));
    assert_eq!(a.rsp.itt, 9);
}

#[test]
fn identity_must_not_change_between_requests() {
    let env = TestEnv::new();
    let mut login = new_login();
    let a = send(&mut login, &env, &request(OP_STAY, &identity_keys()));
    assert!(!a.rsp.transit);
    assert_eq!(a.get("MaxRecvDataSegmentLength"), "262144");
    let mut next = request(OP_TO_FFP, &operational_keys());
    next.bhs.0[13] ^= 1; // ISID
    assert_eq!(
        send(&mut login, &env, &next).failure(),
        LoginFailure::InitiatorError
    );

    let mut login = new_login();
    send(&mut login, &env, &request(OP_STAY, &identity_keys()));
    let mut next = request(OP_TO_FFP, &operational_keys());
    next.bhs.set_u32(24, 6); // CmdSN
    assert_eq!(
        send(&mut login, &env, &next).failure(),
        LoginFailure::InitiatorError
    );

    let mut login = new_login();
    send(&mut login, &env, &request(OP_STAY, &identity_keys()));
    // Back to the security stage.
    let a = send(&mut login, &env, &request(SEC_TO_OP, &[]));
    assert_eq!(a.failure(), LoginFailure::InitiatorError);

    let mut login = new_login();
    send(&mut login, &env, &request(OP_STAY, &identity_keys()));
    let a = send(
        &mut login,
        &env,
        &request(OP_TO_FFP, &[("InitiatorName", "iqn.other")]),
    );
    assert_eq!(
        a.failure(),
        LoginFailure::InitiatorError,
        "identity key changed"
    );
}

#[test]
fn continuation_bit_reassembly() {
    let env = TestEnv::new();
    let mut login = new_login();
    let mut pairs = identity_keys();
    pairs.extend(operational_keys());
    let data = data_of(&pairs);
    // Split in the middle of a key name.
    let (head, tail) = data.split_at(37);
    let mut first = request(
        Req {
            cont: true,
            transit: false,
            nsg: 0,
            ..OP_TO_FFP
        },
        &[],
    );
    first.data = bytes::Bytes::copy_from_slice(head);
    let a = send(&mut login, &env, &first);
    assert_eq!((a.rsp.status_class, a.rsp.status_detail), (0, 0));
    assert!(a.pairs.is_empty() && !a.rsp.transit && matches!(a.outcome, LoginOutcome::Continue));
    assert_eq!(a.rsp.stat_sn, 0x1000);
    let mut second = request(OP_TO_FFP, &[]);
    second.data = bytes::Bytes::copy_from_slice(tail);
    let a = send(&mut login, &env, &second);
    assert_eq!(a.rsp.stat_sn, 0x1001);
    assert_eq!(a.result().initiator_name, INITIATOR);

    // Unbounded continuation is refused.
    let mut login = new_login();
    let cont = Req {
        cont: true,
        transit: false,
        nsg: 0,
        ..OP_TO_FFP
    };
    let mut chunk = request(cont, &[]);
    chunk.data = bytes::Bytes::from(vec![b'a'; 8192]);
    let mut last = None;
    for _ in 0..9 {
        last = Some(send(&mut login, &env, &chunk));
        if !matches!(
            last.as_ref().map(|a| &a.outcome),
            Some(LoginOutcome::Continue)
        ) {
            break;
        }
    }
    let last = last.expect("at least one answer");
    assert_eq!(last.failure(), LoginFailure::InitiatorError);
}

#[test]
fn target_offers_wait_for_the_initiators_answer() {
    let mut env = TestEnv::new();
    env.target.params = TargetParams {
        max_burst_length: 65536,
        first_burst_length: 65536,
        ..TargetParams::default()
    };
    let mut login = new_login();
    let a = send(&mut login, &env, &request(OP_TO_FFP, &identity_keys()));
    assert!(!a.rsp.transit, "our offer is pending");
    assert_eq!(a.get("MaxBurstLength"), "65536");
    let a = send(
        &mut login,
        &env,
        &request(OP_TO_FFP, &[("MaxBurstLength", "32768")]),
    );
    assert!(a.rsp.transit);
    assert!(a.pairs.is_empty(), "{:?}", a.pairs);
    let s = &a.result().session;
    assert_eq!((s.max_burst_length, s.first_burst_length), (32768, 32768));
}

#[test]
fn security_straight_to_full_feature() {
    let env = TestEnv::new();
    let mut login = new_login();
    let mut pairs = identity_keys();
    pairs.push(("AuthMethod", "None"));
    let r = Req {
        nsg: 3,
        ..SEC_TO_OP
    };
    let a = send(&mut login, &env, &request(r, &pairs));
    assert!(a.rsp.transit);
    assert_eq!((a.rsp.csg, a.rsp.nsg), (0, 3));
    assert_eq!(a.get("MaxRecvDataSegmentLength"), "262144");
    assert_eq!(a.result().session, SessionParams::default());
}

#[test]
fn arbitrary_data_never_panics() {
    let env = TestEnv::new();
    let mut seed: u32 = 0x1234_5678;
    for _ in 0..2000 {
        let mut login = new_login();
        for _ in 0..4 {
            let mut raw = [0u8; 48];
            for b in &mut raw {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (seed >> 16) as u8;
            }
            raw[0] = 0x43;
            let len = (seed % 64) as usize;
            let data: Vec<u8> = (0..len).map(|i| b"A=1\0X=\0=\xff,"[i % 10]).collect();
            let pdu = Pdu {
                bhs: Bhs(raw),
                ahs: bytes::Bytes::new(),
                data: bytes::Bytes::from(data),
            };
            let _ = login.on_request(&pdu, &env);
        }
    }
}

#[test]
fn required_digest_not_agreed_fails_the_login() {
    let mut env = TestEnv::new();
    env.target.params.header_digest = vec![Digest::Crc32c];
    let mut pairs = identity_keys();
    pairs.push(("HeaderDigest", "None"));
    let a = send(&mut new_login(), &env, &request(OP_TO_FFP, &pairs));
    assert_eq!(a.failure(), LoginFailure::InitiatorError);

    // Not offered at all: we offer CRC32C and wait for the answer.
    let mut login = new_login();
    let a = send(&mut login, &env, &request(OP_TO_FFP, &identity_keys()));
    assert!(!a.rsp.transit);
    assert_eq!(a.get("HeaderDigest"), "CRC32C");
    let a = send(
        &mut login,
        &env,
        &request(OP_TO_FFP, &[("HeaderDigest", "CRC32C")]),
    );
    assert_eq!(a.result().connection.header_digest, Digest::Crc32c);
}

#[test]
fn login_state_can_move_between_tasks() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Login>();
    assert_send::<LoginStep>();
    assert_send::<crate::proto::text_exchange::TextExchange>();
}
