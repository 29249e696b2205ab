//! iSNSAccessControl (IET's; RFC 4171 §2.2.1, §5.6.5.2): a login to a target is allowed
//! only when the iSNS server shows the initiator to that target (a shared discovery domain).
//!
//! The client asks the server, with each target as the Source, for the initiator nodes
//! that target may see (DevAttrQry, Message Key iSCSI Node Type = Initiator), every few
//! seconds and at once after a refused login; logins are checked against the last answer.
//! A target with no answer yet sees no initiator: access control fails closed.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use tokio::sync::Notify;
use tracing::warn;

use super::pdu::{self, Function, IsnsError, NODE_TYPE_INITIATOR, tag};

/// The initiators each target may see, as the iSNS server last said.
#[derive(Debug, Default)]
pub struct Access {
    visible: RwLock<HashMap<String, HashSet<String>>>,
    /// A login was refused: ask the server again now rather than at the next period.
    pub(super) refused: Notify,
}

impl Access {
    /// Whether the server's last answer shows `initiator` to `target` (SendTargets lists
    /// only such targets).
    pub fn sees(&self, target: &str, initiator: &str) -> bool {
        self.visible
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(target)
            .is_some_and(|names| names.contains(initiator))
    }

    /// Whether `initiator` may log in to `target`; a refusal is logged and makes the
    /// client ask the server again, so an initiator just added to a domain gets in soon.
    pub fn permits(&self, target: &str, initiator: &str) -> bool {
        let ok = self.sees(target, initiator);
        if !ok {
            warn!(
                target,
                initiator,
                "iSNS access control: the initiator shares no discovery domain with the target; login refused"
            );
            self.refused.notify_one();
        }
        ok
    }

    /// The server's answer for `target`.
    pub(super) fn set(&self, target: &str, initiators: HashSet<String>) {
        self.visible
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(target.to_owned(), initiators);
    }

    /// Forget targets that are gone.
    pub(super) fn retain(&self, targets: &HashSet<&str>) {
        self.visible
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|t, _| targets.contains(t.as_str()));
    }
}

/// DevAttrQry (RFC 4171 §5.6.5.2) as `target`: Source, Message Key iSCSI Node Type =
/// Initiator, Delimiter, then the operating attributes to return (iSCSI Name and Node
/// Type, zero length). The server answers only with nodes in the Source's domains.
pub fn initiators_query(target: &str, xid: u16) -> Vec<u8> {
    let mut p = Vec::new();
    pdu::string(&mut p, tag::ISCSI_NAME, target);
    pdu::u32_attr(&mut p, tag::ISCSI_NODE_TYPE, NODE_TYPE_INITIATOR);
    pdu::attr(&mut p, tag::DELIMITER, &[]);
    pdu::attr(&mut p, tag::ISCSI_NAME, &[]);
    pdu::attr(&mut p, tag::ISCSI_NODE_TYPE, &[]);
    pdu::message(Function::DevAttrQry, 0, xid, &p)
}

/// The initiator names in a DevAttrQryRsp payload (status checked already): after the
/// Delimiter, each iSCSI Name followed by an iSCSI Node Type with the Initiator bit.
/// Every length is checked against what is left.
pub fn parse_initiators(payload: &[u8]) -> Result<HashSet<String>, IsnsError> {
    let mut rest = payload.get(4..).ok_or(IsnsError::Short)?;
    let mut names = HashSet::new();
    let mut after_delimiter = false;
    let mut name: Option<String> = None;
    while !rest.is_empty() {
        let head = rest.get(..8).ok_or(IsnsError::Short)?;
        let t = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let value = rest
            .get(8..8usize.saturating_add(len))
            .ok_or(IsnsError::Short)?;
        rest = &rest[8 + len..];
        match t {
            tag::DELIMITER => after_delimiter = true,
            tag::ISCSI_NAME if after_delimiter => {
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                name = std::str::from_utf8(&value[..end]).ok().map(str::to_owned);
            }
            tag::ISCSI_NODE_TYPE if after_delimiter => {
                let node_type = value
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| IsnsError::Short)?;
                if let Some(n) = name.take()
                    && node_type & NODE_TYPE_INITIATOR != 0
                {
                    names.insert(n);
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(out: &mut Vec<u8>, t: u32, v: &[u8]) {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }

    #[test]
    fn query_layout() {
        let m = initiators_query("iqn.2026-12.io.iet:t", 9);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]), 0x0002, "DevAttrQry");
        let p = &m[12..];
        // Source, key (node type 2), delimiter, two zero-length operating attributes.
        assert_eq!(&p[..4], &32u32.to_be_bytes());
        let key = 8 + 24;
        assert_eq!(&p[key..key + 12], &[0, 0, 0, 33, 0, 0, 0, 4, 0, 0, 0, 2]);
        assert_eq!(
            &p[key + 12..],
            &[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0, 33, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn response_names_initiators_only_and_bounds_lengths() {
        let mut p = vec![0, 0, 0, 0];
        tlv(&mut p, tag::ISCSI_NODE_TYPE, &2u32.to_be_bytes());
        tlv(&mut p, tag::DELIMITER, &[]);
        tlv(&mut p, tag::ISCSI_NAME, b"iqn.2026-12.io.iet:i1\0\0\0");
        tlv(&mut p, tag::ISCSI_NODE_TYPE, &2u32.to_be_bytes());
        tlv(&mut p, tag::ISCSI_NAME, b"iqn.2026-12.io.iet:t\0\0\0\0");
        tlv(&mut p, tag::ISCSI_NODE_TYPE, &1u32.to_be_bytes());
        let names = parse_initiators(&p).expect("parses");
        assert_eq!(names, HashSet::from(["iqn.2026-12.io.iet:i1".to_owned()]));
        // A length past the end is refused, not read.
        let mut bad = vec![0, 0, 0, 0];
        bad.extend_from_slice(&32u32.to_be_bytes());
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_initiators(&bad), Err(IsnsError::Short));
        assert_eq!(parse_initiators(&[0, 0]), Err(IsnsError::Short));
    }
}
