//! A whole login driven by arbitrary PDUs: the state machine never panics.
#![no_main]

use std::net::IpAddr;

use bytes::BytesMut;
use iet::proto::auth::{AuthConfig, ChapAccount};
use iet::proto::login::{
    DiscoveryLogin, Login, LoginContext, LoginEnv, LoginFailure, LoginOutcome, SessionBindRequest,
    SessionBinding, TargetLogin,
};
use iet::proto::params::TargetParams;
use iet::proto::pdu::PduDecoder;
use libfuzzer_sys::fuzz_target;

struct Env;

impl LoginEnv for Env {
    fn target(&self, name: &str) -> Option<TargetLogin> {
        (name == "iqn.2026-11.io.iet:fuzz").then(|| TargetLogin {
            name: name.to_owned(),
            alias: None,
            portal_group_tag: 1,
            params: TargetParams::default(),
            auth: AuthConfig {
                incoming: vec![ChapAccount::new("u", b"secretsecret".to_vec())],
                outgoing: None,
            },
        })
    }

    fn initiator_allowed(&self, _target: &str, _initiator: &str, _peer: IpAddr) -> bool {
        true
    }

    fn discovery(&self) -> DiscoveryLogin {
        DiscoveryLogin::default()
    }

    fn bind_session(&self, req: &SessionBindRequest<'_>) -> Result<SessionBinding, LoginFailure> {
        Ok(SessionBinding {
            tsih: 1,
            exp_cmd_sn: req.exp_cmd_sn,
            max_cmd_sn: req.max_cmd_sn,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let mut login = Login::new(LoginContext {
        peer: IpAddr::from([127, 0, 0, 1]),
    });
    let mut dec = PduDecoder::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(pdu)) = dec.decode(&mut buf) {
        let step = login.on_request(&pdu, &Env);
        assert!(
            step.data.len() <= 8192,
            "a login response must fit the login segment size"
        );
        if matches!(
            step.outcome,
            LoginOutcome::Failed(_) | LoginOutcome::FullFeature(_)
        ) {
            break;
        }
    }
});
