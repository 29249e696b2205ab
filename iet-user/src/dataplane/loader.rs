//! Loading the object, attaching sock_ops to the cgroup and sk_msg to the
//! sockhash, and pinning the maps. A restart reuses nothing it would have
//! to detach: links are held by this process and vanish with it; the
//! global counters are carried over from the previous pins.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use iet_common::{
    ConnKey, ConnRecord, Counters, DIGEST_DATA, DIGEST_HEADER, MAP_CONNECTIONS, MAP_COUNTERS,
    MAP_EVENTS, MAP_PORTALS, MAP_SOCKETS, PINNED_MAPS, PROG_SK_MSG, PROG_SOCK_OPS, PortalConfig,
    PortalKey,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, info};

use super::DataplaneConfig;
use super::cgroup::{self, CgroupError, Surroundings};
use super::events::{ConnectionEvent, spawn_reader};

pub struct Loaded {
    /// Owns the programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
    _sockets: SockHash<MapData, ConnKey>,
    portals: Mutex<HashMap<MapData, PortalKey, PortalConfig>>,
    connections: Mutex<HashMap<MapData, ConnKey, ConnRecord>>,
    counters: PerCpuArray<MapData, Counters>,
    events: Option<UnboundedReceiver<ConnectionEvent>>,
    cgroup: PathBuf,
}

/// Where ietd mounts cgroup2 itself in a container that shows none.
const OWN_CGROUP2_MOUNT: &str = "/run/cgroup2";

fn surroundings() -> anyhow::Result<Surroundings> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let membership =
        std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    Ok(Surroundings {
        in_container: cgroup::in_container(),
        own: cgroup::own_cgroup(&membership).map(str::to_owned),
        mounts: cgroup::cgroup2_mounts(&mountinfo),
    })
}

/// The cgroup sock_ops attaches to without `--cgroup`: the hierarchy's root
/// on a host, the container's own cgroup inside one (mounting cgroup2 at
/// /run/cgroup2 when none shows it and ietd may mount).
pub fn default_cgroup() -> anyhow::Result<PathBuf> {
    let s = surroundings()?;
    match cgroup::choose(&s, cgroup::is_hierarchy_root) {
        Err(e @ (CgroupError::NoHierarchy | CgroupError::NotVisible { .. })) if s.in_container => {
            mount_cgroup2(Path::new(OWN_CGROUP2_MOUNT))
                .map_err(|m| m.context(format!("{e}, and ietd cannot mount one itself")))?;
            let dir = cgroup::choose(&surroundings()?, cgroup::is_hierarchy_root)?;
            info!(mount = OWN_CGROUP2_MOUNT, "mounted the cgroup2 hierarchy");
            Ok(dir)
        }
        r => Ok(r?),
    }
}

fn mount_cgroup2(at: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
    let fstype = std::ffi::CString::new("cgroup2").expect("static");
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .context("mount point with NUL")?;
    // SAFETY: valid NUL-terminated strings; no data pointer.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        std::fs::remove_dir(at).ok();
        return Err(err).context(format!("mount -t cgroup2 {}", at.display()));
    }
    Ok(())
}

/// The programs' aya-log records go to the daemon's log (through the
/// `log` facade, which the tracing subscriber picks up).
fn forward_program_logs(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            debug!("eBPF program logs not forwarded: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer fd, which stays open and the
    // same for as long as the AsyncFd owns the logger.
    let Ok(mut fd) = (unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                break;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

fn ensure_bpffs(pin_dir: &Path) -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let bpffs = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next(), f.next(), f.next());
        fstype == Some("bpf") && point.is_some_and(|p| pin_dir.starts_with(p))
    });
    if !bpffs && pin_dir.starts_with("/sys/fs/bpf") {
        std::fs::create_dir_all("/sys/fs/bpf").ok();
        let src = std::ffi::CString::new("bpf").expect("static");
        let target = std::ffi::CString::new("/sys/fs/bpf").expect("static");
        // SAFETY: valid NUL-terminated strings; no data pointer.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("mounting bpffs at /sys/fs/bpf");
        }
        info!("mounted bpffs at /sys/fs/bpf");
    }
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))
}

/// Counters of a previous run, from its pinned map.
fn previous_counters(path: &Path) -> Option<PerCpuValues<Counters>> {
    let data = MapData::from_pin(path).ok()?;
    let map: PerCpuArray<MapData, Counters> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).ok()?;
    map.get(&0, 0).ok()
}

fn take<T>(ebpf: &mut Ebpf, name: &str, pin_dir: &Path) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the object"))?;
    if PINNED_MAPS.contains(&name) {
        let path = pin_dir.join(name);
        let _ = std::fs::remove_file(&path);
        map.pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
    }
    T::try_from(map).with_context(|| format!("map {name}"))
}

