//! iet-soak: runs the soak (iet_tests::soak) against a fresh ietd and
//! prints its report; fails when the verdict has anything to say.

use std::process::ExitCode;
use std::time::Duration;

use iet_tests::soak::{SoakConfig, run, summary, verdict};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help") {
        eprintln!("usage: iet-soak [--seconds N | --minutes N] [--sessions N] [--qd N] [--json]");
        return ExitCode::SUCCESS;
    }
    let seconds = arg(&args, "--minutes", 0u64) * 60;
    let seconds = if seconds > 0 {
        seconds
    } else {
        arg(&args, "--seconds", 60)
    };
    let cfg = SoakConfig {
        sessions: arg(&args, "--sessions", 256),
        duration: Duration::from_secs(seconds),
        qd: arg(&args, "--qd", 8),
    };
    let report = run(&cfg);
    println!("{}", summary(&report));
    if args.iter().any(|a| a == "--json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    let bad = verdict(&report);
    if bad.is_empty() {
        println!("soak passed");
        ExitCode::SUCCESS
    } else {
        for b in &bad {
            eprintln!("soak failed: {b}");
        }
        ExitCode::FAILURE
    }
}
