//! A target's configured limits, declared once: each row of [`target_params!`]
//! is a `TargetParams` field, its default, the key it answers and its range.
//!
//! The rows are an "x-macro", as quinn-proto's `transport_parameters.rs`
//! declares its parameters: `target_params!(some_macro)` hands them to
//! `some_macro!`, which builds what it needs from them. Here that is the
//! struct, its `Default`, the range check and what negotiation offers for a
//! key; `config::params` builds the TOML settings and the ietd.conf reader
//! from the same rows. A row is
//!
//! ```text
//! /// doc
//! field [as toml_name]: Type = default, [key KeyName] [name "IetdConfName"] [range lo, hi];
//! ```
//!
//! `key` ties the row to the key table: negotiation answers that key from
//! the field, and the key's range bounds the field unless `range` narrows
//! it. `name` is the ietd.conf name of a row that is not a key.

use super::Digest;
use super::table::{Key, Range};
use crate::proto::auth::ChapAlgorithm;

/// Hands every row to `$callback!`.
macro_rules! target_params {
    ($callback:ident) => {
        $callback! {
            /// What we can receive in one data segment (RFC 7143 §13.12), declared to the initiator.
            max_recv_data_segment_length: u32 = 262_144, key MaxRecvDataSegmentLength;
            /// Cap on the data segments we send, whatever the initiator declares.
            max_xmit_data_segment_length: u32 = 262_144, name "MaxXmitDataSegmentLength" range 512, 16_777_215;
            /// RFC 7143 §13.13.
            max_burst_length: u32 = 1_048_576, key MaxBurstLength;
            /// RFC 7143 §13.14; a default above MaxBurstLength follows it down.
            first_burst_length: u32 = 262_144, key FirstBurstLength;
            /// RFC 7143 §13.11.
            immediate_data: bool = true, key ImmediateData;
            /// Yes (IET's and LIO's default): unsolicited Data-Out is then only
            /// immediate data, which keeps the first transfer path simple.
            initial_r2t: bool = true, key InitialR2T;
            /// RFC 7143 §13.17.
            max_outstanding_r2t: u16 = 8, key MaxOutstandingR2T;
            /// RFC 7143 §13.2.
            max_connections: u16 = 8, key MaxConnections;
            /// Highest level we implement: 0 (session recovery only).
            error_recovery_level: u8 = 0, key ErrorRecoveryLevel range 0, 0;
            /// RFC 7143 §13.15.
            default_time2wait: u16 = 2, key DefaultTime2Wait;
            /// RFC 7143 §13.16.
            default_time2retain: u16 = 20, key DefaultTime2Retain;
            /// Header digests we accept, e.g. `["None", "CRC32C"]` (the initiator's order wins).
            header_digest: Vec<Digest> = vec![Digest::None, Digest::Crc32c], key HeaderDigest;
            /// Data digests we accept.
            data_digest: Vec<Digest> = vec![Digest::None, Digest::Crc32c], key DataDigest;
            /// CHAP digests we accept, most preferred first (RFC 7143 §12.1.3, CHAP_A):
            /// `["SHA3-256", "SHA-256", "SHA-1", "MD5"]` by name or number.
            chap_algorithms: Vec<ChapAlgorithm> = ChapAlgorithm::ALL.to_vec(), key ChapA;
            /// Seconds between NOP-In pings of an idle connection; 0: none.
            nop_interval_secs as nop_interval: u32 = 5, name "NOPInterval";
            /// Seconds a ping waits for its NOP-Out before the connection ends.
            nop_timeout_secs as nop_timeout: u32 = 30, name "NOPTimeout";
            /// Sessions the target serves at once (IET's MaxSessions); 0: no limit.
            max_sessions: u32 = 0, name "MaxSessions";
            /// Command window per session: MaxCmdSN = ExpCmdSN + queued_commands - 1.
            queued_commands: u32 = 128, name "QueuedCommands" range 1, 4096;
        }
    };
}
pub(crate) use target_params;

/// The name a row has in ietd.conf (and in error messages).
macro_rules! param_name {
    (key $key:ident) => {
        $crate::proto::params::Key::$key.name()
    };
    ($(key $key:ident)? name $name:literal) => {
        $name
    };
}
pub(crate) use param_name;

/// The range a row's value must lie in.
macro_rules! param_range {
    (key $key:ident) => {
        $crate::proto::params::Key::$key.def().range
    };
    ($(key $key:ident)? $(name $name:literal)? range $lo:expr, $hi:expr) => {
        $crate::proto::params::Range::Number { min: $lo, max: $hi }
    };
    ($(key $key:ident)? $(name $name:literal)?) => {
        $crate::proto::params::Range::Any
    };
}

/// What we hold for a key, as negotiation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ours {
    Number(u64),
    Bool(bool),
    /// Values of a list key we accept, as wire strings.
    List(Vec<&'static str>),
}

/// A type a row may have.
pub trait ParamValue {
    fn ours(&self) -> Ours;
}

macro_rules! number_value {
    ($($t:ty),*) => {$(
        impl ParamValue for $t {
            fn ours(&self) -> Ours {
                Ours::Number(u64::from(*self))
            }
        }
    )*};
}
number_value!(u8, u16, u32);

