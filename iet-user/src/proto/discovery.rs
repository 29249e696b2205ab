//! SendTargets (RFC 7143 §13.3, Appendix C): which targets and portals an
//! initiator is told about, and how TargetAddress values are written.

use std::net::{IpAddr, SocketAddr};

use crate::proto::login::SessionKind;
use crate::proto::params::REJECT;
use crate::proto::text::KeyValue;

/// One portal of a target, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredPortal {
    /// The address the listener is bound to (may be 0.0.0.0 or ::).
    pub bound: SocketAddr,
    /// The address to advertise instead (NAT, floating IPs).
    pub advertised: Option<SocketAddr>,
    pub portal_group_tag: u16,
}

/// A target the initiator may see, with its portals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    pub portals: Vec<DiscoveredPortal>,
}

/// The live registry, as Text Requests see it.
pub trait DiscoveryEnv {
    /// Targets this initiator may log in to (ACLs applied), in a stable order.
    fn visible_targets(&self, initiator_name: &str, peer: IpAddr) -> Vec<DiscoveredTarget>;
}

/// The session and connection a Text Request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextContext<'a> {
    pub kind: &'a SessionKind,
    pub initiator_name: &'a str,
    pub peer: IpAddr,
    /// Our end of the connection: replaces a wildcard bound address.
    pub local: SocketAddr,
    /// The initiator's MaxRecvDataSegmentLength (from `ConnectionParams`).
    pub max_send_data_segment_length: u32,
}

/// RFC 7143 §13.8: `TargetAddress=domainname[:port][,portal-group-tag]`,
/// IPv6 literals in brackets (the `SocketAddr` display form).
pub fn target_address(portal: &DiscoveredPortal, local: SocketAddr) -> String {
    let addr = portal
        .advertised
        .unwrap_or(if portal.bound.ip().is_unspecified() {
            SocketAddr::new(local.ip(), portal.bound.port())
        } else {
            portal.bound
        });
    let addr = match addr {
        // A link-local scope id means nothing to the initiator's host.
        SocketAddr::V6(mut v6) => {
            v6.set_scope_id(0);
            SocketAddr::V6(v6)
        }
        v4 @ SocketAddr::V4(_) => v4,
    };
    format!("{addr},{}", portal.portal_group_tag)
}

