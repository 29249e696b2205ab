//! IET's own configuration files, read directly: ietd.conf and the
//! initiators.allow / initiators.deny files beside it. Errors name the
//! file and line.

use std::path::Path;

use super::{Config, ConfigError, LunSpec, TargetConfig};
use crate::target::ChapAccount;

/// Whether `text` looks like an ietd.conf rather than TOML.
pub fn looks_like_ietd_conf(text: &str) -> bool {
    let first = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty());
    first.is_some_and(|l| {
        let word = l.split_whitespace().next().unwrap_or("");
        matches!(
            word,
            "Target" | "IncomingUser" | "OutgoingUser" | "iSNSServer" | "iSNSAccessControl"
        )
    })
}

fn err(path: &Path, line: usize, reason: impl Into<String>) -> ConfigError {
    ConfigError::At {
        path: path.to_owned(),
        line,
        reason: reason.into(),
    }
}

fn yes_no(path: &Path, n: usize, key: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "Yes" | "yes" => Ok(true),
        "No" | "no" => Ok(false),
        _ => Err(err(
            path,
            n,
            format!("{key}: expected Yes or No, got {v:?}"),
        )),
    }
}

fn number<T: std::str::FromStr>(
    path: &Path,
    n: usize,
    key: &str,
    v: &str,
) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| err(path, n, format!("{key}: {v:?} is not a number")))
}

fn account(path: &Path, n: usize, key: &str, rest: &[&str]) -> Result<ChapAccount, ConfigError> {
    match rest {
        [user, secret] => Ok(ChapAccount {
            user: (*user).to_owned(),
            secret: (*secret).to_owned(),
        }),
        _ => Err(err(
            path,
            n,
            format!("{key} takes a user name and a secret"),
        )),
    }
}

/// Parses ietd.conf. Settings IET had but iet does not need (Wthreads,
/// markers) are logged as ignored.
pub fn parse_ietd_conf(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    let mut current: Option<TargetConfig> = None;
    for (idx, raw) in text.lines().enumerate() {
        let n = idx + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let key = words[0];
        let rest = &words[1..];
        let value = || -> Result<&str, ConfigError> {
            match rest {
                [v] => Ok(*v),
                _ => Err(err(path, n, format!("{key} takes exactly one value"))),
            }
        };
        if key == "Target" {
            let name = value()?;
            if !crate::proto::names::valid_iscsi_name(name) {
                return Err(err(path, n, format!("{name:?} is not a valid iSCSI name")));
            }
            if let Some(t) = current.take() {
                cfg.targets.push(t);
            }
            if cfg.targets.iter().any(|t| t.name == name) {
                return Err(err(path, n, format!("target {name} is defined twice")));
            }
            current = Some(TargetConfig::new(name));
            continue;
        }
        let Some(t) = current.as_mut() else {
            // Global section: discovery accounts and iSNS.
            match key {
                "IncomingUser" => cfg.discovery.incoming.push(account(path, n, key, rest)?),
                "OutgoingUser" => cfg.discovery.outgoing = Some(account(path, n, key, rest)?),
                "iSNSServer" => cfg.isns_server = Some(value()?.to_owned()),
                "iSNSAccessControl" => {
                    cfg.isns_access_control = yes_no(path, n, key, value()?)?;
                }
                _ => return Err(err(path, n, format!("{key} is not valid outside a Target"))),
            }
            continue;
        };
        if let Some(set) = t.params.set_ietd(key, rest.join(" ").as_str()) {
            value()?;
            set.map_err(|e| err(path, n, e))?;
            t.params.to_params().map_err(|e| err(path, n, e))?;
            continue;
        }
        match key {
            "Lun" => t.luns.push(parse_lun(path, n, rest)?),
            "Alias" => t.alias = Some(rest.join(" ")),
            "IncomingUser" => t.incoming.push(account(path, n, key, rest)?),
            "OutgoingUser" => t.outgoing = Some(account(path, n, key, rest)?),
            "DataPDUInOrder" | "DataSequenceInOrder" => {
                // iet always negotiates Yes (RFC 7143 OR result functions).
                yes_no(path, n, key, value()?)?;
            }
            "Wthreads" | "IFMarker" | "OFMarker" | "IFMarkInt" | "OFMarkInt" => {
                tracing::warn!("{}:{n}: {key} is ignored by iet", path.display());
            }
            _ => return Err(err(path, n, format!("unknown setting {key}"))),
        }
    }
    if let Some(t) = current.take() {
        cfg.targets.push(t);
    }
    Ok(cfg)
}

