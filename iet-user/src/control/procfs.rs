//! IET's /proc/net/iet/session and /proc/net/iet/volume text formats, so
//! scripts written for IET keep working with `ietadm show ... --proc`.

use std::fmt::Write;

use super::protocol::{SessionView, TargetView, VolumeView};

/// /proc/net/iet/volume: one `tid:` line per target, one indented `lun:` line per LUN.
pub fn volume(targets: &[TargetView], volumes: &[VolumeView]) -> String {
    let mut out = String::new();
    for t in targets {
        let _ = writeln!(out, "tid:{} name:{}", t.tid, t.name);
        for v in volumes.iter().filter(|v| v.tid == t.tid) {
            let iotype = if v.path.starts_with("mem:") {
                "nullio"
            } else if v.path.starts_with("/dev/") {
                "blockio"
            } else {
                "fileio"
            };
            let iomode = match (v.read_only, v.write_cache) {
                (true, _) => "ro",
                (false, true) => "wb",
                (false, false) => "wt",
            };
            let _ = writeln!(
                out,
                "\tlun:{} state:0 iotype:{iotype} iomode:{iomode} blocks:{} blocksize:{} path:{}",
                v.lun,
                v.size_bytes / u64::from(v.block_size.max(1)),
                v.block_size,
                v.path
            );
        }
    }
    out
}

/// /proc/net/iet/session: targets, their sessions (sid, initiator) and connections.
pub fn session(targets: &[TargetView], sessions: &[SessionView]) -> String {
    let mut out = String::new();
    for t in targets {
        let _ = writeln!(out, "tid:{} name:{}", t.tid, t.name);
        for s in sessions.iter().filter(|s| s.tid == t.tid) {
            let _ = writeln!(out, "\tsid:{} initiator:{}", s.sid, s.initiator);
            for c in &s.connections {
                let digest = |on: bool| if on { "crc32c" } else { "none" };
                let _ = writeln!(
                    out,
                    "\t\tcid:{} ip:{} state:active hd:{} dd:{}",
                    c.cid,
                    c.peer.ip(),
                    digest(c.header_digest),
                    digest(c.data_digest)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::ConnectionView;

    #[test]
    fn iet_volume_and_session_text() {
        let targets = vec![TargetView {
            tid: 1,
            name: "iqn.2026-11.io.iet:t".into(),
            alias: None,
            luns: vec![0],
            sessions: 1,
            allow: vec![],
            deny: vec![],
            params: crate::config::ParamsConfig::default(),
        }];
        let volumes = vec![VolumeView {
            tid: 1,
            target: "iqn.2026-11.io.iet:t".into(),
            lun: 0,
            path: "/srv/disk.img".into(),
            size_bytes: 1 << 20,
            block_size: 512,
            read_only: false,
            write_cache: false,
            engine: "file".into(),
        }];
        assert_eq!(
            volume(&targets, &volumes),
            "tid:1 name:iqn.2026-11.io.iet:t\n\tlun:0 state:0 iotype:fileio iomode:wt blocks:2048 blocksize:512 path:/srv/disk.img\n"
        );
        let sessions = vec![SessionView {
            tid: 1,
            target: Some("iqn.2026-11.io.iet:t".into()),
            tsih: 1,
            sid: 0x0123_4567_89ab_0001,
            initiator: "iqn.i".into(),
            isid: "0123456789ab".into(),
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            tasks: 0,
            negotiated: vec![],
            connections: vec![ConnectionView {
                cid: 0,
                local: "127.0.0.1:3260".parse().unwrap(),
                peer: "127.0.0.1:5000".parse().unwrap(),
                header_digest: true,
                data_digest: false,
                tx_bytes: 0,
                tx_pdus_by_opcode: vec![],
                kernel: None,
            }],
        }];
        assert_eq!(
            session(&targets, &sessions),
            format!(
                "tid:1 name:iqn.2026-11.io.iet:t\n\tsid:{} initiator:iqn.i\n\t\tcid:0 ip:127.0.0.1 state:active hd:crc32c dd:none\n",
                0x0123_4567_89ab_0001u64
            )
        );
    }
}
