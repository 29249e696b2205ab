//! The running daemon as the control plane sees it, and the changes an
//! admin can make to it. Each change is validated first, then applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use tracing::info;

use super::build::{add_lun, target_settings};
use crate::config::{Config, LunSpec, ParamsConfig, PortalConfig, PortalTuning, TargetConfig};
use crate::dataplane::Dataplane;
use crate::target::acl::AclEntry;
use crate::target::session::Session;
use crate::target::{ChapAccount, Portal, Registry, Target};
use crate::transport::Server;

pub use super::reload::ReloadReport;

pub struct Daemon {
    pub registry: Arc<Registry>,
    pub server: Arc<Server>,
    pub dataplane: Arc<Dataplane>,
    /// The file given with --config, for `reload`.
    pub config_path: Option<PathBuf>,
    /// Settings that are not live state (eBPF, control socket).
    pub base: Config,
    /// The file as it was at start (before command-line flags), to tell
    /// which restart-only settings a reload finds changed.
    pub started_file: Option<Config>,
    /// Each portal's eBPF and TCP settings as last set (`portal set`).
    pub portal_tuning: Mutex<BTreeMap<SocketAddr, PortalTuning>>,
}

impl Daemon {
    pub fn target(&self, name: &str) -> anyhow::Result<Arc<Target>> {
        self.registry
            .target(name)
            .with_context(|| format!("no target {name}"))
    }

    pub fn sessions_of(&self, target: &Target) -> Vec<Arc<Session>> {
        self.registry
            .sessions()
            .into_iter()
            .filter(|s| s.target().is_some_and(|t| t.name == target.name))
            .collect()
    }

    pub fn target_new(&self, name: &str, alias: Option<String>) -> anyhow::Result<()> {
        let mut cfg = TargetConfig::new(name);
        cfg.alias = alias;
        self.target_add(&cfg)
    }

    /// Adds a target with its settings and parameters (not its LUNs).
    pub fn target_add(&self, cfg: &TargetConfig) -> anyhow::Result<()> {
        let mut probe = self.base.clone();
        probe.targets = vec![TargetConfig {
            luns: Vec::new(),
            ..cfg.clone()
        }];
        probe.validate()?;
        let name = &cfg.name;
        self.registry
            .add_target(Target::new(name, target_settings(cfg)?))
            .with_context(|| format!("target {name} exists"))?;
        info!(target = %name, "target added");
        Ok(())
    }

    /// Changes negotiation parameters (ietd.conf names, e.g.
    /// `MaxBurstLength=65536`); logins from now on negotiate with them.
    pub fn target_set_params(&self, name: &str, pairs: &[(String, String)]) -> anyhow::Result<()> {
        let t = self.target(name)?;
        let mut cfg = ParamsConfig::from_params(&t.settings().params);
        for (key, value) in pairs {
            match cfg.set_ietd(key, value) {
                Some(r) => r.map_err(|e| anyhow::anyhow!(e))?,
                None => bail!("{key} is not a target parameter"),
            }
        }
        let params = cfg
            .to_params()
            .map_err(|e| anyhow::anyhow!("target {name}: {e}"))?;
        t.settings.write().expect("settings lock").params = params;
        info!(target = name, "parameters changed");
        Ok(())
    }

    pub fn target_delete(&self, name: &str, force: bool) -> anyhow::Result<()> {
        let target = self.target(name)?;
        let sessions = self.sessions_of(&target);
        if !sessions.is_empty() && !force {
            bail!(
                "target {name} has {} active session(s); use --force",
                sessions.len()
            );
        }
        self.registry.remove_target(name);
        for s in sessions {
            request_logout(&s);
        }
        info!(target = name, "target deleted");
        Ok(())
    }

    pub fn lun_new(&self, target: &str, spec: &LunSpec) -> anyhow::Result<()> {
        let t = self.target(target)?;
        if t.lun_specs
            .lock()
            .expect("specs lock")
            .contains_key(&spec.number)
        {
            bail!("target {target} already has LUN {}", spec.number);
        }
        add_lun(&t, spec, &self.base.state_dir)?;
        info!(target, lun = spec.number, path = %spec.path, "LUN added");
        Ok(())
    }

    pub fn next_lun(&self, target: &str) -> anyhow::Result<u64> {
        let t = self.target(target)?;
        let specs = t.lun_specs.lock().expect("specs lock");
        Ok((0..=specs.len() as u64)
            .find(|n| !specs.contains_key(n))
            .unwrap_or(0))
    }

    pub fn lun_delete(&self, target: &str, lun: u64, force: bool) -> anyhow::Result<()> {
        let t = self.target(target)?;
        if !t.lun_specs.lock().expect("specs lock").contains_key(&lun) {
            bail!("target {target} has no LUN {lun}");
        }
        let sessions = self.sessions_of(&t);
        if !sessions.is_empty() && !force {
            bail!(
                "target {target} has {} active session(s); use --force",
                sessions.len()
            );
        }
        t.luns.remove_lun(lun).map_err(|e| anyhow::anyhow!("{e}"))?;
        t.lun_specs.lock().expect("specs lock").remove(&lun);
        info!(target, lun, "LUN deleted");
        Ok(())
    }

