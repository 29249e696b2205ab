//! Per-target negotiation limits and timers as written in configuration
//! files, built from the rows of `proto::params::target_params!`: every
//! field is optional and falls back to iet's defaults.

use serde::{Deserialize, Serialize};

use crate::proto::auth::ChapAlgorithm;
use crate::proto::params::{Digest, TargetParams, param_name, target_params};

/// How a row's type is written in TOML and in ietd.conf.
pub trait Setting: Sized + PartialEq {
    /// The TOML form.
    type Toml;
    fn to_toml(&self) -> Self::Toml;
    fn from_toml(v: &Self::Toml) -> Result<Self, String>;
    /// The ietd.conf form; the error leaves out the key (the caller adds it).
    fn from_ietd(v: &str) -> Result<Self::Toml, String>;
}

macro_rules! number_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            type Toml = $t;
            fn to_toml(&self) -> $t {
                *self
            }
            fn from_toml(v: &$t) -> Result<$t, String> {
                Ok(*v)
            }
            fn from_ietd(v: &str) -> Result<$t, String> {
                v.parse().map_err(|_| format!("{v:?} is not a number"))
            }
        }
    )*};
}
number_setting!(u8, u16, u32);

impl Setting for bool {
    type Toml = bool;
    fn to_toml(&self) -> bool {
        *self
    }
    fn from_toml(v: &bool) -> Result<bool, String> {
        Ok(*v)
    }
    fn from_ietd(v: &str) -> Result<bool, String> {
        match v {
            "Yes" | "yes" => Ok(true),
            "No" | "no" => Ok(false),
            _ => Err(format!("expected Yes or No, got {v:?}")),
        }
    }
}

/// Lists are TOML arrays of names and comma-separated in ietd.conf.
fn list_from_ietd(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_owned()).collect()
}

impl Setting for Vec<Digest> {
    type Toml = Vec<String>;
    fn to_toml(&self) -> Vec<String> {
        self.iter().map(|d| d.wire_name().to_owned()).collect()
    }
    fn from_toml(v: &Vec<String>) -> Result<Self, String> {
        v.iter()
            .map(|n| {
                Digest::from_wire(n.trim())
                    .ok_or_else(|| format!("unknown digest {n:?} (None or CRC32C)"))
            })
            .collect()
    }
    fn from_ietd(v: &str) -> Result<Vec<String>, String> {
        Ok(list_from_ietd(v))
    }
}

impl Setting for Vec<ChapAlgorithm> {
    type Toml = Vec<String>;
    fn to_toml(&self) -> Vec<String> {
        self.iter().map(|a| a.name().to_owned()).collect()
    }
    fn from_toml(v: &Vec<String>) -> Result<Self, String> {
        v.iter()
            .map(|n| {
                ChapAlgorithm::from_name(n.trim()).ok_or_else(|| {
                    format!("unknown CHAP algorithm {n:?} (MD5, SHA-1, SHA-256, SHA3-256)")
                })
            })
            .collect()
    }
    fn from_ietd(v: &str) -> Result<Vec<String>, String> {
        Ok(list_from_ietd(v))
    }
}

