//! iSNSP messages (RFC 4171 §5): the 12-byte header, tag-length-value
//! attributes, and the DevAttrReg / DevDereg requests a target sends.
//! Sans-io: bytes in, bytes out.

use std::net::{IpAddr, SocketAddr};

/// RFC 4171 §5.1: iSNSP version 1.
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 12;

/// Function IDs (RFC 4171 §5.1.3, §6.1); a response is the request | 0x8000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Function {
    DevAttrReg = 0x0001,
    DevAttrQry = 0x0002,
    DevDereg = 0x0004,
}

impl Function {
    pub fn response(self) -> u16 {
        self as u16 | 0x8000
    }
}

/// Flags (RFC 4171 §5.1.4), bit 16 being the field's most significant.
pub const F_CLIENT: u16 = 0x8000;
pub const F_REPLACE: u16 = 0x1000;
pub const F_LAST_PDU: u16 = 0x0800;
pub const F_FIRST_PDU: u16 = 0x0400;

/// Attribute tags (RFC 4171 §6.1) that a target registers.
pub mod tag {
    pub const DELIMITER: u32 = 0;
    pub const ENTITY_IDENTIFIER: u32 = 1;
    pub const ENTITY_PROTOCOL: u32 = 2;
    pub const REGISTRATION_PERIOD: u32 = 6;
    pub const PORTAL_IP_ADDRESS: u32 = 16;
    pub const PORTAL_PORT: u32 = 17;
    pub const ISCSI_NAME: u32 = 32;
    pub const ISCSI_NODE_TYPE: u32 = 33;
    pub const ISCSI_ALIAS: u32 = 34;
    pub const PG_ISCSI_NAME: u32 = 48;
    pub const PG_PORTAL_IP_ADDR: u32 = 49;
    pub const PG_PORTAL_PORT: u32 = 50;
    pub const PG_TAG: u32 = 51;
}

/// RFC 4171 §6.2.2: Entity Protocol 2 is iSCSI; §6.4.2: node type bit 31 (value 1) is
/// Target, bit 30 (value 2) Initiator.
const PROTOCOL_ISCSI: u32 = 2;
const NODE_TYPE_TARGET: u32 = 1;
pub(super) const NODE_TYPE_INITIATOR: u32 = 2;

/// What the target registers: one network entity, its portals, its
/// target nodes and one portal group per target and portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub entity: String,
    /// Seconds the server keeps the entity without a refresh.
    pub period_secs: u32,
    pub portals: Vec<RegisteredPortal>,
    pub targets: Vec<RegisteredTarget>,
}

/// A portal and its portal group tag (RFC 7143 §13.9 TargetPortalGroupTag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RegisteredPortal {
    pub addr: SocketAddr,
    pub tpgt: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTarget {
    pub name: String,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsnsError {
    #[error("iSNS response shorter than its header or status")]
    Short,
    #[error("iSNS response has version {0}")]
    Version(u16),
    #[error("iSNS response is function {got:#06x}, expected {expected:#06x}")]
    Function { got: u16, expected: u16 },
    #[error("iSNS response to transaction {got}, expected {expected}")]
    Transaction { got: u16, expected: u16 },
    #[error("iSNS server answered status {0}")]
    Status(u32),
}

/// Appends one attribute: tag, length, value padded to 4 bytes (§5.5).
pub(super) fn attr(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    let padded = value.len().div_ceil(4) * 4;
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&(padded as u32).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + padded - value.len(), 0);
}

/// Strings are UTF-8, NUL-terminated, then padded (RFC 4171 §5.5.1).
pub(super) fn string(out: &mut Vec<u8>, tag: u32, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(out, tag, &v);
}

pub(super) fn u32_attr(out: &mut Vec<u8>, tag: u32, v: u32) {
    attr(out, tag, &v.to_be_bytes());
}

/// IP addresses are 16 bytes, IPv4 mapped into IPv6 (RFC 4171 §6.3.1).
fn ip(out: &mut Vec<u8>, tag: u32, addr: IpAddr) {
    let v6 = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    attr(out, tag, &v6.octets());
}

/// A TCP port: the 16-bit port in the low bits, the UDP bit clear (§6.3.2).
fn port(out: &mut Vec<u8>, tag: u32, port: u16) {
    u32_attr(out, tag, u32::from(port));
}