    pub fn lun_resize(&self, target: &str, lun: u64, size: u64) -> anyhow::Result<()> {
        let t = self.target(target)?;
        t.luns
            .resize_lun(lun, size)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // A RAM store's size is its spec: save the new one.
        if let Some(spec) = t.lun_specs.lock().expect("specs lock").get_mut(&lun)
            && spec.path.starts_with("mem:")
        {
            spec.path = format!("mem:{size}");
        }
        info!(target, lun, size, "LUN resized");
        Ok(())
    }

    pub fn lun_set_read_only(&self, target: &str, lun: u64, read_only: bool) -> anyhow::Result<()> {
        let t = self.target(target)?;
        let spec = t
            .lun_specs
            .lock()
            .expect("specs lock")
            .get(&lun)
            .cloned()
            .with_context(|| format!("target {target} has no LUN {lun}"))?;
        if spec.read_only && !read_only && !spec.path.starts_with("mem:") {
            // Its store was opened read-only: open it again read-write
            // (initiators see REPORTED LUNS DATA HAS CHANGED).
            let spec = LunSpec { read_only, ..spec };
            let cfg = super::build::lun_config(&t.name, &spec, &self.base.state_dir)?;
            t.luns.remove_lun(lun).map_err(|e| anyhow::anyhow!("{e}"))?;
            t.luns
                .add_lun(lun, cfg)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            t.lun_specs.lock().expect("specs lock").insert(lun, spec);
            info!(target, lun, "LUN reopened read-write");
            return Ok(());
        }
        t.luns
            .set_read_only(lun, read_only)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(spec) = t.lun_specs.lock().expect("specs lock").get_mut(&lun) {
            spec.read_only = read_only;
        }
        Ok(())
    }

    pub fn portal_add(
        &self,
        listen: std::net::SocketAddr,
        advertise: Option<std::net::SocketAddr>,
        tpgt: u16,
    ) -> anyhow::Result<()> {
        let bound = self
            .server
            .add_portal(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let mut portals = self.registry.portals();
        portals.push(Portal {
            listen: bound,
            advertise,
            tpgt,
        });
        self.registry.set_portals(portals);
        self.sync_dataplane_portals()?;
        self.portal_tuning
            .lock()
            .expect("tuning lock")
            .insert(bound, PortalTuning::default());
        info!(portal = %bound, "portal added");
        Ok(())
    }

    pub fn portal_remove(&self, listen: std::net::SocketAddr) -> anyhow::Result<()> {
        if !self.server.remove_portal(listen) {
            bail!("no portal {listen}");
        }
        let portals = self
            .registry
            .portals()
            .into_iter()
            .filter(|p| p.listen != listen)
            .collect();
        self.registry.set_portals(portals);
        self.sync_dataplane_portals()?;
        self.portal_tuning
            .lock()
            .expect("tuning lock")
            .remove(&listen);
        info!(portal = %listen, "portal removed");
        Ok(())
    }

    /// `ietadm portal set`: the eBPF switches and TCP settings of one
    /// portal's new connections, applied by the data plane and kept for
    /// `save`.
    pub fn portal_set(&self, listen: SocketAddr, tuning: &PortalTuning) -> anyhow::Result<()> {
        if !self.registry.portals().iter().any(|p| p.listen == listen) {
            bail!("no portal {listen}");
        }
        if !self.dataplane.is_active() {
            bail!("the eBPF data plane is not active");
        }
        self.apply_portal_tuning(listen, tuning)?;
        self.portal_tuning
            .lock()
            .expect("tuning lock")
            .insert(listen, tuning.clone());
        Ok(())
    }

    /// Hands one portal's tuning to the data plane (nothing without eBPF).
    pub fn apply_portal_tuning(&self, listen: SocketAddr, t: &PortalTuning) -> anyhow::Result<()> {
        if !self.dataplane.is_active() {
            return Ok(());
        }
        self.dataplane
            .set_portal_flags(listen, t.accounting, t.redirect)?;
        self.dataplane
            .set_portal_tcp(listen, t.sndbuf, t.rcvbuf, t.notsent_lowat, &t.congestion)
    }

    pub fn portal_tuning_of(&self, listen: SocketAddr) -> PortalTuning {
        self.portal_tuning
            .lock()
            .expect("tuning lock")
            .get(&listen)
            .cloned()
            .unwrap_or_default()
    }

    fn sync_dataplane_portals(&self) -> anyhow::Result<()> {
        let addrs: Vec<_> = self.registry.portals().iter().map(|p| p.listen).collect();
        self.dataplane.set_portals(&addrs)
    }

    pub fn session_delete(&self, tsih: u16) -> anyhow::Result<()> {
        let s = self
            .registry
            .session(tsih)
            .with_context(|| format!("no session {tsih}"))?;
        request_logout(&s);
        Ok(())
    }

    pub fn connection_delete(&self, tsih: u16, cid: u16) -> anyhow::Result<()> {
        let s = self
            .registry
            .session(tsih)
            .with_context(|| format!("no session {tsih}"))?;
        let conn = s
            .connections
            .lock()
            .expect("conn lock")
            .get(&cid)
            .cloned()
            .with_context(|| format!("session {tsih} has no connection {cid}"))?;
        conn.logout_request.notify_one();
        Ok(())
    }

    /// The write budgets in force.
    pub fn memory(&self) -> crate::config::MemoryConfig {
        let a = &self.registry.admission;
        crate::config::MemoryConfig {
            write_budget_mib: (a.daemon.limit() >> 20) as u32,
            session_write_budget_mib: (a.session_limit.load(std::sync::atomic::Ordering::Relaxed)
                >> 20) as u32,
        }
    }

    /// The running configuration, as `ietadm save` writes it.
    pub fn running_config(&self) -> Config {
        let mut cfg = self.base.clone();
        cfg.busy_poll_us = crate::transport::spin::budget_us();
        cfg.memory = self.memory();
        cfg.limits = self.registry.limits.settings();
        cfg.portals = self
            .registry
            .portals()
            .into_iter()
            .map(|p| PortalConfig {
                listen: p.listen,
                advertise: p.advertise,
                tpgt: p.tpgt,
                tuning: self.portal_tuning_of(p.listen),
            })
            .collect();
        cfg.discovery
            .incoming
            .clone_from(&self.registry.discovery_incoming.read().expect("lock"));
        cfg.discovery
            .outgoing
            .clone_from(&self.registry.discovery_outgoing.read().expect("lock"));
        cfg.targets = self
            .registry
            .targets()
            .iter()
            .map(|t| {
                let st = t.settings();
                TargetConfig {
                    name: t.name.clone(),
                    alias: st.alias.clone(),
                    luns: t
                        .lun_specs
                        .lock()
                        .expect("specs lock")
                        .values()
                        .cloned()
                        .collect(),
                    incoming: st.incoming.clone(),
                    outgoing: st.outgoing.clone(),
                    allow: st.acl.allow.iter().map(AclEntry::to_string).collect(),
                    deny: st.acl.deny.iter().map(AclEntry::to_string).collect(),
                    params: ParamsConfig::from_params(&st.params),
                }
            })
            .collect();
        cfg
    }

    /// Writes the running configuration atomically: temp file, fsync, rename.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(&self.running_config())
            .context("serialising the configuration")?;
        write_atomically(path, text.as_bytes())?;
        info!(path = %path.display(), "configuration saved");
        Ok(())
    }

