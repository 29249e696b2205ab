//! `ietadm reload` and SIGHUP: the configuration file applied again as a
//! diff against the live state, with a report of what needs a restart.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use tracing::info;

use super::build::target_settings;
use super::state::Daemon;
use crate::config::{Config, LunSpec, PortalTuning, TargetConfig};

/// What a reload changed, and what it could not change without a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    pub restart_needed: Vec<String>,
}

impl Daemon {
    /// Applies the configuration file again as a diff against the live
    /// state: everything that can change live does (targets, their
    /// parameters, accounts, ACLs and LUNs; portals and their tuning;
    /// busy polling; discovery accounts). The report names what was
    /// applied and the settings that only a restart changes.
    pub fn reload(&self) -> anyhow::Result<ReloadReport> {
        let path = self
            .config_path
            .as_ref()
            .context("ietd was started without --config")?;
        let new = Config::load(path)?;
        let old = self.running_config();
        let mut report = ReloadReport::default();
        let new_names: BTreeSet<_> = new.targets.iter().map(|t| t.name.clone()).collect();
        for gone in old
            .targets
            .iter()
            .map(|t| &t.name)
            .filter(|n| !new_names.contains(*n))
        {
            self.target_delete(gone, true)?;
            report.applied.push(format!("target {gone} deleted"));
        }
        for t in &new.targets {
            let without_luns = |c: &TargetConfig| TargetConfig {
                luns: Vec::new(),
                ..c.clone()
            };
            if let Some(before) = old.targets.iter().find(|o| o.name == t.name) {
                if without_luns(before) != without_luns(t) {
                    let settings = target_settings(t)?;
                    *self
                        .target(&t.name)?
                        .settings
                        .write()
                        .expect("settings lock") = settings;
                    report.applied.push(format!(
                        "target {}: settings and parameters (for new logins)",
                        t.name
                    ));
                }
            } else {
                self.target_add(t)?;
                report.applied.push(format!("target {} added", t.name));
            }
            self.reload_luns(t, &mut report)?;
        }
        self.reload_portals(&old, &new, &mut report)?;
        if new.limits != old.limits {
            self.registry.limits.set(new.limits);
            report.applied.push("limits".to_owned());
        }
        if new.memory != old.memory {
            new.memory.apply(&self.registry);
            report.applied.push(format!(
                "memory: write budget {} MiB, {} MiB per new session",
                new.memory.write_budget_mib, new.memory.session_write_budget_mib
            ));
        }
        if new.busy_poll_us != old.busy_poll_us {
            crate::transport::spin::set_budget_us(new.busy_poll_us);
            report
                .applied
                .push(format!("busy_poll_us {}", new.busy_poll_us));
        }
        if new.discovery != old.discovery {
            self.registry
                .discovery_incoming
                .write()
                .expect("lock")
                .clone_from(&new.discovery.incoming);
            self.registry
                .discovery_outgoing
                .write()
                .expect("lock")
                .clone_from(&new.discovery.outgoing);
            report.applied.push("discovery accounts".into());
        }
        let b = self.started_file.as_ref().unwrap_or(&self.base);
        for (name, differs) in [
            ("ebpf", new.ebpf != b.ebpf),
            ("control", new.control != b.control),
            ("state_dir", new.state_dir != b.state_dir),
            ("metrics", new.metrics != b.metrics),
            ("isns_server", new.isns_server != b.isns_server),
            (
                "isns_access_control",
                new.isns_access_control != b.isns_access_control,
            ),
        ] {
            if differs {
                report.restart_needed.push(name.to_owned());
            }
        }
        info!(
            path = %path.display(),
            applied = ?report.applied,
            restart_needed = ?report.restart_needed,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// A LUN whose spec changed is replaced, except that write protection
    /// switches in place and a RAM LUN's size changes by resizing.
    fn reload_luns(&self, t: &TargetConfig, report: &mut ReloadReport) -> anyhow::Result<()> {
        let live = self.target(&t.name)?;
        let have: BTreeMap<u64, LunSpec> = live.lun_specs.lock().expect("specs lock").clone();
        let want: BTreeSet<u64> = t.luns.iter().map(|l| l.number).collect();
        for gone in have.keys().filter(|n| !want.contains(n)) {
            self.lun_delete(&t.name, *gone, true)?;
            report
                .applied
                .push(format!("target {} LUN {gone} deleted", t.name));
        }
        for spec in &t.luns {
            let n = spec.number;
            let Some(cur) = have.get(&n) else {
                self.lun_new(&t.name, spec)?;
                report
                    .applied
                    .push(format!("target {} LUN {n} added", t.name));
                continue;
            };
            if cur == spec {
                continue;
            }
            let mem_size = |s: &LunSpec| {
                s.path
                    .strip_prefix("mem:")
                    .and_then(crate::backend::parse_size)
            };
            let same_but = |other: LunSpec| other == *spec;
            if same_but(LunSpec {
                read_only: spec.read_only,
                ..cur.clone()
            }) {
                self.lun_set_read_only(&t.name, n, spec.read_only)?;
            } else if let (Some(_), Some(size)) = (mem_size(cur), mem_size(spec))
                && same_but(LunSpec {
                    path: spec.path.clone(),
                    ..cur.clone()
                })
            {
                self.lun_resize(&t.name, n, size)?;
            } else {
                self.lun_delete(&t.name, n, true)?;
                self.lun_new(&t.name, spec)?;
            }
            // The file's spelling of the spec (`mem:16M`) is what is saved.
            live.lun_specs
                .lock()
                .expect("specs lock")
                .insert(n, spec.clone());
            report.applied.push(format!("target {} LUN {n}", t.name));
        }
        Ok(())
    }

    fn reload_portals(
        &self,
        old: &Config,
        new: &Config,
        report: &mut ReloadReport,
    ) -> anyhow::Result<()> {
        let new_portals: BTreeSet<_> = new.portals.iter().map(|p| p.listen).collect();
        for gone in old
            .portals
            .iter()
            .filter(|p| !new_portals.contains(&p.listen))
        {
            self.portal_remove(gone.listen)?;
            report
                .applied
                .push(format!("portal {} removed", gone.listen));
        }
        for p in &new.portals {
            let before = old.portals.iter().find(|o| o.listen == p.listen);
            if before.is_none() {
                self.portal_add(p.listen, p.advertise, p.tpgt)?;
                report.applied.push(format!("portal {} added", p.listen));
            } else if let Some(o) =
                before.filter(|o| o.advertise != p.advertise || o.tpgt != p.tpgt)
            {
                // A new portal group applies to the portal's new connections.
                let portals = self
                    .registry
                    .portals()
                    .into_iter()
                    .map(|mut x| {
                        if x.listen == p.listen {
                            x.advertise = p.advertise;
                            x.tpgt = p.tpgt;
                        }
                        x
                    })
                    .collect();
                self.registry.set_portals(portals);
                if o.advertise != p.advertise {
                    report
                        .applied
                        .push(format!("portal {} advertise", p.listen));
                }
                if o.tpgt != p.tpgt {
                    report
                        .applied
                        .push(format!("portal {} portal group {}", p.listen, p.tpgt));
                }
            }
            if before.is_none_or(|o| o.tuning != p.tuning) {
                if p.tuning != PortalTuning::default() && !self.dataplane.is_active() {
                    report.restart_needed.push(format!(
                        "portal {} tuning (the eBPF data plane is not active)",
                        p.listen
                    ));
                } else {
                    self.apply_portal_tuning(p.listen, &p.tuning)?;
                    report.applied.push(format!("portal {} tuning", p.listen));
                }
                self.portal_tuning
                    .lock()
                    .expect("tuning lock")
                    .insert(p.listen, p.tuning.clone());
            }
        }
        Ok(())
    }
}
