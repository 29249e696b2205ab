//! The configuration readers on arbitrary text: the TOML file
//! (`Config::from_toml`), IET's ietd.conf (`parse_ietd_conf`) and
//! initiators.allow/deny (`apply_initiators_file`). Bad text is an error,
//! never a panic; an accepted configuration written as TOML (what
//! `--dump-config` and `ietadm save` do) reads back the same.
#![no_main]

use std::path::Path;

use iet::config::{Config, apply_initiators_file, looks_like_ietd_conf, parse_ietd_conf};
use libfuzzer_sys::fuzz_target;

fn round_trip(cfg: &Config) {
    let text = toml::to_string(cfg).expect("a parsed configuration serialises");
    let back = Config::from_toml(Path::new("dump.toml"), &text)
        .unwrap_or_else(|e| panic!("dumped configuration does not read back: {e:#}\n{text}"));
    assert_eq!(&back, cfg, "round trip changed the configuration:\n{text}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = Path::new("/etc/iet/fuzz.conf");
    let _ = looks_like_ietd_conf(text);
    match mode % 3 {
        0 => {
            if let Ok(cfg) = Config::from_toml(path, text) {
                round_trip(&cfg);
            }
        }
        1 => {
            if let Ok(cfg) = parse_ietd_conf(path, text) {
                if cfg.validate().is_ok() {
                    round_trip(&cfg);
                }
            }
        }
        _ => {
            // The first line names the targets, the rest is the file.
            let (head, file) = text.split_once('\n').unwrap_or((text, ""));
            let Ok(mut cfg) = parse_ietd_conf(path, head) else {
                return;
            };
            let allow = head.len() % 2 == 0;
            if apply_initiators_file(&mut cfg, path, file, allow).is_ok() && cfg.validate().is_ok()
            {
                round_trip(&cfg);
            }
        }
    }
});