/// The answer to `SendTargets=<value>`:
/// * Discovery session: `All` lists every visible target; a name lists
///   that target if visible; an empty value is Reject (there is no
///   "current target").
/// * Normal session: empty or the session's own target name lists that
///   target; `All` is Reject (RFC 7143 §13.3 reserves it for discovery); any
///   other name gets nothing.
pub fn send_targets(value: &str, ctx: &TextContext<'_>, env: &dyn DiscoveryEnv) -> Vec<KeyValue> {
    let wanted: Option<&str> = match (ctx.kind, value) {
        (SessionKind::Discovery, "All") => None,
        (SessionKind::Discovery, "") | (SessionKind::Normal { .. }, "All") => {
            return vec![KeyValue::new("SendTargets", REJECT)];
        }
        (SessionKind::Discovery, name) => Some(name),
        (SessionKind::Normal { target_name }, "") => Some(target_name),
        (SessionKind::Normal { target_name }, name) => {
            if name != target_name {
                return Vec::new();
            }
            Some(name)
        }
    };
    let mut out = Vec::new();
    for target in env.visible_targets(ctx.initiator_name, ctx.peer) {
        if wanted.is_some_and(|w| w != target.name) {
            continue;
        }
        out.push(KeyValue::new("TargetName", target.name.clone()));
        for portal in &target.portals {
            out.push(KeyValue::new(
                "TargetAddress",
                target_address(portal, ctx.local),
            ));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) struct Registry(pub Vec<DiscoveredTarget>);

    impl DiscoveryEnv for Registry {
        fn visible_targets(&self, initiator_name: &str, _peer: IpAddr) -> Vec<DiscoveredTarget> {
            // "secret" targets are hidden from everyone but iqn.admin.
            self.0
                .iter()
                .filter(|t| !t.name.contains("secret") || initiator_name == "iqn.admin")
                .cloned()
                .collect()
        }
    }

    pub(crate) fn portal(addr: &str, tpgt: u16) -> DiscoveredPortal {
        DiscoveredPortal {
            bound: addr.parse().expect("socket address"),
            advertised: None,
            portal_group_tag: tpgt,
        }
    }

    pub(crate) fn registry() -> Registry {
        Registry(vec![
            DiscoveredTarget {
                name: "iqn.2026-11.org.example:a".into(),
                portals: vec![
                    portal("192.0.2.10:3260", 1),
                    portal("[2001:db8::1]:3260", 2),
                ],
            },
            DiscoveredTarget {
                name: "iqn.2026-11.org.example:secret".into(),
                portals: vec![portal("192.0.2.10:3260", 1)],
            },
            DiscoveredTarget {
                name: "iqn.2026-11.org.example:b".into(),
                portals: vec![portal("0.0.0.0:3261", 1)],
            },
        ])
    }

    fn ctx(kind: &SessionKind) -> TextContext<'_> {
        TextContext {
            kind,
            initiator_name: "iqn.host",
            peer: "192.0.2.99".parse().expect("ip"),
            local: "192.0.2.20:3260".parse().expect("local"),
            max_send_data_segment_length: 8192,
        }
    }

    fn lines(pairs: &[KeyValue]) -> Vec<String> {
        pairs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect()
    }

    #[test]
    fn all_in_a_discovery_session() {
        let out = send_targets("All", &ctx(&SessionKind::Discovery), &registry());
        assert_eq!(
            lines(&out),
            [
                "TargetName=iqn.2026-11.org.example:a",
                "TargetAddress=192.0.2.10:3260,1",
                "TargetAddress=[2001:db8::1]:3260,2",
                "TargetName=iqn.2026-11.org.example:b",
                "TargetAddress=192.0.2.20:3261,1",
            ]
        );
        let named = send_targets(
            "iqn.2026-11.org.example:b",
            &ctx(&SessionKind::Discovery),
            &registry(),
        );
        assert_eq!(named.len(), 2);
        let hidden = send_targets(
            "iqn.2026-11.org.example:secret",
            &ctx(&SessionKind::Discovery),
            &registry(),
        );
        assert!(hidden.is_empty(), "ACL hides it");
        assert_eq!(
            lines(&send_targets(
                "",
                &ctx(&SessionKind::Discovery),
                &registry()
            )),
            ["SendTargets=Reject"]
        );
    }

    #[test]
    fn normal_session_sees_only_its_target() {
        let kind = SessionKind::Normal {
            target_name: "iqn.2026-11.org.example:a".into(),
        };
        assert_eq!(send_targets("", &ctx(&kind), &registry()).len(), 3);
        assert_eq!(
            send_targets("iqn.2026-11.org.example:a", &ctx(&kind), &registry()).len(),
            3
        );
        assert!(send_targets("iqn.2026-11.org.example:b", &ctx(&kind), &registry()).is_empty());
        assert_eq!(
            lines(&send_targets("All", &ctx(&kind), &registry())),
            ["SendTargets=Reject"]
        );
    }

    #[test]
    fn advertised_address_wins() {
        let p = DiscoveredPortal {
            bound: "0.0.0.0:3260".parse().expect("bound"),
            advertised: Some("[2001:db8::5]:3262".parse().expect("adv")),
            portal_group_tag: 7,
        };
        let local = "10.0.0.1:3260".parse().expect("local");
        assert_eq!(target_address(&p, local), "[2001:db8::5]:3262,7");
        let wildcard6 = portal("[::]:3260", 3);
        let local6 = "[fe80::1%2]:3260".parse().expect("local6");
        assert_eq!(target_address(&wildcard6, local6), "[fe80::1]:3260,3");
    }
}
