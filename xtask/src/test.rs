//! `cargo xtask test`: prerequisites and test tools, formatting, clippy,
//! then every test in the workspace (end-to-end tests need the binaries).

use std::process::Command;

use anyhow::Context;

use crate::prereq::{self, run, step};

pub fn test(args: &[String]) -> anyhow::Result<()> {
    prereq::for_test()?;
    let root = crate::root();
    let cargo = || {
        let mut c = Command::new(prereq::cargo());
        c.current_dir(&root);
        c
    };
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("cargo clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Licences, banned crates and sources of every dependency (deny.toml).
    step("cargo deny check licenses bans sources");
    prereq::cargo_deny()?;
    run(cargo().args(["deny", "check", "licenses", "bans", "sources"]))?;
    step("building binaries");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    step("cargo test");
    let (passed, failed) = run_counting(cargo().args(["test", "--workspace"]).args(args))?;
    if failed == 0 {
        // A short benchmark run, no thresholds, so the harness cannot rot.
        step("benchmark smoke run (cargo xtask bench --smoke)");
        crate::bench::bench(&["--smoke".to_owned()])?;
        // Every fuzz target for a few seconds from its seeds, after the
        // committed crash inputs: a crash fails the run.
        step("fuzz smoke run (cargo xtask fuzz --smoke)");
        crate::fuzz::smoke()?;
    }
    // One closing line with the totals of every test binary.
    println!("\ntests: {passed} passed, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} test(s) failed");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and sums its `test result:` lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = result_counts(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        anyhow::bail!("cargo test failed: {status}");
    }
    Ok((passed, failed))
}

/// `test result: ok. 17 passed; 1 failed; ...` -> (17, 1).
fn result_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(['.', ';'])
            .find_map(|part| part.trim().strip_suffix(word)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((count("passed"), count("failed")))
}

#[cfg(test)]
mod tests {
    use super::result_counts;

    #[test]
    fn reads_cargo_test_result_lines() {
        let line = "test result: FAILED. 15 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 4.30s";
        assert_eq!(result_counts(line), Some((15, 2)));
        assert_eq!(result_counts("running 3 tests"), None);
    }
}
