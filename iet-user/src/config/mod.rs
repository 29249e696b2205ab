//! ietd's configuration as plain serde data: the TOML file, and the same
//! structure built from command-line flags.

mod ietd_conf;
mod params;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use ietd_conf::{apply_initiators_file, looks_like_ietd_conf, parse_ietd_conf};
pub use params::ParamsConfig;

use crate::backend::Engine;
use crate::dataplane::EbpfMode;
use crate::target::ChapAccount;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_portals", rename = "portal")]
    pub portals: Vec<PortalConfig>,
    #[serde(default)]
    pub ebpf: EbpfConfig,
    #[serde(default = "default_control")]
    pub control: PathBuf,
    /// Where state that must survive restarts lives (APTPL reservations).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Prometheus endpoint address; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// How long a connection busy-polls for its next PDU, in µs, while
    /// its initiator sends one command at a time (write lanes poll 2.5
    /// times as long); 0 always sleeps, saving CPU at QD1 latency's cost.
    #[serde(default = "default_busy_poll_us")]
    pub busy_poll_us: u32,
    /// iSNS server to register with (RFC 4171; IET's iSNSServer):
    /// `host`, `host:port` or `[v6]:port`, port 3205 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isns_server: Option<String>,
    /// IET's iSNSAccessControl: a login is allowed only when the iSNS server
    /// shows the initiator to the target (they share a discovery domain).
    /// Needs `isns_server`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isns_access_control: bool,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub limits: crate::target::limits::LimitSettings,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            portals: default_portals(),
            ebpf: EbpfConfig::default(),
            control: default_control(),
            state_dir: default_state_dir(),
            metrics: None,
            busy_poll_us: default_busy_poll_us(),
            isns_server: None,
            isns_access_control: false,
            discovery: DiscoveryConfig::default(),
            memory: MemoryConfig::default(),
            limits: crate::target::limits::LimitSettings::default(),
            targets: Vec::new(),
        }
    }
}

fn default_portals() -> Vec<PortalConfig> {
    vec![PortalConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], 3260)),
        advertise: None,
        tpgt: DEFAULT_TPGT,
        tuning: PortalTuning::default(),
    }]
}

/// Memory admission for write data (`[memory]`): what writes may hold
/// before R2Ts wait and MaxCmdSN stops advancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// MiB of write data all sessions together may hold.
    #[serde(default = "default_write_budget_mib")]
    pub write_budget_mib: u32,
    /// MiB of write data one session may hold (applies to new sessions).
    #[serde(default = "default_session_write_budget_mib")]
    pub session_write_budget_mib: u32,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            write_budget_mib: default_write_budget_mib(),
            session_write_budget_mib: default_session_write_budget_mib(),
        }
    }
}

impl MemoryConfig {
    pub fn apply(&self, registry: &crate::target::Registry) {
        registry.admission.set_limits(
            u64::from(self.write_budget_mib.max(1)) << 20,
            u64::from(self.session_write_budget_mib.max(1)) << 20,
        );
    }
}

fn default_write_budget_mib() -> u32 {
    (crate::target::DEFAULT_DAEMON_WRITE_BUDGET >> 20) as u32
}

fn default_session_write_budget_mib() -> u32 {
    (crate::target::DEFAULT_SESSION_WRITE_BUDGET >> 20) as u32
}

fn default_busy_poll_us() -> u32 {
    crate::transport::spin::DEFAULT_BUDGET_US
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/iet")
}

fn default_control() -> PathBuf {
    PathBuf::from("/run/iet/ietd.sock")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    pub listen: SocketAddr,
    /// Address announced in SendTargets instead of `listen` (NAT, 0.0.0.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<SocketAddr>,
    /// The portal group the portal belongs to (RFC 7143 §4.4.1 TargetPortalGroupTag):
    /// portals with different tags are different SCSI target ports of every target.
    #[serde(default = "default_tpgt", skip_serializing_if = "is_default_tpgt")]
    pub tpgt: u16,
    /// eBPF and TCP settings of the portal's connections (`ietadm portal set`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub tuning: PortalTuning,
}

impl PortalConfig {
    pub fn new(listen: SocketAddr) -> PortalConfig {
        PortalConfig {
            listen,
            advertise: None,
            tpgt: DEFAULT_TPGT,
            tuning: PortalTuning::default(),
        }
    }
}

/// The portal group tag of a portal that names none: every portal in one group, one
/// target port per target (what IET did).
pub const DEFAULT_TPGT: u16 = 1;

