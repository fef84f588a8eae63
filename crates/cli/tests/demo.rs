//! `roost demo --script` as CI runs it, and Ctrl-C in the middle of a demo:
//! either way, no machine keeps running and no home is left behind.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{roost_bin, signal, until};

/// The processes whose command line names `dir`.
fn running_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(cmdline);
        }
    }
    found
}

fn left_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn the_scripted_demo_holds_every_step_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(roost_bin()).args(["demo", "--script"]).env("TMPDIR", tmp.path()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<&str> = said.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(steps.len(), 5, "{said}");
    assert!(said.contains("laptop joined with") && said.contains("pi joined with"), "{said}");
    assert!(said.contains("held by laptop after") && said.contains("pi after"), "{said}");
    assert!(said.contains("laptop answered (1 found"), "the laptop's own memory, found from home: {said}");
    assert!(said.contains("a message said on"), "{said}");
    assert!(!said.contains("FAIL"), "{said}");
    assert!(left_in(tmp.path()).is_empty(), "homes left behind: {:?}", left_in(tmp.path()));
    assert!(running_under(tmp.path()).is_empty(), "still running: {:?}", running_under(tmp.path()));
}

#[test]
fn ctrl_c_stops_every_machine_and_removes_every_home() {
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Command::new(roost_bin())
        .args(["demo", "--script"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("ok    three machines"), "{first}");
    let serving = running_under(tmp.path()).iter().filter(|c| c.contains(" serve ")).count();
    assert_eq!(serving, 3, "three machines run: {:?}", running_under(tmp.path()));
    signal(&demo, "INT");
    let status = demo.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    until("every machine is gone", || running_under(tmp.path()).is_empty());
    assert!(left_in(tmp.path()).is_empty(), "homes left behind: {:?}", left_in(tmp.path()));
}
