//! The official MCP conformance suite's server scenarios and the Python
//! SDK's strict schema check of every tool, against a real `roost serve`:
//! `scripts/mcp-conformance` installs them (npm, PyPI) and runs both.
//!
//! Skipped, saying so, only where npm or Python's venv is not installed
//! (`scripts/install-test-deps` installs them); `ROOST_REQUIRE_CONFORMANCE=1`
//! makes that a failure instead.

use std::process::{Command, Stdio};

/// Whether `program args` runs and succeeds.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

#[test]
fn the_official_conformance_suite_and_the_python_sdk_accept_roost() {
    if !(runs("npm", &["--version"]) && runs("python3", &["-c", "import venv, ensurepip"])) {
        let why = "the MCP conformance check needs npm and python3 with venv: run ./scripts/install-test-deps";
        if std::env::var("ROOST_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
            panic!("ROOST_REQUIRE_CONFORMANCE=1 but {why}");
        }
        eprintln!("SKIPPED {why}");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mcp-conformance");
    let out = Command::new(script).env("ROOST_BIN", env!("CARGO_BIN_EXE_roost")).output().expect("running the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "scripts/mcp-conformance failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("mcp schema check: 0 failures"), "{stdout}");
}