pub(super) fn message(function: Function, flags: u16, xid: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(function as u16).to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&(flags | F_CLIENT | F_FIRST_PDU | F_LAST_PDU).to_be_bytes());
    out.extend_from_slice(&xid.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl Registration {
    /// The node that speaks for the entity (RFC 4171 §5.6.1 Source).
    pub fn source(&self) -> Option<&str> {
        self.targets.first().map(|t| t.name.as_str())
    }

    /// DevAttrReg (RFC 4171 §5.6.5.1) with the Replace flag, so the
    /// server's copy of the entity becomes exactly this one: Source,
    /// Message Key (the entity), Delimiter, then entity, portals, nodes
    /// and portal groups. `None` with no target to be the Source.
    pub fn dev_attr_reg(&self, xid: u16) -> Option<Vec<u8>> {
        let source = self.source()?;
        let mut p = Vec::new();
        string(&mut p, tag::ISCSI_NAME, source);
        string(&mut p, tag::ENTITY_IDENTIFIER, &self.entity);
        attr(&mut p, tag::DELIMITER, &[]);
        string(&mut p, tag::ENTITY_IDENTIFIER, &self.entity);
        u32_attr(&mut p, tag::ENTITY_PROTOCOL, PROTOCOL_ISCSI);
        u32_attr(&mut p, tag::REGISTRATION_PERIOD, self.period_secs);
        for a in &self.portals {
            ip(&mut p, tag::PORTAL_IP_ADDRESS, a.addr.ip());
            port(&mut p, tag::PORTAL_PORT, a.addr.port());
        }
        for t in &self.targets {
            string(&mut p, tag::ISCSI_NAME, &t.name);
            u32_attr(&mut p, tag::ISCSI_NODE_TYPE, NODE_TYPE_TARGET);
            if let Some(alias) = &t.alias {
                string(&mut p, tag::ISCSI_ALIAS, alias);
            }
        }
        for t in &self.targets {
            for a in &self.portals {
                string(&mut p, tag::PG_ISCSI_NAME, &t.name);
                ip(&mut p, tag::PG_PORTAL_IP_ADDR, a.addr.ip());
                port(&mut p, tag::PG_PORTAL_PORT, a.addr.port());
                u32_attr(&mut p, tag::PG_TAG, u32::from(a.tpgt));
            }
        }
        Some(message(Function::DevAttrReg, F_REPLACE, xid, &p))
    }
}

/// DevDereg (RFC 4171 §5.6.5.4) of a whole entity: Source, Delimiter,
/// Entity Identifier.
pub fn dev_dereg(source: &str, entity: &str, xid: u16) -> Vec<u8> {
    let mut p = Vec::new();
    string(&mut p, tag::ISCSI_NAME, source);
    attr(&mut p, tag::DELIMITER, &[]);
    string(&mut p, tag::ENTITY_IDENTIFIER, entity);
    message(Function::DevDereg, 0, xid, &p)
}

/// A response header: (function, payload length, flags, transaction).
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(u16, usize, u16, u16), IsnsError> {
    let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    if word(0) != VERSION {
        return Err(IsnsError::Version(word(0)));
    }
    Ok((word(2), usize::from(word(4)), word(6), word(8)))
}

/// Checks a response's function and transaction, and its status (§5.4:
/// the first four bytes of the payload; 0 is Successful).
pub fn check_response(
    request: Function,
    xid: u16,
    header: (u16, usize, u16, u16),
    payload: &[u8],
) -> Result<(), IsnsError> {
    let (function, _, _, got_xid) = header;
    if function != request.response() {
        return Err(IsnsError::Function {
            got: function,
            expected: request.response(),
        });
    }
    if got_xid != xid {
        return Err(IsnsError::Transaction {
            got: got_xid,
            expected: xid,
        });
    }
    let status = payload
        .get(..4)
        .ok_or(IsnsError::Short)?
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| IsnsError::Short)?;
    if status != 0 {
        return Err(IsnsError::Status(status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            entity: "iet:host".into(),
            period_secs: 900,
            portals: vec![RegisteredPortal {
                addr: "127.0.0.1:3260".parse().unwrap(),
                tpgt: 1,
            }],
            targets: vec![RegisteredTarget {
                name: "iqn.2026-11.io.iet:a".into(),
                alias: Some("disk".into()),
            }],
        }
    }

    /// Splits a payload into (tag, value) pairs, checking lengths.
    fn attrs(mut p: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !p.is_empty() {
            let tag = u32::from_be_bytes(p[0..4].try_into().unwrap());
            let len = u32::from_be_bytes(p[4..8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0, "tag {tag} padded");
            out.push((tag, p[8..8 + len].to_vec()));
            p = &p[8 + len..];
        }
        out
    }

    #[test]
    fn dev_attr_reg_layout() {
        let m = registration().dev_attr_reg(7).unwrap();
        let h: [u8; 12] = m[..12].try_into().unwrap();
        let (function, len, flags, xid) = parse_header(&h).unwrap();
        assert_eq!((function, len, xid), (1, m.len() - 12, 7));
        assert_eq!(flags, F_CLIENT | F_REPLACE | F_FIRST_PDU | F_LAST_PDU);
        let a = attrs(&m[12..]);
        let tags: Vec<u32> = a.iter().map(|x| x.0).collect();
        assert_eq!(
            tags,
            [32, 1, 0, 1, 2, 6, 16, 17, 32, 33, 34, 48, 49, 50, 51],
            "source, key, delimiter, entity, portal, node, portal group"
        );
        assert_eq!(a[0].1, b"iqn.2026-11.io.iet:a\0\0\0\0");
        assert_eq!(
            a[6].1,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]
        );
        assert_eq!(a[7].1, 3260u32.to_be_bytes());
        assert_eq!(a[9].1, 1u32.to_be_bytes(), "node type Target");
        assert!(
            Registration {
                targets: vec![],
                ..registration()
            }
            .dev_attr_reg(1)
            .is_none()
        );
    }

    #[test]
    fn dev_dereg_and_responses() {
        let m = dev_dereg("iqn.2026-11.io.iet:a", "iet:host", 9);
        let a = attrs(&m[12..]);
        assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), [32, 0, 1]);
        let header = (0x8004, 4, F_LAST_PDU, 9);
        assert_eq!(
            check_response(Function::DevDereg, 9, header, &[0; 4]),
            Ok(())
        );
        assert_eq!(
            check_response(Function::DevDereg, 9, header, &[0, 0, 0, 3]),
            Err(IsnsError::Status(3))
        );
        assert_eq!(
            check_response(Function::DevDereg, 8, header, &[0; 4]),
            Err(IsnsError::Transaction {
                got: 9,
                expected: 8
            })
        );
        assert_eq!(
            check_response(Function::DevAttrReg, 9, header, &[0; 4]),
            Err(IsnsError::Function {
                got: 0x8004,
                expected: 0x8001
            })
        );
        assert_eq!(
            check_response(Function::DevDereg, 9, header, &[0; 2]),
            Err(IsnsError::Short)
        );
        let mut h = [0u8; 12];
        h[1] = 2;
        assert_eq!(parse_header(&h), Err(IsnsError::Version(2)));
    }
}