/// `Lun N Path=...,Type=fileio|blockio|nullio,ScsiId=...,ScsiSN=...,IOMode=wb|wt|ro,BlockSize=...`
/// plus iet's own `Engine=auto|file|uring` and `Direct=Yes|No`.
fn parse_lun(path: &Path, n: usize, rest: &[&str]) -> Result<LunSpec, ConfigError> {
    let [num, params @ ..] = rest else {
        return Err(err(path, n, "Lun takes a number and Path=..."));
    };
    let number: u64 = number(path, n, "Lun", num)?;
    let mut spec = LunSpec::new(number, "");
    let mut kind = "fileio";
    let mut blocks: Option<u64> = None;
    let joined = params.join(" ");
    for kv in joined.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| err(path, n, format!("Lun {number}: {kv:?} is not Key=Value")))?;
        match k {
            "Path" => v.clone_into(&mut spec.path),
            "Type" => {
                kind = match v {
                    "fileio" | "blockio" | "nullio" => v,
                    _ => return Err(err(path, n, format!("Lun {number}: unknown Type {v}"))),
                };
            }
            "ScsiId" => spec.scsi_id = Some(v.to_owned()),
            "ScsiSN" => spec.serial = Some(v.to_owned()),
            "IOMode" => match v {
                "wb" => spec.write_cache = true,
                "wt" => spec.write_cache = false,
                "ro" => spec.read_only = true,
                _ => {
                    return Err(err(
                        path,
                        n,
                        format!("Lun {number}: IOMode {v} (wb, wt or ro)"),
                    ));
                }
            },
            "BlockSize" => {
                spec.block_size = number_of(path, n, "BlockSize", v)?;
                if spec.block_size != 512 && spec.block_size != 4096 {
                    return Err(err(
                        path,
                        n,
                        format!("Lun {number}: BlockSize {v} (512 or 4096)"),
                    ));
                }
            }
            "Blocks" => blocks = Some(number_of(path, n, "Blocks", v)?),
            "Engine" => {
                spec.engine = v
                    .parse()
                    .map_err(|e| err(path, n, format!("Lun {number}: Engine: {e}")))?;
            }
            "Direct" => {
                spec.direct = <bool as super::params::Setting>::from_ietd(v)
                    .map_err(|e| err(path, n, format!("Lun {number}: Direct: {e}")))?;
            }
            _ => return Err(err(path, n, format!("Lun {number}: unknown parameter {k}"))),
        }
    }
    if kind == "nullio" {
        let size = blocks.unwrap_or(1 << 21) * u64::from(spec.block_size);
        spec.path = format!("mem:{size}");
    } else if spec.path.is_empty() {
        return Err(err(
            path,
            n,
            format!("Lun {number}: Path= is required for {kind}"),
        ));
    }
    Ok(spec)
}

fn number_of<T: std::str::FromStr>(
    path: &Path,
    n: usize,
    key: &str,
    v: &str,
) -> Result<T, ConfigError> {
    number(path, n, key, v)
}

