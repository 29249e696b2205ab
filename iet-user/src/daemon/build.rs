//! Turning configuration into live targets and logical units.

use std::path::Path;

use anyhow::Context;

use std::sync::Arc;

use crate::backend::{FilePrStore, OpenOptions, open_backend_with};
use crate::config::{Config, LunSpec, TargetConfig};
use crate::scsi::{LunConfig, PrStore};
use crate::target::acl::AclEntry;
use crate::target::{Acl, Registry, Target, TargetSettings};

pub fn build_registry(config: &Config) -> anyhow::Result<Registry> {
    config.validate()?;
    let registry = Registry::new();
    registry
        .discovery_incoming
        .write()
        .expect("lock")
        .clone_from(&config.discovery.incoming);
    registry
        .discovery_outgoing
        .write()
        .expect("lock")
        .clone_from(&config.discovery.outgoing);
    for t in &config.targets {
        let target = registry
            .add_target(Target::new(&t.name, target_settings(t)?))
            .ok_or_else(|| anyhow::anyhow!("target {} is defined twice", t.name))?;
        for lun in &t.luns {
            add_lun(&target, lun, &config.state_dir)?;
        }
    }
    Ok(registry)
}

/// Opens and attaches one LUN, remembering its spec.
pub fn add_lun(target: &Target, spec: &LunSpec, state_dir: &Path) -> anyhow::Result<()> {
    let cfg = lun_config(&target.name, spec, state_dir)?;
    target
        .luns
        .add_lun(spec.number, cfg)
        .map_err(|e| anyhow::anyhow!("target {} LUN {}: {e}", target.name, spec.number))?;
    target
        .lun_specs
        .lock()
        .expect("specs lock")
        .insert(spec.number, spec.clone());
    Ok(())
}

pub fn target_settings(t: &TargetConfig) -> anyhow::Result<TargetSettings> {
    let parse = |rules: &[String]| -> anyhow::Result<Vec<AclEntry>> {
        rules
            .iter()
            .map(|r| AclEntry::parse(r).map_err(|e| anyhow::anyhow!("target {}: {e}", t.name)))
            .collect()
    };
    Ok(TargetSettings {
        alias: t.alias.clone(),
        incoming: t.incoming.clone(),
        outgoing: t.outgoing.clone(),
        acl: Acl {
            allow: parse(&t.allow)?,
            deny: parse(&t.deny)?,
        },
        params: t
            .params
            .to_params()
            .map_err(|e| anyhow::anyhow!("target {}: {e}", t.name))?,
    })
}

/// Opens a LUN's backing store (creating a sparse file when asked) and
/// derives its stable identifiers from the target name and LUN number.
/// `state_dir` keeps APTPL reservations of file and block-device LUNs
/// (RAM LUNs forget everything on restart anyway).
pub fn lun_config(target: &str, spec: &LunSpec, state_dir: &Path) -> anyhow::Result<LunConfig> {
    if let Some(size) = spec.create_size {
        let path = Path::new(&spec.path);
        // Only local files are created; RBD images are opened, never made.
        let local = !spec.path.starts_with("mem:") && !spec.path.starts_with("rbd:");
        if local && !path.exists() {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.set_len(size)
                .with_context(|| format!("sizing {}", path.display()))?;
        }
    }
    // A write-protected LUN opens its store read-only, so a file without
    // write permission (or on a read-only mount) can be served.
    let opts = OpenOptions {
        read_only: spec.read_only,
        create_size: None,
        engine: spec.engine,
        direct: spec.direct,
        block_size: spec.block_size,
    };
    let backend = open_backend_with(&spec.path, &opts)
        .with_context(|| format!("LUN {}: {}", spec.number, spec.path))?;
    let id = match &spec.scsi_id {
        Some(scsi_id) => fnv1a64(scsi_id.as_bytes()),
        None => fnv1a64(format!("{target}\0{}", spec.number).as_bytes()),
    };
    Ok(LunConfig {
        backend,
        block_size: spec.block_size,
        read_only: spec.read_only,
        write_cache: spec.write_cache,
        thin_provisioning: spec.thin_provisioning,
        vendor: "IET".to_owned(),
        product: "VIRTUAL-DISK".to_owned(),
        serial: spec.serial.clone().unwrap_or_else(|| format!("{id:016x}")),
        device_id: id,
        pr_store: (!spec.path.starts_with("mem:") && std::fs::create_dir_all(state_dir).is_ok())
            .then(|| {
                Arc::new(FilePrStore::new(state_dir.join(format!("pr-{id:016x}"))))
                    as Arc<dyn PrStore>
            }),
    })
}

/// FNV-1a: a hash that stays the same across builds and restarts.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
