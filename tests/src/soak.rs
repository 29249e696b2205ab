//! A soak of the real ietd: many sessions of mixed 4 KiB/64 KiB reads and
//! writes at QD8 for minutes, with abrupt disconnects and reconnects
//! (session reinstatement), LUN resets under load and NOP-In timeouts of
//! silent initiators thrown in; ietd's fds, threads and RSS are sampled
//! before and after. Used by `cargo xtask soak` and tests/tests/soak.rs.

#![allow(
    clippy::cast_precision_loss,
    reason = "percentiles and rates for humans"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use iet::proto::pdu::{Bhs, Opcode};

use crate::initiator::{Conn, LoginError, LoginOptions};
use crate::inprocess::free_port;
use crate::process::{Ietd, TempDir};

pub const TARGET: &str = "iqn.2026-11.io.iet:soak";
const BS: u32 = 512;
const RESERVED: u32 = 0xffff_ffff;
/// ietd pings an idle connection after this many seconds ...
const NOP_INTERVAL: u64 = 2;
/// ... and drops it when the answer is this late.
const NOP_TIMEOUT: u64 = 2;
/// A command or TMF not answered in this long is lost: an error, not a wait
/// (ietd's NOP-In pings keep the socket's read timeout from firing).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub sessions: usize,
    pub duration: Duration,
    pub qd: usize,
}

/// What /proc says of the daemon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcSample {
    pub fds: u64,
    pub threads: u64,
    pub rss_kib: u64,
}

