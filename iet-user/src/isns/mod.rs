//! The iSNS client (RFC 4171, IET's `iSNSServer`): registers this daemon's
//! network entity, portals, targets and portal groups, refreshes on change, deregisters on exit.
//!
//! The registration is a snapshot of the live registry, compared every
//! second; a change (a target or portal added or removed, an alias) is
//! sent at once as a DevAttrReg with the Replace flag, so the server's
//! copy is always exactly the daemon's. Between changes the same message
//! refreshes the entity before its registration period runs out. Each
//! exchange uses its own short TCP connection (RFC 4171 §2.2.2 allows
//! either), so a restarted server is simply found again. With access control
//! (`access`) it also asks the server which initiators each target may see.

pub mod access;
pub mod pdu;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::target::Registry;
pub use access::Access;
use pdu::{F_LAST_PDU, Function, HEADER_LEN, RegisteredPortal, RegisteredTarget, Registration};

/// IANA's iSNS port (RFC 4171 §6.1).
pub const DEFAULT_PORT: u16 = 3205;
/// How long the server keeps our entity without hearing from us.
const PERIOD_SECS: u32 = 900;
/// Refresh well before the period ends.
const REFRESH: Duration = Duration::from_mins(5);
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often access control asks the server again without a refused login.
const ACCESS_REFRESH: Duration = Duration::from_secs(5);
/// A multi-PDU response longer than this is refused.
const MAX_PDUS: usize = 16;

/// Resolves `host`, `host:port`, `ip` or `[v6]:port` (port 3205 by default).
pub async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = server.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = server.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let with_port = if server.contains(':') {
        server.to_owned()
    } else {
        format!("{server}:{DEFAULT_PORT}")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("resolving iSNS server {server}"))?
        .next()
        .with_context(|| format!("iSNS server {server} has no address"))
}

/// The entity identifier: one network entity per host.
fn entity_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("iet:{}", host.trim())
}

/// What the registry holds now, as the server should see it. Portals
/// listening on a wildcard address without `advertise` are left out: an
/// initiator cannot connect to 0.0.0.0.
pub fn snapshot(registry: &Registry, entity: &str) -> Registration {
    let mut portals: Vec<RegisteredPortal> = registry
        .portals()
        .iter()
        .map(|p| RegisteredPortal {
            addr: p.advertise.unwrap_or(p.listen),
            tpgt: p.tpgt,
        })
        .filter(|p| !p.addr.ip().is_unspecified())
        .collect();
    portals.sort_unstable();
    portals.dedup();
    Registration {
        entity: entity.to_owned(),
        period_secs: PERIOD_SECS,
        portals,
        targets: registry
            .targets()
            .iter()
            .map(|t| RegisteredTarget {
                name: t.name.clone(),
                alias: t.settings().alias.clone(),
            })
            .collect(),
    }
}

/// One request and its response's payload (status checked).
async fn exchange(
    server: SocketAddr,
    function: Function,
    xid: u16,
    msg: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let io = async {
        let mut sock = TcpStream::connect(server).await?;
        sock.write_all(msg).await?;
        let mut payload = Vec::new();
        for _ in 0..MAX_PDUS {
            let mut h = [0u8; HEADER_LEN];
            sock.read_exact(&mut h).await?;
            let header = pdu::parse_header(&h)?;
            // The length field is 16 bits: at most 64 KiB per PDU.
            let start = payload.len();
            payload.resize(start + header.1, 0);
            sock.read_exact(&mut payload[start..]).await?;
            if header.2 & F_LAST_PDU != 0 {
                pdu::check_response(function, xid, header, &payload)?;
                return Ok(payload);
            }
        }
        anyhow::bail!("iSNS response of more than {MAX_PDUS} PDUs")
    };
    tokio::time::timeout(TIMEOUT, io)
        .await
        .with_context(|| format!("iSNS server {server} did not answer"))?
}

/// Asks the server, as each registered target, which initiators it may see.
async fn refresh_access(
    server: &str,
    access: &Access,
    registration: &Registration,
    xid: &mut u16,
) -> anyhow::Result<()> {
    let addr = resolve(server).await?;
    for t in &registration.targets {
        *xid = xid.wrapping_add(1);
        let msg = access::initiators_query(&t.name, *xid);
        let payload = exchange(addr, Function::DevAttrQry, *xid, &msg).await?;
        access.set(&t.name, access::parse_initiators(&payload)?);
    }
    access.retain(
        &registration
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect(),
    );
    Ok(())
}

/// Starts the client; the task deregisters and ends when `shutdown` is
/// cancelled (the caller awaits it so the DevDereg goes out before exit).
/// With `access`, it keeps the access control answers current.
pub fn start(
    server: String,
    registry: Arc<Registry>,
    access: Option<Arc<Access>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let entity = entity_id();
        let mut xid: u16 = 0;
        let mut registered: Option<(Registration, Instant)> = None;
        let mut last_error = String::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut asked: Option<Instant> = None;
        let mut last_access_error = String::new();
        loop {
            let refused = async {
                match &access {
                    Some(a) => a.refused.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                () = refused => asked = None,
            }
            let now = snapshot(&registry, &entity);
            let due = match &registered {
                Some((r, at)) => *r != now || at.elapsed() >= REFRESH,
                None => true,
            };
            if let (Some(a), Some((r, _))) = (&access, &registered)
                && !due
                && asked.is_none_or(|at| at.elapsed() >= ACCESS_REFRESH)
            {
                asked = Some(Instant::now());
                match refresh_access(&server, a, r, &mut xid).await {
                    Ok(()) => last_access_error.clear(),
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if msg != last_access_error {
                            warn!(server, "iSNS access control query: {msg}");
                            last_access_error = msg;
                        }
                    }
                }
            }
            if !due {
                continue;
            }
            xid = xid.wrapping_add(1);
            let result = async {
                let addr = resolve(&server).await?;
                match (now.dev_attr_reg(xid), &registered) {
                    (Some(msg), _) => exchange(addr, Function::DevAttrReg, xid, &msg)
                        .await
                        .map(drop),
                    // No target left to speak for the entity: remove it.
                    (None, Some((old, _))) => match old.source() {
                        Some(src) => {
                            let msg = pdu::dev_dereg(src, &entity, xid);
                            exchange(addr, Function::DevDereg, xid, &msg)
                                .await
                                .map(drop)
                        }
                        None => Ok(()),
                    },
                    (None, None) => Ok(()),
                }
            }
            .await;
            match result {
                Ok(()) => {
                    if registered.as_ref().is_none_or(|(r, _)| *r != now) {
                        info!(
                            server,
                            entity,
                            targets = now.targets.len(),
                            portals = now.portals.len(),
                            "iSNS registration"
                        );
                    }
                    registered = Some((now, Instant::now()));
                    last_error.clear();
                    // Ask at the next tick: the server knows the targets now.
                    asked = None;
                    tick.reset_immediately();
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if msg != last_error {
                        warn!(server, "iSNS: {msg}");
                        last_error = msg;
                    }
                    tick.reset_after(Duration::from_secs(5));
                }
            }
        }
        let Some(src) = registered
            .as_ref()
            .and_then(|(r, _)| r.source().map(str::to_owned))
        else {
            return;
        };
        xid = xid.wrapping_add(1);
        let msg = pdu::dev_dereg(&src, &entity, xid);
        match async { exchange(resolve(&server).await?, Function::DevDereg, xid, &msg).await }.await
        {
            Ok(_) => info!(server, entity, "iSNS deregistered"),
            Err(e) => warn!(server, "iSNS deregistration: {e:#}"),
        }
    })
}
