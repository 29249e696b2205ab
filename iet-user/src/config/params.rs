//! Per-target negotiation limits and timers as written in configuration
//! files; every field is optional and falls back to iet's defaults.

use serde::{Deserialize, Serialize};

use crate::proto::params::{Digest, TargetParams};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recv_data_segment_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_xmit_data_segment_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_burst_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_burst_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_data: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_r2t: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outstanding_r2t: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_time2wait: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_time2retain: Option<u16>,
    /// Accepted header digests, e.g. `["None", "CRC32C"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_digest: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nop_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nop_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_commands: Option<u32>,
}

fn digests(names: &[String]) -> Result<Vec<Digest>, String> {
    names
        .iter()
        .map(|n| {
            Digest::from_wire(n.trim())
                .ok_or_else(|| format!("unknown digest {n:?} (None or CRC32C)"))
        })
        .collect()
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<Option<T>, String> {
    match v {
        Some(x) if x < lo || x > hi => Err(format!("{name} {x} is outside {lo}..={hi}")),
        other => Ok(other),
    }
}

impl ParamsConfig {
    /// The settings of `p` that differ from the defaults, for saving.
    pub fn from_params(p: &TargetParams) -> ParamsConfig {
        let d = TargetParams::default();
        let diff = |a, b| (a != b).then_some(a);
        let names = |v: &[Digest]| {
            v.iter()
                .map(|x| x.wire_name().to_owned())
                .collect::<Vec<_>>()
        };
        ParamsConfig {
            max_recv_data_segment_length: diff(
                p.max_recv_data_segment_length,
                d.max_recv_data_segment_length,
            ),
            max_xmit_data_segment_length: diff(
                p.max_xmit_data_segment_length,
                d.max_xmit_data_segment_length,
            ),
            max_burst_length: diff(p.max_burst_length, d.max_burst_length),
            first_burst_length: diff(p.first_burst_length, d.first_burst_length),
            immediate_data: (p.immediate_data != d.immediate_data).then_some(p.immediate_data),
            initial_r2t: (p.initial_r2t != d.initial_r2t).then_some(p.initial_r2t),
            max_outstanding_r2t: (p.max_outstanding_r2t != d.max_outstanding_r2t)
                .then_some(p.max_outstanding_r2t),
            max_connections: (p.max_connections != d.max_connections).then_some(p.max_connections),
            default_time2wait: (p.default_time2wait != d.default_time2wait)
                .then_some(p.default_time2wait),
            default_time2retain: (p.default_time2retain != d.default_time2retain)
                .then_some(p.default_time2retain),
            header_digest: (p.header_digest != d.header_digest).then(|| names(&p.header_digest)),
            data_digest: (p.data_digest != d.data_digest).then(|| names(&p.data_digest)),
            nop_interval: diff(p.nop_interval_secs, d.nop_interval_secs),
            nop_timeout: diff(p.nop_timeout_secs, d.nop_timeout_secs),
            queued_commands: diff(p.queued_commands, d.queued_commands),
        }
    }

    /// The target's limits: defaults overridden by what is set here.
    pub fn to_params(&self) -> Result<TargetParams, String> {
        let mut p = TargetParams::default();
        if let Some(v) = range(
            "MaxRecvDataSegmentLength",
            self.max_recv_data_segment_length,
            512,
            16_777_215,
        )? {
            p.max_recv_data_segment_length = v;
        }
        if let Some(v) = range(
            "MaxXmitDataSegmentLength",
            self.max_xmit_data_segment_length,
            512,
            16_777_215,
        )? {
            p.max_xmit_data_segment_length = v;
        }
        if let Some(v) = range("MaxBurstLength", self.max_burst_length, 512, 16_777_215)? {
            p.max_burst_length = v;
        }
        if let Some(v) = range("FirstBurstLength", self.first_burst_length, 512, 16_777_215)? {
            p.first_burst_length = v;
        }
        if p.first_burst_length > p.max_burst_length {
            return Err(format!(
                "FirstBurstLength {} exceeds MaxBurstLength {}",
                p.first_burst_length, p.max_burst_length
            ));
        }
        if let Some(v) = self.immediate_data {
            p.immediate_data = v;
        }
        if let Some(v) = self.initial_r2t {
            p.initial_r2t = v;
        }
        if let Some(v) = range("MaxOutstandingR2T", self.max_outstanding_r2t, 1, 65535)? {
            p.max_outstanding_r2t = v;
        }
        if let Some(v) = range("MaxConnections", self.max_connections, 1, 65535)? {
            p.max_connections = v;
        }
        if let Some(v) = range("DefaultTime2Wait", self.default_time2wait, 0, 3600)? {
            p.default_time2wait = v;
        }
        if let Some(v) = range("DefaultTime2Retain", self.default_time2retain, 0, 3600)? {
            p.default_time2retain = v;
        }
        if let Some(d) = &self.header_digest {
            p.header_digest = digests(d)?;
        }
        if let Some(d) = &self.data_digest {
            p.data_digest = digests(d)?;
        }
        if let Some(v) = self.nop_interval {
            p.nop_interval_secs = v;
        }
        if let Some(v) = self.nop_timeout {
            p.nop_timeout_secs = v;
        }
        if let Some(v) = range("QueuedCommands", self.queued_commands, 1, 4096)? {
            p.queued_commands = v;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_params() {
        let cfg = ParamsConfig {
            max_burst_length: Some(65536),
            first_burst_length: Some(65536),
            header_digest: Some(vec!["CRC32C".into()]),
            nop_interval: Some(0),
            ..ParamsConfig::default()
        };
        let p = cfg.to_params().unwrap();
        assert_eq!(p.header_digest, vec![Digest::Crc32c]);
        assert_eq!(ParamsConfig::from_params(&p), cfg);
        assert_eq!(
            ParamsConfig::from_params(&TargetParams::default()),
            ParamsConfig::default()
        );
    }

    #[test]
    fn refuses_out_of_range() {
        let bad = ParamsConfig {
            max_burst_length: Some(100),
            ..ParamsConfig::default()
        };
        assert!(bad.to_params().unwrap_err().contains("MaxBurstLength"));
        let bad = ParamsConfig {
            first_burst_length: Some(1 << 20),
            max_burst_length: Some(65536),
            ..ParamsConfig::default()
        };
        assert!(bad.to_params().is_err());
    }
}
