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

/// Runs argv[1:] on a pseudo-terminal of 120 by 40, answering the cursor
/// position queries a terminal answers; prints what it drew, exits as it did.
const ON_A_TERMINAL: &str = r#"import fcntl, os, pty, select, struct, sys, termios
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    ready, _, _ = select.select([fd], [], [], 1)
    if not ready:
        continue
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    out += data
    if b"\x1b[6n" in data:
        os.write(fd, b"\x1b[1;1R")
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// The screen a 120 by 40 terminal shows after `drawn`: characters placed
/// at the cursor, which moves by `CSI row;col H`, carriage returns and line
/// feeds (scrolling at the bottom); other control sequences change nothing
/// the test reads. One string per row.
fn screen_after(drawn: &str) -> Vec<String> {
    const ROWS: usize = 40;
    const COLS: usize = 120;
    let mut screen = vec![vec![' '; COLS]; ROWS];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = drawn.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut params = String::new();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        if c == 'H' {
                            let mut at = params.split(';').map(|p| p.parse::<usize>().unwrap_or(1).max(1));
                            row = (at.next().unwrap_or(1) - 1).min(ROWS - 1);
                            col = (at.next().unwrap_or(1) - 1).min(COLS - 1);
                        }
                        break;
                    }
                    params.push(c);
                }
            }
            '\r' => col = 0,
            '\n' if row + 1 == ROWS => {
                screen.remove(0);
                screen.push(vec![' '; COLS]);
            }
            '\n' => row += 1,
            c if c.is_control() => {}
            c => {
                if col < COLS {
                    screen[row][col] = c;
                }
                col += 1;
            }
        }
    }
    screen.into_iter().map(|r| r.into_iter().collect::<String>().trim_end().to_string()).collect()
}

#[test]
fn on_a_terminal_the_demo_draws_its_live_view_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args(["-c", ON_A_TERMINAL])
        .arg(roost_bin())
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{drawn}\n{}", String::from_utf8_lossy(&out.stderr));
    // Drawn in place by cursor moves, not printed line after line.
    assert!(drawn.matches("\x1b[").count() > 100, "no live view was drawn: {drawn}");
    assert!(drawn.contains('⠋'), "no step was shown running");
    // The last frame stays on the screen: the three machines, the one
    // killed, and every step held, then the closing line.
    let screen = screen_after(&drawn).join("\n");
    for shown in ["roost demo: three machines on this one", "MACHINE", "GATEWAY", "ROLE", "killed (-9)", "steps"] {
        assert!(screen.contains(shown), "the last frame does not show {shown:?}:\n{screen}");
    }
    let held = screen.lines().filter(|l| l.trim_start_matches('│').starts_with("ok ")).count();
    assert_eq!(held, 5, "not every step is shown held:\n{screen}");
    let rows = |state: &str| screen.lines().filter(|l| l.contains(state)).count();
    assert_eq!((rows("killed (-9)"), rows("serving")), (1, 2), "{screen}");
    assert!(!screen.contains("FAIL"), "{screen}");
    let last = screen.lines().rfind(|l| !l.is_empty()).unwrap_or_default();
    assert!(last.starts_with("every step held"), "the closing line is not below the view:\n{screen}");
    assert!(left_in(tmp.path()).is_empty(), "homes left behind: {:?}", left_in(tmp.path()));
    assert!(running_under(tmp.path()).is_empty(), "still running: {:?}", running_under(tmp.path()));
}
