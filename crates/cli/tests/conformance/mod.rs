//! Running a conformance script of `scripts/` against this build's `roost`,
//! for the tests that check Roost with other projects' tools.

use std::process::{Command, Stdio};

/// Whether `program args` runs and succeeds.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs `scripts/SCRIPT` with `ROOST_BIN` set to this build's `roost` and
/// returns what it printed, once it succeeded. Where its tools cannot be
/// installed (`ready` is false) it is skipped, saying `why`, unless
/// `ROOST_REQUIRE_CONFORMANCE=1` makes that a failure.
pub fn run_script(script: &str, ready: bool, why: &str) -> Option<String> {
    if !ready {
        if std::env::var("ROOST_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
            panic!("ROOST_REQUIRE_CONFORMANCE=1 but {why}");
        }
        eprintln!("SKIPPED {why}");
        return None;
    }
    let path = format!("{}/../../scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(path).env("ROOST_BIN", env!("CARGO_BIN_EXE_roost")).output().expect("running the script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(out.status.success(), "scripts/{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Some(stdout)
}
