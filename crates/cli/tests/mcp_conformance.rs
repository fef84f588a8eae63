//! The official MCP conformance suite's server scenarios and the Python
//! SDK's strict schema check of every tool, against a real `roost serve`:
//! `scripts/mcp-conformance` installs them (npm, PyPI) and runs both.
//!
//! Skipped, saying so, only where npm or Python's venv is not installed
//! (`scripts/install-test-deps` installs them); `ROOST_REQUIRE_CONFORMANCE=1`
//! makes that a failure instead.

mod conformance;

#[test]
fn the_official_conformance_suite_and_the_python_sdk_accept_roost() {
    let ready =
        conformance::runs("npm", &["--version"]) && conformance::runs("python3", &["-c", "import venv, ensurepip"]);
    let why = "the MCP conformance check needs npm and python3 with venv: run ./scripts/install-test-deps";
    let Some(stdout) = conformance::run_script("mcp-conformance", ready, why) else { return };
    assert!(stdout.contains("mcp schema check: 0 failures"), "{stdout}");
}