impl Loaded {
    pub fn load(cfg: &DataplaneConfig, object: &[u8]) -> anyhow::Result<Loaded> {
        if object.is_empty() {
            bail!(
                "this ietd was built without the eBPF toolchain (Debian rustc-web and bpf-linker)"
            );
        }
        let cgroup = match &cfg.cgroup {
            Some(c) => c.clone(),
            None => default_cgroup()?,
        };
        let mut ebpf = EbpfLoader::new()
            .load(object)
            .context("loading the eBPF object")?;
        let sock_ops: &mut SockOps = ebpf
            .program_mut(PROG_SOCK_OPS)
            .context("sock_ops program missing")?
            .try_into()?;
        sock_ops.load().context("verifier rejected sock_ops")?;
        let sk_msg: &mut SkMsg = ebpf
            .program_mut(PROG_SK_MSG)
            .context("sk_msg program missing")?
            .try_into()?;
        sk_msg.load().context("verifier rejected sk_msg")?;
        forward_program_logs(&mut ebpf);

        ensure_bpffs(&cfg.pin_dir)?;
        let old_counters = previous_counters(&cfg.pin_dir.join(MAP_COUNTERS));
        let sockets: SockHash<MapData, ConnKey> = take(&mut ebpf, MAP_SOCKETS, &cfg.pin_dir)?;
        let portals: HashMap<MapData, PortalKey, PortalConfig> =
            take(&mut ebpf, MAP_PORTALS, &cfg.pin_dir)?;
        let connections: HashMap<MapData, ConnKey, ConnRecord> =
            take(&mut ebpf, MAP_CONNECTIONS, &cfg.pin_dir)?;
        let mut counters: PerCpuArray<MapData, Counters> =
            take(&mut ebpf, MAP_COUNTERS, &cfg.pin_dir)?;
        let ring: RingBuf<MapData> = take(&mut ebpf, MAP_EVENTS, &cfg.pin_dir)?;
        if let Some(old) = old_counters {
            counters
                .set(0, old, 0)
                .context("restoring the global counters")?;
            debug!("global counters carried over from the previous run");
        }

        let sk_msg: &mut SkMsg = ebpf
            .program_mut(PROG_SK_MSG)
            .context("sk_msg program missing")?
            .try_into()?;
        sk_msg
            .attach(sockets.fd())
            .context("attaching sk_msg to the sockhash")?;
        let cg =
            File::open(&cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        let sock_ops: &mut SockOps = ebpf
            .program_mut(PROG_SOCK_OPS)
            .context("sock_ops program missing")?
            .try_into()?;
        sock_ops
            .attach(cg, CgroupAttachMode::Single)
            .with_context(|| format!("attaching sock_ops to {}", cgroup.display()))?;
        let events = spawn_reader(ring)?;
        info!(cgroup = %cgroup.display(), pin_dir = %cfg.pin_dir.display(), "eBPF programs attached");
        Ok(Loaded {
            _ebpf: ebpf,
            _sockets: sockets,
            portals: Mutex::new(portals),
            connections: Mutex::new(connections),
            counters,
            events: Some(events),
            cgroup,
        })
    }

    pub fn write_portals(&self, portals: &[(PortalKey, PortalConfig)]) -> anyhow::Result<()> {
        let mut map = self.portals.lock().expect("portals lock");
        let stale: Vec<PortalKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !portals.iter().any(|(p, _)| p == k))
            .collect();
        for k in stale {
            map.remove(&k)?;
        }
        for (k, v) in portals {
            map.insert(k, v, 0)?;
        }
        Ok(())
    }

    pub fn set_digests(&self, key: ConnKey, header: bool, data: bool) {
        let mut map = self.connections.lock().expect("connections lock");
        let Ok(mut rec) = map.get(&key, 0) else {
            return;
        };
        rec.digests = (u32::from(header) * DIGEST_HEADER) | (u32::from(data) * DIGEST_DATA);
        // BPF_EXIST (2): never re-create a record sock_ops already removed.
        map.insert(key, rec, 2).ok();
    }

    pub fn connection(&self, key: ConnKey) -> Option<ConnRecord> {
        self.connections
            .lock()
            .expect("connections lock")
            .get(&key, 0)
            .ok()
    }

    pub fn counters(&self) -> Option<Counters> {
        let per_cpu = self.counters.get(&0, 0).ok()?;
        Some(per_cpu.iter().fold(Counters::default(), |mut acc, c| {
            acc.accepted += c.accepted;
            acc.initiator_connections += c.initiator_connections;
            acc.closed += c.closed;
            acc.retransmits += c.retransmits;
            acc.rto_events += c.rto_events;
            acc.pdus_accounted += c.pdus_accounted;
            acc.redirected_msgs += c.redirected_msgs;
            acc.events_dropped += c.events_dropped;
            acc.table_full += c.table_full;
            acc
        }))
    }

    pub fn take_events(&mut self) -> Option<UnboundedReceiver<ConnectionEvent>> {
        self.events.take()
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        info!(cgroup = %self.cgroup.display(), "eBPF programs detached");
    }
}
