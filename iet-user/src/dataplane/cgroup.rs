//! Which cgroup v2 directory sock_ops attaches to, and where a container's
//! maps are pinned: pure parsers of /proc/self/cgroup and mountinfo, and
//! the decision that never attaches to the host's root from a container.
//!
//! Docker and Podman put a container into the unified hierarchy as well
//! (`0::/docker/<id>`) but do not mount cgroup2 inside it; the hierarchy
//! comes from a bind mount (`-v /sys/fs/cgroup/unified:...`) or from ietd
//! mounting cgroup2 itself when it may (CAP_SYS_ADMIN).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A cgroup2 mount: the cgroup path it shows (mountinfo's "root") and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub root: String,
    pub mount_point: PathBuf,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted")]
    NoHierarchy,
    #[error("/proc/self/cgroup has no cgroup v2 line (0::PATH)")]
    NoV2Membership,
    #[error(
        "this container's cgroup {own} is not under any cgroup2 mount; \
         bind-mount the host's hierarchy (-v /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:ro), \
         add CAP_SYS_ADMIN so ietd mounts it, or give --cgroup"
    )]
    NotVisible { own: String },
    #[error(
        "refusing to attach sock_ops to {}: it is the root of the host's cgroup hierarchy \
         and ietd runs in a container (it would see every socket on the host); \
         give --cgroup explicitly if that is meant",
        .0.display()
    )]
    HostRoot(PathBuf),
}