fn default_tpgt() -> u16 {
    DEFAULT_TPGT
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_default_tpgt(tpgt: &u16) -> bool {
    *tpgt == DEFAULT_TPGT
}

/// What the eBPF data plane does with a portal's connections; the
/// defaults are the data plane's (same-host redirect on, accounting off,
/// the kernel's TCP autotuning and congestion control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalTuning {
    /// Per-opcode PDU accounting by sk_msg.
    #[serde(default)]
    pub accounting: bool,
    /// Same-host redirect between the initiator's and our sockets.
    #[serde(default = "yes")]
    pub redirect: bool,
    /// SO_SNDBUF for new connections in bytes; 0: autotuning.
    #[serde(default)]
    pub sndbuf: u32,
    /// SO_RCVBUF for new connections in bytes; 0: autotuning.
    #[serde(default)]
    pub rcvbuf: u32,
    /// TCP_NOTSENT_LOWAT in bytes; 0: unset.
    #[serde(default)]
    pub notsent_lowat: u32,
    /// TCP congestion control (e.g. `bbr`); empty: the system default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub congestion: String,
}

impl Default for PortalTuning {
    fn default() -> Self {
        PortalTuning {
            accounting: false,
            redirect: true,
            sndbuf: 0,
            rcvbuf: 0,
            notsent_lowat: 0,
            congestion: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfConfig {
    #[serde(default = "default_mode")]
    pub mode: EbpfMode,
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            mode: default_mode(),
            pin_dir: default_pin_dir(),
            cgroup: None,
        }
    }
}

fn default_mode() -> EbpfMode {
    EbpfMode::Auto
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/iet")
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<ChapAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<ChapAccount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, rename = "lun")]
    pub luns: Vec<LunSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<ChapAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<ChapAccount>,
    /// Initiator names, CIDRs or `ALL` allowed (IET's initiators.allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Initiator names, CIDRs or `ALL` denied (IET's initiators.deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Negotiation limits and timers (IET's per-target keys).
    #[serde(default, skip_serializing_if = "is_default")]
    pub params: ParamsConfig,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl TargetConfig {
    pub fn new(name: &str) -> TargetConfig {
        TargetConfig {
            name: name.to_owned(),
            alias: None,
            luns: Vec::new(),
            incoming: Vec::new(),
            outgoing: None,
            allow: Vec::new(),
            deny: Vec::new(),
            params: ParamsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LunSpec {
    pub number: u64,
    /// A file or block device path, or `mem:SIZE` (e.g. `mem:256M`).
    pub path: String,
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default = "yes")]
    pub write_cache: bool,
    #[serde(default = "yes")]
    pub thin_provisioning: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// IET's ScsiId: the device identifier in VPD 83h derives from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scsi_id: Option<String>,
    /// Creates a regular file of this size when `path` does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_size: Option<u64>,
    /// I/O engine of a file or block device: `auto` (the measured best of
    /// what the kernel offers), `file` (pread/pwrite) or `uring` (io_uring).
    #[serde(default, skip_serializing_if = "is_default")]
    pub engine: Engine,
    /// O_DIRECT: bypass the page cache (io_uring engine; the store must
    /// accept O_DIRECT in `block_size` units).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
}

impl LunSpec {
    pub fn new(number: u64, path: &str) -> LunSpec {
        LunSpec {
            number,
            path: path.to_owned(),
            block_size: default_block_size(),
            read_only: false,
            write_cache: true,
            thin_provisioning: true,
            serial: None,
            scsi_id: None,
            create_size: None,
            engine: Engine::Auto,
            direct: false,
        }
    }
}

impl LunSpec {
    /// ietd's `--lun SPEC`: a store, and for files and block devices
    /// optionally `?engine=uring&direct=true&block_size=4096` (RBD specs
    /// keep their own `?` options).
    pub fn from_flag(number: u64, flag: &str) -> Result<LunSpec, String> {
        let local = !flag.starts_with("rbd:") && !flag.starts_with("mem:");
        let Some((path, query)) = flag.split_once('?').filter(|_| local) else {
            return Ok(LunSpec::new(number, flag));
        };
        let mut spec = LunSpec::new(number, path);
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--lun {flag}: {kv:?} is not key=value"))?;
            match k {
                "engine" => spec.engine = v.parse().map_err(|e| format!("--lun {flag}: {e}"))?,
                "direct" => {
                    spec.direct = v
                        .parse()
                        .map_err(|_| format!("--lun {flag}: direct={v} (true or false)"))?;
                }
                "block_size" => {
                    spec.block_size = v
                        .parse()
                        .map_err(|_| format!("--lun {flag}: block_size={v} is not a number"))?;
                }
                _ => {
                    return Err(format!(
                        "--lun {flag}: unknown option {k} (engine, direct, block_size)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

fn default_block_size() -> u32 {
    512
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{}:{line}: {reason}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn from_toml(path: &std::path::Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML file or an IET ietd.conf (detected from the content);
    /// for the latter, initiators.allow and initiators.deny beside it apply.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                path: p.to_owned(),
                source: e,
            })
        };
        let text = read(path)?;
        if !looks_like_ietd_conf(&text) {
            return Config::from_toml(path, &text);
        }
        let mut cfg = parse_ietd_conf(path, &text)?;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        for (name, allow) in [("initiators.allow", true), ("initiators.deny", false)] {
            let p = dir.join(name);
            if p.exists() {
                apply_initiators_file(&mut cfg, &p, &read(&p)?, allow)?;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.isns_access_control && self.isns_server.is_none() {
            return Err(ConfigError::Invalid(
                "isns_access_control needs isns_server".into(),
            ));
        }
        // The tag is also the relative target port identifier, and SPC-5 §7.7.6.7
        // reserves identifier 0.
        if let Some(p) = self.portals.iter().find(|p| p.tpgt == 0) {
            return Err(ConfigError::Invalid(format!(
                "portal {}: portal group tag 0 (1..=65535)",
                p.listen
            )));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            if !crate::proto::names::valid_iscsi_name(&t.name) {
                return Err(ConfigError::Invalid(format!(
                    "target {:?}: not a valid iSCSI name",
                    t.name
                )));
            }
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "target {} is defined twice",
                    t.name
                )));
            }
            let mut luns = std::collections::HashSet::new();
            for l in &t.luns {
                if !luns.insert(l.number) {
                    return Err(ConfigError::Invalid(format!(
                        "target {}: LUN {} is defined twice",
                        t.name, l.number
                    )));
                }
                if l.block_size != 512 && l.block_size != 4096 {
                    return Err(ConfigError::Invalid(format!(
                        "target {} LUN {}: block size {} (512 or 4096)",
                        t.name, l.number, l.block_size
                    )));
                }
            }
            t.params
                .to_params()
                .map_err(|e| ConfigError::Invalid(format!("target {}: {e}", t.name)))?;
            for rule in t.allow.iter().chain(&t.deny) {
                crate::target::acl::AclEntry::parse(rule)
                    .map_err(|e| ConfigError::Invalid(format!("target {}: {e}", t.name)))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/iet.toml"));
        let text = std::fs::read_to_string(path).expect("examples/iet.toml");
        let cfg = Config::from_toml(path, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.targets.len(), 2);
        assert_eq!(cfg.targets[0].luns[1].block_size, 4096);
        assert_eq!(cfg.targets[0].params.max_connections, Some(8));
        assert_eq!(cfg.metrics, Some("127.0.0.1:9117".parse().unwrap()));
        assert_eq!(cfg.busy_poll_us, 100);
        // Saving and loading again gives the same configuration.
        let again = Config::from_toml(path, &toml::to_string_pretty(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml(std::path::Path::new("x.toml"), "bogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn portal_groups_parse_default_and_refuse_zero() {
        let path = std::path::Path::new("x.toml");
        let text = "[[portal]]\nlisten = \"127.0.0.1:3260\"\n\n\
                    [[portal]]\nlisten = \"127.0.0.1:3261\"\ntpgt = 2\n";
        let cfg = Config::from_toml(path, text).expect("parses");
        let tags: Vec<u16> = cfg.portals.iter().map(|p| p.tpgt).collect();
        assert_eq!(tags, [DEFAULT_TPGT, 2]);
        let saved = toml::to_string(&cfg).expect("serializes");
        assert_eq!(
            saved.matches("tpgt").count(),
            1,
            "the default is left out: {saved}"
        );
        let e = Config::from_toml(path, "[[portal]]\nlisten = \"127.0.0.1:1\"\ntpgt = 0\n")
            .unwrap_err();
        assert!(e.to_string().contains("portal group tag 0"), "{e}");
    }

    #[test]
    fn lun_engine_settings_parse_and_round_trip() {
        let l = LunSpec::from_flag(3, "/srv/a.img?engine=uring&direct=true&block_size=4096")
            .expect("flag");
        assert_eq!(
            (l.path.as_str(), l.engine, l.direct, l.block_size),
            ("/srv/a.img", Engine::Uring, true, 4096)
        );
        assert_eq!(
            LunSpec::from_flag(0, "/srv/b.img").unwrap(),
            LunSpec::new(0, "/srv/b.img")
        );
        let rbd = "rbd:pool/img?conf=/etc/ceph/ceph.conf";
        assert_eq!(LunSpec::from_flag(0, rbd).unwrap().path, rbd);
        assert!(
            LunSpec::from_flag(0, "/a?engine=aio")
                .unwrap_err()
                .contains("unknown engine")
        );
        assert!(
            LunSpec::from_flag(0, "/a?speed=9")
                .unwrap_err()
                .contains("unknown option")
        );
        let mut cfg = Config::default();
        let mut t = TargetConfig::new("iqn.2026-12.io.iet:e");
        t.luns = vec![l, LunSpec::new(4, "/srv/c.img")];
        cfg.targets.push(t);
        let text = toml::to_string_pretty(&cfg).unwrap();
        assert_eq!(
            text.matches("engine").count(),
            1,
            "defaults are not written:\n{text}"
        );
        let back = Config::from_toml(std::path::Path::new("x.toml"), &text).unwrap();
        assert_eq!(back, cfg);
    }
}
