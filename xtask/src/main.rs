//! `cargo xtask run|build|test|bench|fuzz|soak|image|ceph`: one module per command, all
//! sharing the prerequisite step that installs what a fresh machine lacks.

mod bench;
mod build;
mod ceph;
mod fuzz;
mod image;
mod prereq;
mod run;
mod soak;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Build, run and test iet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build everything, then start ietd (with no arguments: the embedded default target).
    Run {
        /// Arguments passed to ietd verbatim.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install prerequisites and build the eBPF object and release binaries.
    Build,
    /// Install prerequisites and test tools, then lint and run every test.
    Test {
        /// Passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the container image iet:latest locally (no registry needed).
    Image(image::ImageArgs),
    /// Soak: many sessions of mixed I/O with disconnects, LUN resets and NOP timeouts.
    Soak {
        /// `--minutes N` (1), `--sessions N` (256), `--qd N` (8), `--json`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run each fuzz target for a while (cargo-fuzz, libFuzzer).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Minutes per target (overrides --seconds).
        #[arg(long)]
        minutes: Option<u32>,
        /// The CI pass: a short run of every target from its seeds only.
        #[arg(long)]
        smoke: bool,
        /// Only this target (repeatable).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// A one-node Ceph cluster for RBD LUNs (state under target/ceph).
    Ceph {
        #[command(subcommand)]
        action: ceph::Action,
        /// Directory holding the cluster's configuration, data, logs and pid files.
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
    },
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { args } => run::run(&args),
        Command::Build => build::build(),
        Command::Test { args } => test::test(&args),
        Command::Bench { args } => bench::bench(&args),
        Command::Ceph { action, dir } => ceph::ceph(&action, dir),
        Command::Image(args) => image::image(&args),
        Command::Soak { args } => soak::soak(&args),
        Command::Fuzz {
            seconds,
            minutes,
            smoke,
            targets,
        } => fuzz::fuzz(&fuzz::FuzzOptions {
            seconds: match (smoke, minutes) {
                (true, None) => fuzz::SMOKE_SECONDS,
                (_, Some(m)) => m.saturating_mul(60),
                (false, None) => seconds,
            },
            smoke,
            targets,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