/// Counters the session threads share.
#[derive(Debug, Default)]
struct Counters {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    logins: AtomicU64,
    logins_busy: AtomicU64,
    disconnects: AtomicU64,
    lun_resets: AtomicU64,
    nop_timeouts: AtomicU64,
    unit_attentions: AtomicU64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakReport {
    pub sessions: usize,
    pub seconds: f64,
    pub ops: u64,
    pub mib_per_s: f64,
    pub errors: u64,
    /// The first error of each kind (its text with the numbers taken out), for the log.
    pub error_samples: Vec<String>,
    /// How many errors of each kind.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    pub logins: u64,
    /// Logins that ietd answered with a Target Error status (class 3: too
    /// many logins in progress, out of resources) and the initiator retried
    /// later, as RFC 7143 §11.13.5 lets it.
    pub logins_busy: u64,
    pub disconnects: u64,
    pub lun_resets: u64,
    pub nop_timeouts: u64,
    pub unit_attentions: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub start: ProcSample,
    pub end: ProcSample,
    /// Seconds after the load stopped until fds and threads were back.
    pub settle_seconds: f64,
}

pub fn sample(pid: u32) -> ProcSample {
    let count = |dir: String| std::fs::read_dir(dir).map_or(0, |d| d.count() as u64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    ProcSample {
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        rss_kib,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Shared {
    portal: SocketAddr,
    deadline: Instant,
    qd: usize,
    counters: Counters,
    samples: std::sync::Mutex<Samples>,
}

/// Errors by kind, and the first of each.
#[derive(Default)]
struct Samples {
    first: Vec<String>,
    kinds: std::collections::BTreeMap<String, u64>,
}

/// An error's kind: its text without numbers (session index, ITT, counts).
fn kind(what: &str) -> String {
    what.chars().filter(|c| !c.is_ascii_digit()).collect()
}

impl Shared {
    fn error(&self, what: String) {
        self.counters.errors.fetch_add(1, Relaxed);
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = s.kinds.entry(kind(&what)).or_insert(0);
        *count += 1;
        if *count == 1 && s.first.len() < 20 {
            s.first.push(what);
        }
    }
}

/// A login that did not give a session.
enum LoginFailed {
    /// Target Error (class 3): the target is busy; try again later.
    Busy,
    Other(String),
}

fn login(sh: &Shared, isid: [u8; 6]) -> Result<Conn, LoginFailed> {
    let other = |e: &dyn std::fmt::Debug| LoginFailed::Other(format!("login: {e:?}"));
    let mut c = Conn::connect(sh.portal).map_err(|e| other(&e))?;
    let mut opts = LoginOptions::normal(TARGET);
    opts.isid = isid;
    match c.login(&opts) {
        Ok(()) => {}
        Err(LoginError::Status(s)) if s.class == 3 => return Err(LoginFailed::Busy),
        Err(e) => return Err(other(&e)),
    }
    c.sock
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| other(&e))?;
    sh.counters.logins.fetch_add(1, Relaxed);
    Ok(c)
}

/// One pipelined command on `lun`: READ(16) or WRITE(16) of 4 KiB or 64 KiB.
fn issue(
    c: &mut Conn,
    rng: &mut Rng,
    lun: u64,
    span_blocks: u64,
    payload: &[u8],
) -> std::io::Result<(u32, u32)> {
    let big = rng.below(4) == 0;
    let len: u32 = if big { 65536 } else { 4096 };
    let blocks = u64::from(len / BS);
    let write = rng.below(2) == 0;
    let lba = rng.below(span_blocks / blocks) * blocks;
    let mut cdb = [0u8; 16];
    cdb[0] = if write { 0x8a } else { 0x88 };
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
    let data = &payload[..len as usize];
    let mut bhs = c.command_bhs(lun, &cdb, !write, write, len);
    let imm = if write && c.immediate_data {
        data.len().min(c.first_burst).min(c.target_mrdsl)
    } else {
        0
    };
    let unsolicited = if write && !c.initial_r2t {
        data.len().min(c.first_burst)
    } else {
        imm
    };
    if unsolicited > imm {
        bhs.set_final(false);
    }
    c.send(&bhs, &data[..imm])?;
    let (mut off, mut sn) = (imm, 0);
    while off < unsolicited {
        let n = (unsolicited - off).min(c.target_mrdsl);
        c.send_data_out(
            lun,
            bhs.itt(),
            RESERVED,
            sn,
            off as u32,
            off + n == unsolicited,
            &data[off..off + n],
        )?;
        off += n;
        sn += 1;
    }
    Ok((bhs.itt(), len))
}

fn answer_ping(c: &mut Conn, nop_in: &Bhs) -> std::io::Result<()> {
    let mut bhs = Bhs::new(Opcode::NopOut);
    bhs.set_immediate(true);
    bhs.set_final(true);
    bhs.set_itt(RESERVED);
    bhs.set_u32(20, nop_in.u32_at(20));
    bhs.set_u32(24, c.cmd_sn);
    bhs.set_u32(28, c.exp_stat_sn);
    c.send(&bhs, &[])
}

/// What one received PDU meant.
enum Got {
    Done { itt: u32, status: u8, ua: bool },
    TmfDone { itt: u32, response: u8 },
    Nothing,
}

fn receive(c: &mut Conn, lun: u64, payload: &[u8]) -> std::io::Result<Got> {
    let pdu = c.recv()?;
    c.track(&pdu.bhs);
    let itt = pdu.bhs.itt();
    Ok(match pdu.bhs.opcode() {
        Some(Opcode::DataIn) if pdu.bhs.0[1] & 0x01 != 0 => Got::Done {
            itt,
            status: pdu.bhs.0[3],
            ua: false,
        },
        Some(Opcode::ScsiResponse) => {
            let status = pdu.bhs.0[3];
            // Sense key in fixed (byte 2) or descriptor (byte 1) format,
            // after the two-byte SenseLength.
            let sense = pdu.data.get(2..).unwrap_or(&[]);
            let key = match sense.first().map(|b| b & 0x7f) {
                Some(0x70 | 0x71) => sense.get(2).map(|b| b & 0x0f),
                Some(0x72 | 0x73) => sense.get(1).map(|b| b & 0x0f),
                _ => None,
            };
            Got::Done {
                itt,
                status,
                ua: status == 0x02 && key == Some(0x06),
            }
        }
        Some(Opcode::R2t) => {
            let (ttt, offset, want) = (
                pdu.bhs.u32_at(20),
                pdu.bhs.u32_at(40) as usize,
                pdu.bhs.u32_at(44) as usize,
            );
            let (mut sent, mut sn) = (0, 0);
            while sent < want {
                let n = (want - sent).min(c.target_mrdsl);
                let start = offset + sent;
                let chunk = payload.get(start..start + n).unwrap_or(&[]);
                c.send_data_out(lun, itt, ttt, sn, start as u32, sent + n == want, chunk)?;
                sent += n;
                sn += 1;
            }
            Got::Nothing
        }
        Some(Opcode::NopIn) if itt == RESERVED => {
            answer_ping(c, &pdu.bhs)?;
            Got::Nothing
        }
        Some(Opcode::TaskMgmtResponse) => Got::TmfDone {
            itt,
            response: pdu.bhs.0[2],
        },
        Some(Opcode::DataIn | Opcode::AsyncMessage) => Got::Nothing,
        other => {
            return Err(std::io::Error::other(format!("unexpected {other:?}")));
        }
    })
}

/// One initiator: sessions one after another until the deadline, each
/// living a few seconds at QD8 and ending by logout or by a cut socket;
/// now and then one goes silent and must be dropped by ietd's NOP-In.
fn worker(sh: &Shared, index: usize, lun: u64, span_blocks: u64, resets: bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((index as u64 + 1) << 17));
    let payload: Vec<u8> = (0..65536u32)
        .map(|i| (i % 251) as u8 ^ index as u8)
        .collect();
    let isid = [0x80, 0x53, 0x4f, 0x4b, (index >> 8) as u8, index as u8];
    while Instant::now() < sh.deadline {
        let mut c = match login(sh, isid) {
            Ok(c) => c,
            Err(LoginFailed::Busy) => {
                sh.counters.logins_busy.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
                continue;
            }
            Err(LoginFailed::Other(e)) => {
                sh.error(format!("session {index}: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if !resets && rng.below(40) == 0 {
            silent(sh, &mut c, index);
            continue;
        }
        let life = Duration::from_millis(2000 + rng.below(8000));
        let until = (Instant::now() + life).min(sh.deadline);
        let mut s = Life {
            sh,
            index,
            lun,
            span_blocks,
            resets,
            until,
            cut: rng.below(2) == 0,
            payload: &payload,
        };
        let result = s.run(&mut c, &mut rng);
        if let Err(e) = result {
            sh.error(format!("session {index}: {e}"));
            continue;
        }
        if s.cut {
            // Cut with commands in flight: the next login with this ISID
            // reinstates the session (RFC 7143 §6.3.5).
            let _ = c.sock.shutdown(Shutdown::Both);
            sh.counters.disconnects.fetch_add(1, Relaxed);
        } else if let Err(e) = c.logout() {
            sh.error(format!("session {index}: logout: {e}"));
        }
    }
}

/// One session's life: QD8 until `until`, then drained.
struct Life<'a> {
    sh: &'a Shared,
    index: usize,
    lun: u64,
    span_blocks: u64,
    /// This session resets its LUN now and then (it has the LUN to itself).
    resets: bool,
    until: Instant,
    /// At `until`, cut the connection with commands still in flight.
    cut: bool,
    payload: &'a [u8],
}

impl Life<'_> {
    fn run(&mut self, c: &mut Conn, rng: &mut Rng) -> std::io::Result<()> {
        let (sh, index, lun) = (self.sh, self.index, self.lun);
        let mut in_flight: HashMap<u32, (Instant, u32)> = HashMap::new();
        let mut tmf: Option<u32> = None;
        let mut tmf_sent = Instant::now();
        let mut next_reset = Instant::now() + Duration::from_millis(500 + rng.below(1500));
        loop {
            let now = Instant::now();
            while now < self.until
                && tmf.is_none()
                && in_flight.len() < sh.qd
                && crate::initiator_window_open(c)
            {
                let (itt, len) = issue(c, rng, lun, self.span_blocks, self.payload)?;
                in_flight.insert(itt, (Instant::now(), len));
            }
            if self.cut && now >= self.until {
                return Ok(());
            }
            if self.resets && tmf.is_none() && now >= next_reset && now < self.until {
                tmf = Some(lun_reset(c, lun)?);
                tmf_sent = now;
            }
            if in_flight.is_empty() && tmf.is_none() {
                return Ok(());
            }
            if let Some((itt, (t0, _))) = in_flight.iter().min_by_key(|(_, (t0, _))| *t0)
                && t0.elapsed() > ANSWER_LIMIT
            {
                return Err(std::io::Error::other(format!(
                    "no answer to ITT {itt:#x} in {ANSWER_LIMIT:?} ({} in flight)",
                    in_flight.len()
                )));
            }
            if tmf.is_some() && tmf_sent.elapsed() > ANSWER_LIMIT {
                return Err(std::io::Error::other(format!(
                    "no LUN RESET response in {ANSWER_LIMIT:?}"
                )));
            }
            match receive(c, lun, self.payload)? {
                Got::Done { itt, status, ua } => {
                    let Some((t0, len)) = in_flight.remove(&itt) else {
                        sh.error(format!(
                            "session {index}: response for unknown ITT {itt:#x}"
                        ));
                        continue;
                    };
                    if ua {
                        sh.counters.unit_attentions.fetch_add(1, Relaxed);
                    } else if status != 0 {
                        sh.error(format!("session {index}: status {status:#x}"));
                    } else {
                        sh.counters.ops.fetch_add(1, Relaxed);
                        sh.counters.bytes.fetch_add(u64::from(len), Relaxed);
                        LAT.with(|l| l.borrow_mut().push(micros(t0.elapsed())));
                    }
                }
                Got::TmfDone { itt, response } => {
                    if Some(itt) != tmf {
                        sh.error(format!("session {index}: TMF response for {itt:#x}"));
                    } else if response != 0 {
                        sh.error(format!("session {index}: LUN RESET response {response}"));
                    }
                    // RFC 7143 §11.6.1: the aborted tasks get no response.
                    in_flight.clear();
                    tmf = None;
                    sh.counters.lun_resets.fetch_add(1, Relaxed);
                    next_reset = Instant::now() + Duration::from_millis(500 + rng.below(1500));
                }
                Got::Nothing => {}
            }
        }
    }
}

/// LOGICAL UNIT RESET (RFC 7143 §11.5), immediate; returns its ITT.
fn lun_reset(c: &mut Conn, lun: u64) -> std::io::Result<u32> {
    let itt = c.next_itt();
    let mut bhs = Bhs::new(Opcode::TaskMgmtRequest);
    bhs.set_immediate(true);
    bhs.0[1] = 0x80 | 5;
    bhs.set_lun(lun << 48);
    bhs.set_itt(itt);
    bhs.set_u32(20, RESERVED);
    bhs.set_u32(24, c.cmd_sn);
    bhs.set_u32(28, c.exp_stat_sn);
    c.send(&bhs, &[])?;
    Ok(itt)
}

/// An initiator that stops answering: ietd must ping, time out and close.
fn silent(sh: &Shared, c: &mut Conn, index: usize) {
    let within = Duration::from_secs(NOP_INTERVAL + NOP_TIMEOUT + 8);
    let started = Instant::now();
    let _ = c.sock.set_read_timeout(Some(Duration::from_millis(500)));
    // Read (never answer) until ietd closes the connection.
    loop {
        match c.recv() {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                sh.counters.nop_timeouts.fetch_add(1, Relaxed);
                return;
            }
        }
        if started.elapsed() > within {
            sh.error(format!(
                "session {index}: a silent connection was not dropped in {within:?}"
            ));
            return;
        }
    }
}

thread_local! {
    static LAT: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0 {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    }
}

/// One session writes and reads each LUN and logs out: the per-LU write
/// lane threads start on a LU's first write and live as long as the LU,
/// so the baseline is taken after them.
fn warm_up(portal: SocketAddr, ietd: &Ietd, luns: u64) {
    let mut c = Conn::connect(portal).expect("connect");
    c.login(&LoginOptions::normal(TARGET))
        .unwrap_or_else(|e| panic!("warm-up login: {e:?}\n{}", ietd.log()));
    for lun in 0..luns {
        c.clear_unit_attention(lun).expect("TEST UNIT READY");
        let w = c.write10(lun, 0, &[0x5a; 4096], BS).expect("warm-up write");
        let r = c.read10(lun, 0, 8, BS).expect("warm-up read");
        assert!(
            w.status == 0 && r.status == 0,
            "warm-up I/O failed:\n{}",
            ietd.log()
        );
    }
    c.logout().expect("warm-up logout");
    std::thread::sleep(Duration::from_millis(500));
}

/// Starts ietd on sparse file LUNs (LUN 0 for the load, and one small LUN
/// for each session that resets its LUN: a LUN RESET aborts every nexus's
/// tasks on the LU, which another resetter would wait for in vain), runs the
/// soak and stops ietd.
pub fn run(cfg: &SoakConfig) -> SoakReport {
    raise_fd_limit();
    let dir = TempDir::new("soak");
    let resetters = (cfg.sessions / 32).max(1);
    let mut toml = format!(
        "[[portal]]\nlisten = \"{{portal}}\"\n\n[ebpf]\nmode = \"off\"\n\n[[target]]\nname = \"{TARGET}\"\n\
         [target.params]\nnop_interval = {NOP_INTERVAL}\nnop_timeout = {NOP_TIMEOUT}\n"
    );
    for lun in 0..=resetters {
        let path = dir.path(&format!("lun{lun}.img"));
        let size = if lun == 0 { 1u64 << 30 } else { 64 << 20 };
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(size))
            .expect("sparse LUN file");
        let _ = write!(
            toml,
            "[[target.lun]]\nnumber = {lun}\npath = \"{}\"\n",
            path.display()
        );
    }
    let portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let toml = toml.replace("{portal}", &portal.to_string());
    let conf = dir.path("soak.toml");
    std::fs::write(&conf, toml).expect("write soak.toml");
    let mut ietd = Ietd::start(&dir, portal, &["--config", conf.to_str().expect("utf-8")]);
    let pid = ietd.child.id();
    warm_up(portal, &ietd, resetters as u64 + 1);
    let start = sample(pid);
    let began = Instant::now();
    let sh = Arc::new(Shared {
        portal,
        deadline: began + cfg.duration,
        qd: cfg.qd,
        counters: Counters::default(),
        samples: std::sync::Mutex::default(),
    });
    let handles: Vec<_> = (0..cfg.sessions)
        .map(|i| {
            let sh = sh.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let resets = i < resetters;
                    let (lun, span) = if resets {
                        (i as u64 + 1, 64 << 11)
                    } else {
                        (0, 1 << 21)
                    };
                    worker(&sh, i, lun, span, resets);
                    LAT.with(|l| std::mem::take(&mut *l.borrow_mut()))
                })
                .expect("spawn a session thread")
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        match h.join() {
            Ok(l) => lat.extend(l),
            Err(_) => sh.error("a session thread panicked".into()),
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    // Connections cut by us close in ietd on their own time: wait for the
    // fds and threads to come back (blocking-pool threads idle out in 10 s).
    let quiet = Instant::now();
    let mut end = sample(pid);
    while (end.fds > start.fds || end.threads > start.threads)
        && quiet.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(250));
        end = sample(pid);
    }
    let settle_seconds = quiet.elapsed().as_secs_f64();
    let alive = matches!(ietd.child.try_wait(), Ok(None));
    if !alive {
        sh.error(format!("ietd exited during the soak:\n{}", ietd.log()));
    }
    assert!(
        ietd.stop() || !alive,
        "ietd did not stop cleanly:\n{}",
        ietd.log()
    );
    lat.sort_unstable();
    let pct = |per_mille: usize| -> u64 {
        lat.get((lat.len().saturating_sub(1)) * per_mille / 1000)
            .map_or(0, |&v| u64::from(v))
    };
    let c = &sh.counters;
    let bytes = c.bytes.load(Relaxed);
    SoakReport {
        sessions: cfg.sessions,
        seconds,
        ops: c.ops.load(Relaxed),
        mib_per_s: bytes as f64 / seconds / f64::from(1u32 << 20),
        errors: c.errors.load(Relaxed),
        error_samples: sh
            .samples
            .lock()
            .map(|s| s.first.clone())
            .unwrap_or_default(),
        error_kinds: sh
            .samples
            .lock()
            .map(|s| s.kinds.clone())
            .unwrap_or_default(),
        logins: c.logins.load(Relaxed),
        logins_busy: c.logins_busy.load(Relaxed),
        disconnects: c.disconnects.load(Relaxed),
        lun_resets: c.lun_resets.load(Relaxed),
        nop_timeouts: c.nop_timeouts.load(Relaxed),
        unit_attentions: c.unit_attentions.load(Relaxed),
        p50_us: pct(500),
        p99_us: pct(990),
        p999_us: pct(999),
        max_us: lat.last().map_or(0, |&v| u64::from(v)),
        start,
        end,
        settle_seconds,
    }
}

