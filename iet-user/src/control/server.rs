//! The daemon's side of the control socket: root-only Unix socket, one
//! JSON request per line, every change applied through [`Daemon`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::protocol::{
    AccountScope, AccountView, ConnectionView, Direction, Envelope, MAX_LINE, PROTOCOL_VERSION,
    PortalView, Request, Response, SessionView, TargetView, VolumeView,
};
use crate::config::{LunSpec, ParamsConfig, PortalTuning};
use crate::daemon::state::Daemon;
use crate::proto::pdu::Opcode;
use crate::target::session::isid_hex;

/// Binds the control socket (mode 0600) and serves it until `shutdown`.
pub fn start(path: &Path, daemon: Arc<Daemon>, shutdown: CancellationToken) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    info!(path = %path.display(), "control socket");
    let path = path.to_owned();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let daemon = daemon.clone();
                    tokio::spawn(async move { serve_client(stream, daemon).await });
                }
                Err(e) => warn!("control accept: {e}"),
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// Only root, or the user ietd runs as, may manage the daemon.
fn peer_allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == 0 || c.uid() == me)
}

async fn serve_client(stream: UnixStream, daemon: Arc<Daemon>) {
    if !peer_allowed(&stream) {
        let (_, mut w) = stream.into_split();
        let mut line = serde_json::to_string(&Response::error("permission denied: root only"))
            .unwrap_or_default();
        line.push('\n');
        let _ = w.write_all(line.as_bytes()).await;
        warn!("control connection from a non-root peer refused");
        return;
    }
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                debug!("control read: {e}");
                return;
            }
        };
        if n == 0 {
            return;
        }
        let response = if line.len() > MAX_LINE {
            // Drain the rest of the oversized line, then refuse it.
            let mut sink = Vec::new();
            let _ = reader.read_until(b'\n', &mut sink).await;
            Response::error(format!("request longer than {MAX_LINE} bytes"))
        } else {
            handle_line(&line, &daemon).await
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn handle_line(line: &[u8], daemon: &Arc<Daemon>) -> Response {
    let env: Envelope = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => return Response::error(format!("malformed request: {e}")),
    };
    if env.version != PROTOCOL_VERSION {
        return Response::error(format!(
            "protocol version {} not supported (this ietd speaks {PROTOCOL_VERSION})",
            env.version
        ));
    }
    let daemon = daemon.clone();
    // Changes may touch files (LUN backing stores, saves): off the reactor.
    match tokio::task::spawn_blocking(move || dispatch(&daemon, env.request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Response::error(format!("{e:#}")),
        Err(e) => Response::error(format!("internal error: {e}")),
    }
}

fn dispatch(d: &Daemon, req: Request) -> anyhow::Result<Response> {
    Ok(match req {
        Request::ShowTargets => Response::ok(json!(targets(d))),
        Request::ShowVolumes => Response::ok(json!(volumes(d))),
        Request::ShowSessions => Response::ok(json!(sessions(d))),
        Request::ShowPortals => Response::ok(json!(
            d.registry
                .portals()
                .into_iter()
                .map(|p| PortalView {
                    listen: p.listen,
                    advertise: p.advertise,
                    tuning: d.portal_tuning_of(p.listen),
                })
                .collect::<Vec<_>>()
        )),
        Request::ShowAccounts => Response::ok(json!(accounts(d))),
        Request::Stats => Response::ok(stats(d)),
        Request::LimitsSet {
            max_logins_in_progress,
            login_timeout_secs,
            max_sessions_per_initiator,
            chap_failures_before_lockout,
            chap_lockout_secs,
        } => {
            let mut l = d.registry.limits.settings();
            let set = |field: &mut u32, v: Option<u32>| {
                if let Some(v) = v {
                    *field = v;
                }
            };
            set(&mut l.max_logins_in_progress, max_logins_in_progress);
            set(&mut l.login_timeout_secs, login_timeout_secs);
            set(
                &mut l.max_sessions_per_initiator,
                max_sessions_per_initiator,
            );
            set(
                &mut l.chap_failures_before_lockout,
                chap_failures_before_lockout,
            );
            set(&mut l.chap_lockout_secs, chap_lockout_secs);
            d.registry.limits.set(l);
            Response::done()
        }
        Request::MemorySet {
            write_budget_mib,
            session_write_budget_mib,
        } => {
            let mut m = d.memory();
            if let Some(v) = write_budget_mib {
                m.write_budget_mib = v;
            }
            if let Some(v) = session_write_budget_mib {
                m.session_write_budget_mib = v;
            }
            m.apply(&d.registry);
            Response::done()
        }
        Request::TargetNew { name, alias } => {
            d.target_new(&name, alias)?;
            Response::done()
        }
        Request::TargetDelete { name, force } => {
            d.target_delete(&name, force)?;
            Response::done()
        }
        Request::TargetSet { name, params } => {
            d.target_set_params(&name, &params)?;
            Response::done()
        }
        Request::LunNew {
            target,
            lun,
            path,
            block_size,
            read_only,
            size,
            engine,
            direct,
        } => {
            let number = match lun {
                Some(n) => n,
                None => d.next_lun(&target)?,
            };
            let mut spec = LunSpec::new(number, &path);
            spec.read_only = read_only;
            spec.create_size = size;
            spec.engine = engine;
            spec.direct = direct;
            if let Some(bs) = block_size {
                spec.block_size = bs;
            }
            d.lun_new(&target, &spec)?;
            Response::ok(json!({ "lun": number }))
        }
        Request::LunDelete { target, lun, force } => {
            d.lun_delete(&target, lun, force)?;
            Response::done()
        }
        Request::LunResize { target, lun, size } => {
            d.lun_resize(&target, lun, size)?;
            Response::done()
        }
        Request::LunSet {
            target,
            lun,
            read_only,
        } => {
            d.lun_set_read_only(&target, lun, read_only)?;
            Response::done()
        }
        Request::PortalAdd { listen, advertise } => {
            d.portal_add(listen, advertise, crate::config::DEFAULT_TPGT)?;
            Response::done()
        }
        Request::PortalSet {
            listen,
            accounting,
            redirect,
            sndbuf,
            rcvbuf,
            notsent_lowat,
            congestion,
        } => {
            let tuning = PortalTuning {
                accounting,
                redirect,
                sndbuf,
                rcvbuf,
                notsent_lowat,
                congestion,
            };
            d.portal_set(listen, &tuning)?;
            Response::done()
        }
        Request::PortalRemove { listen } => {
            d.portal_remove(listen)?;
            Response::done()
        }
        Request::AccountAdd {
            scope,
            direction,
            user,
            secret,
        } => {
            d.account_change(&scope, direction, &user, Some(&secret))?;
            Response::done()
        }
        Request::AccountDelete {
            scope,
            direction,
            user,
        } => {
            d.account_change(&scope, direction, &user, None)?;
            Response::done()
        }
        Request::AclSet {
            target,
            allow,
            deny,
        } => {
            d.acl_set(&target, &allow, &deny)?;
            Response::done()
        }
        Request::SessionDelete { tsih } => {
            d.session_delete(tsih)?;
            Response::done()
        }
        Request::ConnectionDelete { tsih, cid } => {
            d.connection_delete(tsih, cid)?;
            Response::done()
        }
        Request::Save { path } => {
            d.save(Path::new(&path))?;
            Response::done()
        }
        Request::Reload => Response::ok(json!(d.reload()?)),
    })
}

pub fn targets(d: &Daemon) -> Vec<TargetView> {
    d.registry
        .targets()
        .iter()
        .map(|t| {
            let st = t.settings();
            TargetView {
                tid: t.tid,
                name: t.name.clone(),
                alias: st.alias.clone(),
                luns: t
                    .lun_specs
                    .lock()
                    .expect("specs lock")
                    .keys()
                    .copied()
                    .collect(),
                sessions: d.sessions_of(t).len(),
                allow: st.acl.allow.iter().map(ToString::to_string).collect(),
                deny: st.acl.deny.iter().map(ToString::to_string).collect(),
                params: ParamsConfig::all(&st.params),
            }
        })
        .collect()
}

pub fn volumes(d: &Daemon) -> Vec<VolumeView> {
    let mut out = Vec::new();
    for t in d.registry.targets() {
        let live = t.luns.luns();
        for (lun, spec) in t.lun_specs.lock().expect("specs lock").iter() {
            let info = live.iter().find(|(n, _)| n == lun).map(|(_, i)| i);
            out.push(VolumeView {
                tid: t.tid,
                target: t.name.clone(),
                lun: *lun,
                path: spec.path.clone(),
                size_bytes: info.map_or(0, |i| i.size_bytes),
                block_size: info.map_or(spec.block_size, |i| i.block_size),
                read_only: info.map_or(spec.read_only, |i| i.read_only),
                write_cache: spec.write_cache,
                engine: info.map_or_else(String::new, |i| i.engine.to_owned()),
            });
        }
    }
    out
}

fn opcode_counts(get: impl Fn(u8) -> u64) -> Vec<(String, u64)> {
    Opcode::ALL
        .iter()
        .filter(|op| !op.is_initiator())
        .map(|op| (format!("{op:?}"), get(*op as u8)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

pub fn sessions(d: &Daemon) -> Vec<SessionView> {
    let dp = &d.dataplane;
    d.registry
        .sessions()
        .iter()
        .map(|s| {
            let isid = isid_hex(&s.id.isid);
            let isid_num =
                s.id.isid
                    .iter()
                    .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            let mut conns: Vec<ConnectionView> = s
                .connections
                .lock()
                .expect("conn lock")
                .values()
                .map(|c| ConnectionView {
                    cid: c.cid,
                    local: c.local,
                    peer: c.peer,
                    header_digest: s
                        .negotiated()
                        .iter()
                        .any(|(k, v)| k == "HeaderDigest" && v == "CRC32C"),
                    data_digest: s
                        .negotiated()
                        .iter()
                        .any(|(k, v)| k == "DataDigest" && v == "CRC32C"),
                    tx_bytes: c
                        .tx_counters
                        .bytes
                        .load(std::sync::atomic::Ordering::Relaxed),
                    tx_pdus_by_opcode: opcode_counts(|op| c.tx_counters.pdus_of(op)),
                    kernel: crate::dataplane::kernel_view(dp, c.local, c.peer),
                })
                .collect();
            conns.sort_by_key(|c| c.cid);
            SessionView {
                tid: s.target().map_or(0, |t| t.tid),
                target: s.target().map(|t| t.name.clone()),
                tsih: s.id.tsih,
                sid: (isid_num << 16) | u64::from(s.id.tsih),
                initiator: s.id.initiator_name.clone(),
                isid,
                exp_cmd_sn: s.window.exp_cmd_sn(),
                max_cmd_sn: s.window.max_cmd_sn(),
                tasks: s.tasks.len(),
                negotiated: s.negotiated(),
                connections: conns,
            }
        })
        .collect()
}

fn accounts(d: &Daemon) -> Vec<AccountView> {
    let mut out = Vec::new();
    let mut push = |scope: AccountScope, direction, user: &str| {
        out.push(AccountView {
            scope,
            direction,
            user: user.to_owned(),
        });
    };
    for a in d.registry.discovery_incoming.read().expect("lock").iter() {
        push(AccountScope::Discovery, Direction::Incoming, &a.user);
    }
    if let Some(a) = d.registry.discovery_outgoing.read().expect("lock").as_ref() {
        push(AccountScope::Discovery, Direction::Outgoing, &a.user);
    }
    for t in d.registry.targets() {
        let st = t.settings();
        for a in &st.incoming {
            push(
                AccountScope::Target(t.name.clone()),
                Direction::Incoming,
                &a.user,
            );
        }
        if let Some(a) = &st.outgoing {
            push(
                AccountScope::Target(t.name.clone()),
                Direction::Outgoing,
                &a.user,
            );
        }
    }
    out
}

fn limits(d: &Daemon) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let l = &d.registry.limits;
    let c = &l.counters;
    json!({
        "settings": l.settings(),
        "logins_refused_busy": c.logins_refused_busy.load(Relaxed),
        "logins_timed_out": c.logins_timed_out.load(Relaxed),
        "sessions_refused": c.sessions_refused.load(Relaxed),
        "chap_failures": c.chap_failures.load(Relaxed),
        "chap_lockouts": c.chap_lockouts.load(Relaxed),
        "chap_refused_locked": c.chap_refused_locked.load(Relaxed),
    })
}

fn stats(d: &Daemon) -> serde_json::Value {
    let sessions = d.registry.sessions();
    let connections: usize = sessions
        .iter()
        .map(|s| s.connections.lock().expect("conn lock").len())
        .sum();
    let dp = &d.dataplane;
    json!({
        "targets": d.registry.targets().len(),
        "sessions": sessions.len(),
        "connections": connections,
        "ebpf": dp.is_active(),
        "limits": limits(d),
        "memory": {
            "write_budget_mib": d.memory().write_budget_mib,
            "session_write_budget_mib": d.memory().session_write_budget_mib,
            "write_bytes_held": d.registry.admission.daemon.used(),
        },
        "kernel": crate::dataplane::global_view(dp),
    })
}
