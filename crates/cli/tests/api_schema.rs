//! Schemathesis against a real `roost serve`: every operation of the served
//! OpenAPI document is exercised with generated requests, and every answer
//! must be declared by the document and match its schema, with no 5xx.
//! `scripts/api-schema-check` installs schemathesis (PyPI) and runs it.
//!
//! Skipped, saying so, only where Python's venv is not installed
//! (`scripts/install-test-deps` installs it); `ROOST_REQUIRE_CONFORMANCE=1`
//! makes that a failure instead.

mod conformance;

#[test]
fn every_answer_of_the_api_matches_its_openapi_document() {
    let ready = conformance::runs("python3", &["-c", "import venv, ensurepip"]);
    let why = "the API schema check needs python3 with venv: run ./scripts/install-test-deps";
    let Some(stdout) = conformance::run_script("api-schema-check", ready, why) else { return };
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
