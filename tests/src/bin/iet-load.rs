//! iet-load: a pipelined iSCSI load generator (our Rust initiator), for
//! benchmarks against ietd and tgt alike. Prints one JSON result.
//! `--verify` writes a seeded pattern over the span and reads it back,
//! comparing every byte; it exits non-zero on any difference.

use std::net::SocketAddr;
use std::time::Duration;

use iet_tests::load::{Pattern, Workload, run};
use iet_tests::verify::{Verify, verify};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: iet-load --portal ADDR:PORT --target IQN [--lun N] [--pattern randread|randwrite|mix70|seqread|seqwrite] [--io-size BYTES] [--qd N] [--sessions N] [--seconds N] [--span-mib N] | --verify [--seed N] [--io-size BYTES] [--span-mib N]";
    let Some(portal) = args
        .iter()
        .position(|a| a == "--portal")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<SocketAddr>().ok())
    else {
        eprintln!("{usage}");
        return std::process::ExitCode::FAILURE;
    };
    let target: String = arg(&args, "--target", String::new());
    let idle: usize = arg(&args, "--idle-sessions", 0);
    if idle > 0 {
        return hold_idle_sessions(portal, &target, idle);
    }
    if args.iter().any(|a| a == "--verify") {
        let v = Verify {
            portal,
            target,
            lun: arg(&args, "--lun", 0),
            block_size: 512,
            io_size: arg(&args, "--io-size", 256 * 1024),
            span_bytes: arg::<u64>(&args, "--span-mib", 64) << 20,
            seed: arg(&args, "--seed", default_seed()),
        };
        return write_then_verify(&v);
    }
    let pattern = match arg(&args, "--pattern", "randread".to_owned()).as_str() {
        "randread" => Pattern::RandRead,
        "randwrite" => Pattern::RandWrite,
        "mix70" => Pattern::Mix70,
        "seqread" => Pattern::SeqRead,
        "seqwrite" => Pattern::SeqWrite,
        other => {
            eprintln!("unknown pattern {other}\n{usage}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let w = Workload {
        portal,
        target,
        lun: arg(&args, "--lun", 0),
        pattern,
        block_size: 512,
        io_size: arg(&args, "--io-size", 4096),
        qd: arg(&args, "--qd", 32),
        sessions: arg(&args, "--sessions", 1),
        duration: Duration::from_secs_f64(arg(&args, "--seconds", 5.0)),
        span_blocks: arg::<u64>(&args, "--span-mib", 512) * 2048,
    };
    match run(&w) {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iet-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs [`verify`] and prints its result: success only when every byte
/// read back is the byte written.
fn write_then_verify(v: &Verify) -> std::process::ExitCode {
    match verify(v) {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            if r.mismatched_bytes == 0 && r.verified_bytes == v.span_bytes {
                std::process::ExitCode::SUCCESS
            } else {
                eprintln!(
                    "iet-load: {} of {} bytes differ, the first at byte {:?}",
                    r.mismatched_bytes, r.verified_bytes, r.first_mismatch
                );
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("iet-load: verify: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A seed that differs from run to run: the clock's nanoseconds and the pid.
fn default_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Logs in `n` sessions, prints `ready <n>`, and holds them until killed
/// (for measuring the target's memory per idle session).
fn hold_idle_sessions(portal: SocketAddr, target: &str, n: usize) -> std::process::ExitCode {
    raise_fd_limit();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = match iet_tests::initiator::Conn::connect(portal) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("iet-load: connection {i}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let mut opts = iet_tests::initiator::LoginOptions::normal(target);
        let [hi, lo] = u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes();
        opts.isid = [0x80, 0x1d, 0x1e, 0, hi, lo];
        if let Err(e) = c.login(&opts) {
            eprintln!("iet-load: login {i}: {e:?}");
            return std::process::ExitCode::FAILURE;
        }
        held.push(c);
    }
    println!("ready {n}");
    loop {
        std::thread::sleep(Duration::from_hours(1));
    }
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0 {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) };
    }
}