/// Builds `ParamsConfig` from the rows; the `@rows` steps give each row
/// its TOML name (the field's, unless the row says `as name`).
macro_rules! declare_params_config {
    (@rows [$($done:tt)*]) => {
        declare_params_config!(@emit $($done)*);
    };
    (@rows [$($done:tt)*]
        $(#[doc = $doc:literal])*
        $field:ident as $toml:ident : $ty:ty = $default:expr,
            $(key $key:ident)? $(name $name:literal)? $(range $lo:expr, $hi:expr)?;
        $($rest:tt)*
    ) => {
        declare_params_config!(@rows [$($done)* {[$($doc)*] $field $toml $ty [$(key $key)? $(name $name)?]}] $($rest)*);
    };
    (@rows [$($done:tt)*]
        $(#[doc = $doc:literal])*
        $field:ident : $ty:ty = $default:expr,
            $(key $key:ident)? $(name $name:literal)? $(range $lo:expr, $hi:expr)?;
        $($rest:tt)*
    ) => {
        declare_params_config!(@rows [$($done)* {[$($doc)*] $field $field $ty [$(key $key)? $(name $name)?]}] $($rest)*);
    };
    (@emit $({[$($doc:literal)*] $field:ident $toml:ident $ty:ty [$($spec:tt)*]})*) => {
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ParamsConfig {
            $(
                $(#[doc = $doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $toml: Option<<$ty as Setting>::Toml>,
            )*
        }

        impl ParamsConfig {
            /// The settings of `p` that differ from the defaults, for saving.
            pub fn from_params(p: &TargetParams) -> ParamsConfig {
                let d = TargetParams::default();
                ParamsConfig {
                    $( $toml: (p.$field != d.$field).then(|| p.$field.to_toml()), )*
                }
            }

            /// Every setting of `p`, defaults included, for showing.
            pub fn all(p: &TargetParams) -> ParamsConfig {
                ParamsConfig {
                    $( $toml: Some(p.$field.to_toml()), )*
                }
            }

            /// The target's limits: defaults overridden by what is set here.
            pub fn to_params(&self) -> Result<TargetParams, String> {
                let mut p = TargetParams::default();
                $(
                    if let Some(v) = &self.$toml {
                        p.$field = Setting::from_toml(v)
                            .map_err(|e| format!("{}: {e}", declare_params_config!(@name $($spec)*)))?;
                    }
                )*
                if self.first_burst_length.is_none() {
                    // The default follows a smaller MaxBurstLength down.
                    p.first_burst_length = p.first_burst_length.min(p.max_burst_length);
                }
                p.check()?;
                Ok(p)
            }

            /// Sets one ietd.conf key (`MaxBurstLength 65536`); `None` when
            /// `key` is not a target parameter.
            pub fn set_ietd(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
                $(
                    if key == declare_params_config!(@name $($spec)*) {
                        return Some(match <$ty as Setting>::from_ietd(value) {
                            Ok(v) => {
                                self.$toml = Some(v);
                                Ok(())
                            }
                            Err(e) => Err(format!("{key}: {e}")),
                        });
                    }
                )*
                None
            }
        }
    };
    (@name $($spec:tt)*) => { param_name!($($spec)*) };
    ($($rows:tt)*) => {
        declare_params_config!(@rows [] $($rows)*);
    };
}

target_params!(declare_params_config);

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

    #[test]
    fn every_row_is_a_toml_and_an_ietd_setting() {
        let mut cfg = ParamsConfig::default();
        for (key, value) in [
            ("MaxRecvDataSegmentLength", "65536"),
            ("MaxXmitDataSegmentLength", "32768"),
            ("MaxBurstLength", "131072"),
            ("FirstBurstLength", "65536"),
            ("ImmediateData", "No"),
            ("InitialR2T", "No"),
            ("MaxOutstandingR2T", "4"),
            ("MaxConnections", "2"),
            ("ErrorRecoveryLevel", "0"),
            ("DefaultTime2Wait", "3"),
            ("DefaultTime2Retain", "30"),
            ("HeaderDigest", "CRC32C"),
            ("DataDigest", "CRC32C,None"),
            ("CHAP_A", "SHA3-256,MD5"),
            ("NOPInterval", "7"),
            ("NOPTimeout", "9"),
            ("QueuedCommands", "64"),
        ] {
            assert_eq!(cfg.set_ietd(key, value), Some(Ok(())), "{key}");
        }
        assert_eq!(cfg.set_ietd("Wthreads", "8"), None);
        let p = cfg.to_params().unwrap();
        assert_eq!(
            p.chap_algorithms,
            [ChapAlgorithm::Sha3_256, ChapAlgorithm::Md5]
        );
        assert_eq!((p.nop_interval_secs, p.queued_commands), (7, 64));
        assert!(!p.immediate_data && !p.initial_r2t);
        // Every non-default value survives TOML.
        let text = toml::to_string(&cfg).unwrap();
        let back: ParamsConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.to_params().unwrap(), p);
        assert_eq!(ParamsConfig::from_params(&p).to_params().unwrap(), p);
        assert_eq!(
            cfg.set_ietd("MaxConnections", "many"),
            Some(Err("MaxConnections: \"many\" is not a number".into()))
        );
        cfg.chap_algorithms = Some(vec!["SHA-512".into()]);
        assert!(cfg.to_params().unwrap_err().starts_with("CHAP_A: unknown"));
    }
}