/// The process's cgroup v2 path from /proc/self/cgroup (`0::/docker/id`).
pub fn own_cgroup(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

/// Every cgroup2 mount in /proc/self/mountinfo, in order.
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<Cgroup2Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount_point options... - fstype source super
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let mount_point = f.next()?;
            Some(Cgroup2Mount {
                root: unescape(root),
                mount_point: PathBuf::from(unescape(mount_point)),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(b) = code {
            out.push(char::from(b));
            rest = &rest[i + 4..];
        } else {
            out.push('\\');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The directory of cgroup `own` under the first mount that shows it.
pub fn resolve(own: &str, mounts: &[Cgroup2Mount]) -> Option<PathBuf> {
    mounts.iter().find_map(|m| {
        let rel = if m.root == "/" {
            own.strip_prefix('/')?
        } else {
            let rest = own.strip_prefix(m.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest.trim_start_matches('/')
        };
        Some(if rel.is_empty() {
            m.mount_point.clone()
        } else {
            m.mount_point.join(rel)
        })
    })
}

/// What the decision needs to know about the process's surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surroundings {
    pub in_container: bool,
    /// `0::PATH` of /proc/self/cgroup.
    pub own: Option<String>,
    pub mounts: Vec<Cgroup2Mount>,
}

/// The cgroup sock_ops attaches to when `--cgroup` was not given: outside a
/// container the root of the hierarchy (every initiator socket on the
/// host, as before); inside one its own cgroup only. `is_hierarchy_root`
/// tells whether a directory is the real root (cgroup.type is absent there).
pub fn choose(
    s: &Surroundings,
    is_hierarchy_root: impl Fn(&Path) -> bool,
) -> Result<PathBuf, CgroupError> {
    if !s.in_container {
        // A root of "/.." is a mount showing more than our cgroup
        // namespace: never take it by default.
        return s
            .mounts
            .iter()
            .find(|m| !m.root.starts_with("/.."))
            .map(|m| m.mount_point.clone())
            .ok_or(CgroupError::NoHierarchy);
    }
    let own = s.own.as_deref().ok_or(CgroupError::NoV2Membership)?;
    let dir = resolve(own, &s.mounts).ok_or_else(|| {
        if s.mounts.is_empty() {
            CgroupError::NoHierarchy
        } else {
            CgroupError::NotVisible {
                own: own.to_owned(),
            }
        }
    })?;
    if is_hierarchy_root(&dir) {
        return Err(CgroupError::HostRoot(dir));
    }
    Ok(dir)
}

/// Docker leaves /.dockerenv, Podman /run/.containerenv and `container=`;
/// a VM made from a container image keeps the marker but runs in the
/// initial PID namespace, the only one that shows kernel threads.
pub fn looks_like_container(marker: bool, kernel_threads_visible: bool) -> bool {
    marker && !kernel_threads_visible
}

/// Whether this process runs in a container (see [`looks_like_container`]).
pub fn in_container() -> bool {
    let marker = Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("container").is_some();
    // PID 2 is kthreadd in the initial PID namespace only.
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    looks_like_container(marker, kthreadd)
}

/// The kernel gives every cgroup but the root a cgroup.type file.
pub fn is_hierarchy_root(dir: &Path) -> bool {
    dir.join("cgroup.procs").exists() && !dir.join("cgroup.type").exists()
}

/// An instance's pin directory under `base`; the name must be one path
/// component of letters, digits, `-`, `_` or `.`.
pub fn instance_pin_dir(base: &Path, instance: &str) -> anyhow::Result<PathBuf> {
    let ok = !instance.is_empty()
        && instance.len() <= 64
        && !instance.starts_with('.')
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        anyhow::bail!(
            "instance name {instance:?}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        );
    }
    Ok(base.join(instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CGROUP: &str = "12:pids:/docker/abc\n1:cpu:/docker/abc\n0::/docker/abc\n";
    const BIND_MOUNTED: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn docker(mountinfo: &str) -> Surroundings {
        Surroundings {
            in_container: true,
            own: own_cgroup(DOCKER_CGROUP).map(str::to_owned),
            mounts: cgroup2_mounts(mountinfo),
        }
    }

    #[test]
    fn reads_v2_membership() {
        assert_eq!(own_cgroup(DOCKER_CGROUP), Some("/docker/abc"));
        assert_eq!(own_cgroup("0::/\n"), Some("/"));
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn reads_cgroup2_mounts_with_escapes() {
        let text = "41 31 0:38 /docker/abc /sys/fs/cgroup\\040v2 rw - cgroup2 cgroup2 rw\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mounts(text),
            [Cgroup2Mount {
                root: "/docker/abc".into(),
                mount_point: "/sys/fs/cgroup v2".into()
            }]
        );
    }

    #[test]
    fn container_attaches_to_its_own_cgroup() {
        let dir = choose(&docker(BIND_MOUNTED), |_| false).unwrap();
        assert_eq!(dir, Path::new("/sys/fs/cgroup/unified/docker/abc"));
    }

    #[test]
    fn namespaced_mount_shows_the_container_as_root() {
        // cgroupns=private: the mount's root is the container's cgroup.
        let text = "50 40 0:38 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let dir = choose(&docker(text), |_| false).unwrap();
        assert_eq!(dir, Path::new("/sys/fs/cgroup"));
        let m = cgroup2_mounts("50 40 0:38 /docker/abcd /x rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            resolve("/docker/abc", &m),
            None,
            "prefix of a name is no parent"
        );
    }

    #[test]
    fn never_the_host_root_from_a_container() {
        let mut s = docker(BIND_MOUNTED);
        s.own = Some("/".into());
        let err = choose(&s, |d| d == Path::new("/sys/fs/cgroup/unified")).unwrap_err();
        assert_eq!(err, CgroupError::HostRoot("/sys/fs/cgroup/unified".into()));
        assert!(err.to_string().contains("--cgroup"));
    }

    #[test]
    fn container_without_a_visible_hierarchy_says_what_to_mount() {
        let v1_only = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            choose(&docker(v1_only), |_| false),
            Err(CgroupError::NoHierarchy)
        );
        let other = "41 31 0:38 /elsewhere /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let err = choose(&docker(other), |_| false).unwrap_err();
        assert!(matches!(err, CgroupError::NotVisible { .. }));
        assert!(err.to_string().contains("bind-mount"));
    }

    #[test]
    fn host_keeps_the_hierarchy_root() {
        let s = Surroundings {
            in_container: false,
            own: Some("/user.slice".into()),
            mounts: cgroup2_mounts(BIND_MOUNTED),
        };
        assert_eq!(
            choose(&s, |_| true).unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn a_vm_from_a_container_image_is_no_container() {
        assert!(looks_like_container(true, false));
        assert!(!looks_like_container(true, true), "kthreadd visible: a VM");
        assert!(!looks_like_container(false, false));
    }

    #[test]
    fn host_never_takes_a_mount_from_outside_its_namespace() {
        // cgroupns=private with the host's hierarchy bind-mounted: its
        // root shows as /../.. and our own cgroup is "/".
        let text = "41 31 0:38 /../.. /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n";
        let s = Surroundings {
            in_container: false,
            own: Some("/".into()),
            mounts: cgroup2_mounts(text),
        };
        assert_eq!(choose(&s, |_| true), Err(CgroupError::NoHierarchy));
        let s = Surroundings {
            in_container: true,
            ..s
        };
        assert!(matches!(
            choose(&s, |_| false),
            Err(CgroupError::NotVisible { .. })
        ));
    }

    #[test]
    fn instance_names_are_one_component() {
        let base = Path::new("/sys/fs/bpf/iet");
        assert_eq!(
            instance_pin_dir(base, "a1_b-c.d").unwrap(),
            Path::new("/sys/fs/bpf/iet/a1_b-c.d")
        );
        for bad in ["", "..", "a/b", ".x", "a b"] {
            assert!(instance_pin_dir(base, bad).is_err(), "{bad:?}");
        }
    }
}
