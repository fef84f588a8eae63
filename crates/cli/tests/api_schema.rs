//! Schemathesis against a real `roost serve`: every operation of the served
//! OpenAPI document is exercised with generated requests, and every answer
//! must be declared by the document and match its schema, with no 5xx.
//! `scripts/api-schema-check` installs schemathesis (PyPI) and runs it.
//!
//! Skipped, saying so, only where Python's venv is not installed
//! (`scripts/install-test-deps` installs it); `ROOST_REQUIRE_CONFORMANCE=1`
//! makes that a failure instead.

use std::process::{Command, Stdio};

#[test]
fn every_answer_of_the_api_matches_its_openapi_document() {
    let venv = Command::new("python3").args(["-c", "import venv, ensurepip"]).stderr(Stdio::null()).status();
    if !venv.is_ok_and(|s| s.success()) {
        let why = "the API schema check needs python3 with venv: run ./scripts/install-test-deps";
        if std::env::var("ROOST_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
            panic!("ROOST_REQUIRE_CONFORMANCE=1 but {why}");
        }
        eprintln!("SKIPPED {why}");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/api-schema-check");
    let out = Command::new(script).env("ROOST_BIN", env!("CARGO_BIN_EXE_roost")).output().expect("running the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "scripts/api-schema-check failed:\n{stdout}\n{stderr}");
    // Every operation was selected and tested, and cases ran.
    let line = |label: &str| {
        stdout.lines().find_map(|l| l.trim().strip_prefix(label)).map(str::trim).unwrap_or_default().to_string()
    };
    let selected = line("Selected:");
    let (tested, total) = selected.split_once('/').unwrap_or_else(|| panic!("no Selected line:\n{stdout}"));
    assert_eq!(tested, total, "not every operation was selected:\n{stdout}");
    assert!(total.parse::<u32>().is_ok_and(|n| n >= 20), "the document lists {total} operations");
    assert_eq!(line("Tested:"), total, "not every operation was tested:\n{stdout}");
    let cases = stdout.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
    assert!(cases.contains(" passed") && !cases.contains("fail"), "{cases}");
}
