//! Who may log in to a target: initiator names and source networks, like
//! IET's initiators.allow and initiators.deny.

use std::net::IpAddr;

/// An address with a prefix length, such as `192.168.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|e| format!("{s}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|e| format!("{s}: {e}"))?,
            None => max,
        };
        if prefix > max {
            return Err(format!("{s}: prefix longer than {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One rule: an initiator name (or `ALL`) and/or a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclEntry {
    Name(String),
    Network(Cidr),
    All,
}

impl AclEntry {
    /// Parses `ALL`, a CIDR or bare address, or an initiator name.
    pub fn parse(rule: &str) -> Result<AclEntry, String> {
        let rule = rule.trim();
        if rule.eq_ignore_ascii_case("ALL") {
            return Ok(AclEntry::All);
        }
        let lower = rule.to_ascii_lowercase();
        if lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa.") {
            return Ok(AclEntry::Name(rule.to_owned()));
        }
        rule.parse::<Cidr>()
            .map(AclEntry::Network)
            .map_err(|e| format!("not an initiator name, address or network: {e}"))
    }

    fn matches(&self, initiator: &str, peer: IpAddr) -> bool {
        match self {
            AclEntry::Name(n) => n == initiator,
            AclEntry::Network(c) => c.contains(peer),
            AclEntry::All => true,
        }
    }
}

impl std::fmt::Display for AclEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AclEntry::Name(n) => f.write_str(n),
            AclEntry::Network(c) => write!(f, "{c}"),
            AclEntry::All => f.write_str("ALL"),
        }
    }
}

/// IET semantics: allowed when an allow rule matches; otherwise denied
/// when a deny rule matches; an empty allow list allows everyone not denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub allow: Vec<AclEntry>,
    pub deny: Vec<AclEntry>,
}

impl Acl {
    pub fn permits(&self, initiator: &str, peer: IpAddr) -> bool {
        if self.allow.iter().any(|e| e.matches(initiator, peer)) {
            return true;
        }
        if self.deny.iter().any(|e| e.matches(initiator, peer)) {
            return false;
        }
        self.allow.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("1.2.3.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let v6: Cidr = "[fd00::]/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
    }

    #[test]
    fn iet_allow_deny_semantics() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(Acl::default().permits("iqn.x", peer));
        let acl = Acl {
            allow: vec![AclEntry::Name("iqn.good".into())],
            deny: vec![AclEntry::All],
        };
        assert!(acl.permits("iqn.good", peer));
        assert!(!acl.permits("iqn.bad", peer));
        let deny_only = Acl {
            allow: vec![],
            deny: vec![AclEntry::Network("127.0.0.0/8".parse().unwrap())],
        };
        assert!(!deny_only.permits("iqn.any", peer));
    }
}