    pub fn account_change(
        &self,
        scope: &crate::control::protocol::AccountScope,
        direction: crate::control::protocol::Direction,
        user: &str,
        secret: Option<&str>,
    ) -> anyhow::Result<()> {
        use crate::control::protocol::{AccountScope, Direction};
        let account = secret.map(|s| ChapAccount {
            user: user.to_owned(),
            secret: s.to_owned(),
        });
        let apply = |incoming: &mut Vec<ChapAccount>,
                     outgoing: &mut Option<ChapAccount>|
         -> anyhow::Result<()> {
            match (direction, account.clone()) {
                (Direction::Incoming, Some(a)) => {
                    incoming.retain(|x| x.user != a.user);
                    incoming.push(a);
                }
                (Direction::Incoming, None) => {
                    let before = incoming.len();
                    incoming.retain(|x| x.user != user);
                    if before == incoming.len() {
                        bail!("no incoming account {user}");
                    }
                }
                (Direction::Outgoing, a @ Some(_)) => *outgoing = a,
                (Direction::Outgoing, None) => {
                    if outgoing.as_ref().is_none_or(|o| o.user != user) {
                        bail!("no outgoing account {user}");
                    }
                    *outgoing = None;
                }
            }
            Ok(())
        };
        match scope {
            AccountScope::Discovery => {
                let mut inc = self.registry.discovery_incoming.write().expect("lock");
                let mut out = self.registry.discovery_outgoing.write().expect("lock");
                apply(&mut inc, &mut out)
            }
            AccountScope::Target(name) => {
                let t = self.target(name)?;
                let mut st = t.settings.write().expect("settings lock");
                let st = &mut *st;
                apply(&mut st.incoming, &mut st.outgoing)
            }
        }
    }

    pub fn acl_set(&self, target: &str, allow: &[String], deny: &[String]) -> anyhow::Result<()> {
        let parse = |rules: &[String]| -> anyhow::Result<Vec<AclEntry>> {
            rules
                .iter()
                .map(|r| AclEntry::parse(r).map_err(|e| anyhow::anyhow!(e)))
                .collect()
        };
        let (allow, deny) = (parse(allow)?, parse(deny)?);
        let t = self.target(target)?;
        let mut st = t.settings.write().expect("settings lock");
        st.acl.allow = allow;
        st.acl.deny = deny;
        Ok(())
    }
}

/// Asks every connection of the session to log out (Async Message), then
/// the connections close themselves; a session with none ends at once.
pub fn request_logout(session: &Arc<Session>) {
    let conns: Vec<_> = session
        .connections
        .lock()
        .expect("conn lock")
        .values()
        .cloned()
        .collect();
    if conns.is_empty() {
        session.close();
    }
    for c in conns {
        c.logout_request.notify_one();
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