impl ParamValue for bool {
    fn ours(&self) -> Ours {
        Ours::Bool(*self)
    }
}

impl ParamValue for Vec<Digest> {
    fn ours(&self) -> Ours {
        Ours::List(self.iter().map(|d| d.wire_name()).collect())
    }
}

impl ParamValue for Vec<ChapAlgorithm> {
    fn ours(&self) -> Ours {
        Ours::List(self.iter().map(|a| a.wire()).collect())
    }
}

macro_rules! declare_target_params {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident $(as $toml:ident)? : $ty:ty = $default:expr,
            $(key $key:ident)? $(name $name:literal)? $(range $lo:expr, $hi:expr)?;
    )*) => {
        /// One target's configured limits: what it will accept in negotiation.
        /// NOPInterval, NOPTimeout and QueuedCommands are not keys; they ride
        /// along because they are configured per target like the rest.
        ///
        /// The defaults are not IET's (8192 / 262144 / 1 connection / 1 R2T),
        /// which were sized for 2004-era memory. Linux initiators offer
        /// MaxRecvDataSegmentLength=262144 and MaxBurstLength=16776192, so a
        /// 256 KiB segment and a 1 MiB burst let a 1 MiB write go out in four
        /// PDUs and one R2T instead of 128 PDUs and four R2Ts; 8 outstanding
        /// R2Ts and 8 connections let multipath and MC/S initiators keep the
        /// pipe full. Memory per connection stays bounded by
        /// MaxRecvDataSegmentLength.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct TargetParams {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for TargetParams {
            fn default() -> Self {
                TargetParams { $( $field: $default, )* }
            }
        }

        impl TargetParams {
            /// Our value for a negotiation key, when a row holds it.
            pub fn ours(&self, key: Key) -> Option<Ours> {
                $($( if key == Key::$key { return Some(self.$field.ours()); } )?)*
                None
            }

            /// Every value within its range, and FirstBurstLength within
            /// MaxBurstLength (RFC 7143 §13.14). Errors name the setting.
            pub fn check(&self) -> Result<(), String> {
                $(
                    check_range(
                        param_name!($(key $key)? $(name $name)?),
                        &self.$field.ours(),
                        param_range!($(key $key)? $(name $name)? $(range $lo, $hi)?),
                    )?;
                )*
                if self.first_burst_length > self.max_burst_length {
                    return Err(format!(
                        "FirstBurstLength {} exceeds MaxBurstLength {}",
                        self.first_burst_length, self.max_burst_length
                    ));
                }
                Ok(())
            }
        }
    };
}

target_params!(declare_target_params);

fn check_range(name: &str, value: &Ours, range: Range) -> Result<(), String> {
    match (value, range) {
        (Ours::Number(x), Range::Number { min, max }) if !(min..=max).contains(x) => {
            Err(format!("{name} {x} is outside {min}..={max}"))
        }
        (Ours::List(v), _) if v.is_empty() => Err(format!("{name} lists nothing")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_in_range_and_answer_their_keys() {
        let p = TargetParams::default();
        p.check().unwrap();
        assert_eq!(p.ours(Key::MaxBurstLength), Some(Ours::Number(1_048_576)));
        assert_eq!(p.ours(Key::InitialR2T), Some(Ours::Bool(true)));
        assert_eq!(
            p.ours(Key::HeaderDigest),
            Some(Ours::List(vec!["None", "CRC32C"]))
        );
        assert_eq!(p.ours(Key::TargetName), None);
    }

    /// Each row's type fits its key's result function in the key table.
    #[test]
    fn rows_fit_their_keys() {
        use super::super::table::{KEYS, Kind};
        let p = TargetParams::default();
        let mut rows = 0;
        for def in KEYS {
            let Some(ours) = p.ours(def.key) else {
                continue;
            };
            rows += 1;
            let fits = match &ours {
                Ours::Number(_) => {
                    matches!(def.kind, Kind::Min | Kind::Max | Kind::Declarative)
                        && matches!(def.range, Range::Number { .. })
                }
                Ours::Bool(_) => matches!(def.kind, Kind::And | Kind::Or),
                Ours::List(values) => match (def.kind, def.range) {
                    (Kind::List, Range::Values(allowed)) => {
                        values.iter().all(|v| allowed.contains(v))
                    }
                    (Kind::Special, Range::Any) => true,
                    _ => false,
                },
            };
            assert!(fits, "{}: {:?} for a {:?} key", def.name, ours, def.kind);
        }
        assert_eq!(rows, 13, "rows tied to a key");
    }

    #[test]
    fn ranges_come_from_the_key_table_or_the_row() {
        let p = TargetParams {
            max_outstanding_r2t: 0,
            ..TargetParams::default()
        };
        assert_eq!(
            p.check().unwrap_err(),
            "MaxOutstandingR2T 0 is outside 1..=65535"
        );
        let p = TargetParams {
            error_recovery_level: 1,
            ..TargetParams::default()
        };
        assert_eq!(
            p.check().unwrap_err(),
            "ErrorRecoveryLevel 1 is outside 0..=0"
        );
        let p = TargetParams {
            queued_commands: 5000,
            ..TargetParams::default()
        };
        assert!(p.check().unwrap_err().starts_with("QueuedCommands"));
    }
}