/// Headroom over the starting RSS the daemon may keep at the end: its
/// pooled I/O buffers and the allocator's retained arenas stay warm.
pub const RSS_SLACK_KIB: u64 = 64 * 1024;

/// What makes a soak fail: any error, fds or threads above the start,
/// RSS above the start plus [`RSS_SLACK_KIB`], or no load at all.
pub fn verdict(r: &SoakReport) -> Vec<String> {
    let mut bad = Vec::new();
    if r.errors > 0 {
        bad.push(format!(
            "{} errors: {:#?}\nby kind: {:#?}",
            r.errors, r.error_samples, r.error_kinds
        ));
    }
    if r.ops == 0 {
        bad.push("no command completed".into());
    }
    if r.end.fds > r.start.fds {
        bad.push(format!(
            "fds {} at the end, {} at the start",
            r.end.fds, r.start.fds
        ));
    }
    if r.end.threads > r.start.threads {
        bad.push(format!(
            "threads {} at the end, {} at the start",
            r.end.threads, r.start.threads
        ));
    }
    if r.end.rss_kib > r.start.rss_kib + RSS_SLACK_KIB {
        bad.push(format!(
            "RSS {} KiB at the end, {} KiB at the start",
            r.end.rss_kib, r.start.rss_kib
        ));
    }
    bad
}

/// The report as a few lines for people.
pub fn summary(r: &SoakReport) -> String {
    format!(
        "soak: {} sessions for {:.0} s: {} commands ({:.1} MiB/s), {} errors\n\
         latency p50 {} us, p99 {} us, p99.9 {} us, max {} us\n\
         {} logins ({} retried after a busy answer), {} cut connections, {} LUN resets, {} NOP timeouts, {} unit attentions\n\
         ietd start: {} fds, {} threads, {} KiB RSS; end: {} fds, {} threads, {} KiB RSS \
         (settled in {:.1} s)",
        r.sessions,
        r.seconds,
        r.ops,
        r.mib_per_s,
        r.errors,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.logins,
        r.logins_busy,
        r.disconnects,
        r.lun_resets,
        r.nop_timeouts,
        r.unit_attentions,
        r.start.fds,
        r.start.threads,
        r.start.rss_kib,
        r.end.fds,
        r.end.threads,
        r.end.rss_kib,
        r.settle_seconds
    )
}
