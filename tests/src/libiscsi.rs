//! Running libiscsi's command-line tools (Debian libiscsi-bin) and reading
//! iscsi-test-cu's CUnit summary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const INITIATOR_1: &str = "iqn.2026-11.io.iet:libiscsi-1";
pub const INITIATOR_2: &str = "iqn.2026-11.io.iet:libiscsi-2";

#[derive(Debug)]
pub struct ToolRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a tool with a time limit; panics if it is not installed.
pub fn run(program: &str, args: &[&str], limit: Duration) -> ToolRun {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} not runnable ({e}): install Debian's libiscsi-bin (cargo xtask test does)"));
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(out_pipe).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err_pipe).unwrap_or_default());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "{program} {args:?} did not finish within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    ToolRun {
        success: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}

/// CUnit's "Run Summary" counts for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CunitSummary {
    pub total: u32,
    pub ran: u32,
    pub passed: u32,
    pub failed: u32,
}

/// Parses the `tests` row of CUnit's run summary.
pub fn parse_summary(output: &str) -> Option<CunitSummary> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("tests") {
            return None;
        }
        let nums: Vec<u32> = words.take(4).filter_map(|w| w.parse().ok()).collect();
        (nums.len() == 4).then(|| CunitSummary {
            total: nums[0],
            ran: nums[1],
            passed: nums[2],
            failed: nums[3],
        })
    })
}

/// Names of the tests CUnit reported as failed.
pub fn failed_tests(output: &str) -> Vec<String> {
    let mut failed = Vec::new();
    let mut current = String::new();
    for line in output.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Test: ") {
            rest.split(" ...")
                .next()
                .unwrap_or(rest)
                .clone_into(&mut current);
        }
        if t.contains("...FAILED") || t.ends_with("FAILED") {
            failed.push(current.clone());
        }
    }
    failed.dedup();
    failed
}

/// Walks CUnit's output: `Suite: S` and `Test: T ...` lines name the test (`S.T`) that
/// the following log lines belong to.
fn per_test_lines(output: &str) -> impl Iterator<Item = (String, &str)> {
    let mut suite = String::new();
    let mut test = String::new();
    output.lines().map(move |line| {
        if let Some(rest) = line.trim_start().strip_prefix("Suite: ") {
            rest.trim().clone_into(&mut suite);
            test.clear();
        }
        if let Some(pos) = line.find("Test: ") {
            let rest = &line[pos + 6..];
            let name = rest.split(" ...").next().unwrap_or(rest).trim();
            test = format!("{suite}.{name}");
        }
        (test.clone(), line)
    })
}

/// Tests that logged `[SKIPPED]` (whole or in part), as `Suite.Test`, with the message.
pub fn skipped_tests(output: &str) -> Vec<(String, String)> {
    let mut skipped = Vec::new();
    for (test, line) in per_test_lines(output) {
        if let Some(pos) = line.find("[SKIPPED]") {
            let entry = (test, line[pos + 9..].trim().to_owned());
            if !skipped.contains(&entry) {
                skipped.push(entry);
            }
        }
    }
    skipped
}

/// Tests CUnit reported as passed, as `Suite.Test`.
pub fn passed_tests(output: &str) -> Vec<String> {
    let mut passed = Vec::new();
    for (test, line) in per_test_lines(output) {
        // CUnit prints "passed" after the test's own output; the next output may follow
        // on the same line.
        let t = line.trim();
        let marker = t.starts_with("passed") || t.ends_with("...passed");
        if marker && !test.is_empty() && !passed.contains(&test) {
            passed.push(test);
        }
    }
    passed
}

/// Runs iscsi-test-cu on `urls` for the test pattern and returns the
/// summary, printing it (and any failures) so CI logs show the counts.
pub fn test_cu(pattern: &str, urls: &[&str], limit: Duration) -> (CunitSummary, String) {
    test_cu_with(pattern, urls, limit, &[])
}

/// `test_cu` with extra iscsi-test-cu options (e.g. `-V`, which logs every `[SKIPPED]`).
pub fn test_cu_with(
    pattern: &str,
    urls: &[&str],
    limit: Duration,
    extra: &[&str],
) -> (CunitSummary, String) {
    let mut args = extra.to_vec();
    args.extend_from_slice(&[
        "--dataloss",
        "-i",
        INITIATOR_1,
        "-I",
        INITIATOR_2,
        "-t",
        pattern,
    ]);
    args.extend_from_slice(urls);
    let run = run("iscsi-test-cu", &args, limit);
    let all = format!("{}\n{}", run.stdout, run.stderr);
    let summary = parse_summary(&all).unwrap_or_else(|| panic!("no CUnit summary in:\n{all}"));
    println!(
        "iscsi-test-cu {pattern}: {} tests, {} ran, {} passed, {} failed",
        summary.total, summary.ran, summary.passed, summary.failed
    );
    if summary.failed > 0 {
        println!("failed: {:?}", failed_tests(&all));
    }
    (summary, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_skips_and_passes_per_test() {
        let out = "Suite: A\n  Test: One ...passed\nSuite: B\n  Test: Two ...    [SKIPPED] no B\n    more\n    [SKIPPED] no B\npassed    next\n  Test: Three ...\n    [SKIPPED] no C\nFAILED\n";
        assert_eq!(
            skipped_tests(out),
            vec![
                ("B.Two".to_owned(), "no B".to_owned()),
                ("B.Three".to_owned(), "no C".to_owned())
            ]
        );
        assert_eq!(passed_tests(out), vec!["A.One", "B.Two"]);
    }

    #[test]
    fn parses_cunit_summary() {
        let out = "Run Summary:    Type  Total    Ran Passed Failed Inactive\n              suites      4      4    n/a      0        0\n               tests     15     15     13      2        0\n             asserts    100    100     98      2      n/a\n";
        assert_eq!(
            parse_summary(out),
            Some(CunitSummary {
                total: 15,
                ran: 15,
                passed: 13,
                failed: 2
            })
        );
    }
}