/// Applies initiators.allow or initiators.deny: `<target|ALL> <rule>[, <rule>...]`.
pub fn apply_initiators_file(
    cfg: &mut Config,
    path: &Path,
    text: &str,
    allow: bool,
) -> Result<(), ConfigError> {
    for (idx, raw) in text.lines().enumerate() {
        let n = idx + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (target, rules) = line.split_once(char::is_whitespace).ok_or_else(|| {
            err(
                path,
                n,
                "expected a target name (or ALL) and a list of initiators",
            )
        })?;
        let rules: Vec<String> = rules
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        for r in &rules {
            crate::target::acl::AclEntry::parse(r).map_err(|e| err(path, n, e))?;
        }
        let mut matched = false;
        for t in cfg
            .targets
            .iter_mut()
            .filter(|t| target == "ALL" || t.name == target)
        {
            matched = true;
            let list = if allow { &mut t.allow } else { &mut t.deny };
            list.extend(rules.iter().cloned());
        }
        if !matched {
            return Err(err(
                path,
                n,
                format!("no target {target} in the configuration"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
iSNSServer 192.0.2.1:3205
iSNSAccessControl No
IncomingUser disco discosecret
Target iqn.2026-11.io.iet:a
\tIncomingUser joe secretsecret
\tOutgoingUser jim 12charpasswd
\tLun 0 Path=/srv/a.img,Type=fileio,ScsiSN=SN-A,IOMode=wt
\tLun 1 Type=nullio,Blocks=2048
\tAlias First
\tMaxConnections 2
\tHeaderDigest None,CRC32C
\tWthreads 8
Target iqn.2026-11.io.iet:b
\tLun 0 Path=/dev/sdz,Type=blockio,BlockSize=4096,Engine=uring,Direct=Yes
";

    #[test]
    fn parses_targets_luns_and_accounts() {
        let cfg = parse_ietd_conf(Path::new("ietd.conf"), SAMPLE).unwrap();
        assert_eq!(cfg.discovery.incoming[0].user, "disco");
        assert_eq!(cfg.isns_server.as_deref(), Some("192.0.2.1:3205"));
        assert!(!cfg.isns_access_control);
        assert_eq!(cfg.targets.len(), 2);
        let a = &cfg.targets[0];
        assert_eq!(a.alias.as_deref(), Some("First"));
        assert_eq!(a.incoming[0].user, "joe");
        assert_eq!(a.outgoing.as_ref().unwrap().user, "jim");
        assert_eq!(a.luns[0].path, "/srv/a.img");
        assert!(!a.luns[0].write_cache);
        assert_eq!(a.luns[0].serial.as_deref(), Some("SN-A"));
        assert_eq!(a.luns[1].path, format!("mem:{}", 2048 * 512));
        assert_eq!(a.params.max_connections, Some(2));
        assert_eq!(cfg.targets[1].luns[0].block_size, 4096);
        assert_eq!(cfg.targets[1].luns[0].engine, crate::backend::Engine::Uring);
        assert!(cfg.targets[1].luns[0].direct);
        assert_eq!(a.luns[0].engine, crate::backend::Engine::Auto);
        assert!(looks_like_ietd_conf(SAMPLE));
        assert!(!looks_like_ietd_conf("[[target]]\nname = \"x\"\n"));
    }

    #[test]
    fn errors_name_the_line() {
        let bad = "Target iqn.2026-11.io.iet:a\n\tLun 0 Path=/x,Type=weird\n";
        let e = parse_ietd_conf(Path::new("/etc/iet/ietd.conf"), bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/iet/ietd.conf:2: Lun 0: unknown Type weird"
        );
        let e = parse_ietd_conf(
            Path::new("c"),
            "Target iqn.2026-11.io.iet:a\n\tMaxBurstLength lots\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c:2: MaxBurstLength: \"lots\" is not a number"
        );
        let e = parse_ietd_conf(Path::new("c"), "Lun 0 Path=/x\n").unwrap_err();
        assert_eq!(e.to_string(), "c:1: Lun is not valid outside a Target");
    }

    #[test]
    fn initiators_allow_and_deny() {
        let mut cfg = parse_ietd_conf(Path::new("c"), SAMPLE).unwrap();
        apply_initiators_file(
            &mut cfg,
            Path::new("initiators.allow"),
            "iqn.2026-11.io.iet:a 10.0.0.0/8, iqn.2026-11.io.iet:host\n",
            true,
        )
        .unwrap();
        apply_initiators_file(&mut cfg, Path::new("initiators.deny"), "ALL ALL\n", false).unwrap();
        assert_eq!(
            cfg.targets[0].allow,
            vec!["10.0.0.0/8", "iqn.2026-11.io.iet:host"]
        );
        assert_eq!(cfg.targets[1].deny, vec!["ALL"]);
        let e = apply_initiators_file(
            &mut cfg,
            Path::new("initiators.allow"),
            "iqn.2026-11.io.iet:zz ALL\n",
            true,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "initiators.allow:1: no target iqn.2026-11.io.iet:zz in the configuration"
        );
    }
}
