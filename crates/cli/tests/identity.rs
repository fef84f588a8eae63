//! Identity, pairing, the registry and machine tokens, through real `roost`
//! processes on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Served, add, content, roost, roost_bin, until};
use serde_json::Value;

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "roost failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `roost pair` in the background; its stdout lines arrive on the channel.
fn start_pairing(home: &Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child =
        Command::new(roost_bin()).arg("--home").arg(home).arg("pair").stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn next_line_with(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

fn offer_code(home: &Path) -> String {
    let out = roost(home, &["pair", "--no-wait"]);
    let text = stdout(&out);
    text.split("pairing code: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
}

fn sas_of(line: &str) -> String {
    line.split("sas: ").nth(1).unwrap().split("   ").next().unwrap().to_string()
}

fn join(home: &Path, addr: &str, code: &str) -> std::process::Output {
    roost(home, &["join", &format!("http://{addr}"), "--code", code, "--yes", "--name", "joiner"])
}

#[test]
fn pair_and_join_as_a_person_would() {
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = Served::start(&home_a);
    let b = Served::start(&home_b);
    let before = json_of(&roost(&home_b, &["whoami", "--json"]));

    let (mut pairing, lines) = start_pairing(&home_a);
    let code_line = next_line_with(&lines, "pairing code: ");
    let code = code_line.split("pairing code: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let hint = next_line_with(&lines, "roost join");
    assert!(hint.contains(&a.addr), "pair names the running gateway's address: {hint}");

    let joined = join(&home_b, &a.addr, &code);
    assert!(joined.status.success(), "{}", stderr(&joined));
    let joiner_sas = sas_of(&stdout(&joined));
    let chain_sas = sas_of(&next_line_with(&lines, "sas: "));
    assert_eq!(joiner_sas, chain_sas, "both sides show the same short authentication string");
    assert_eq!(joiner_sas.split(' ').count(), 4);
    next_line_with(&lines, "paired with");
    assert!(pairing.wait().unwrap().success());

    let who_a = json_of(&roost(&home_a, &["whoami", "--json"]));
    let who_b = json_of(&roost(&home_b, &["whoami", "--json"]));
    assert_eq!(who_a["roost_id"], who_b["roost_id"], "one identity on both machines");
    assert_ne!(before["roost_id"], who_b["roost_id"]);
    assert_eq!(who_b["role"], "satellite");
    assert_eq!(who_b["certificate_valid"], true);
    assert_eq!(who_b["instance_id"], before["instance_id"], "joining keeps the machine's own id and keys");

    let machines_a = json_of(&roost(&home_a, &["machines", "--json"]));
    let machines_b = json_of(&roost(&home_b, &["instances", "--json"]));
    let ids =
        |v: &Value| v.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(ids(&machines_a).contains(&who_b["instance_id"].as_str().unwrap().to_string()));
    assert!(ids(&machines_b).contains(&who_a["instance_id"].as_str().unwrap().to_string()));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(home_a.join("instances.json")).unwrap()).unwrap();
    assert_eq!(ids(&file), ids(&machines_a), "instances.json matches the registry");

    // A knows where B listens from the join itself, and B's running gateway
    // took the new identity without a restart: the two replicate.
    let entry_b = machines_a.as_array().unwrap().iter().find(|m| m["id"] == who_b["instance_id"]).unwrap().clone();
    let b_url = Value::String(format!("http://{}", b.addr));
    assert!(entry_b["addresses"].as_array().unwrap().contains(&b_url), "{entry_b}");
    let served_cert = b.get("/api/v1/certificate").expect("b answers");
    assert_eq!(served_cert["roost_id"], who_a["roost_id"], "b's gateway presents the new certificate");
    let id = add(&home_a, "written on a after the join");
    until("b has a's memory", || content(&home_b, &id).is_some());

    // The code is spent.
    let again = join(&dir.path().join("c"), &a.addr, &code);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already used"), "{}", stderr(&again));

    // A machine already in the registry cannot join again under the same id.
    let second = offer_code(&home_a);
    let rejoin = roost(&home_b, &["join", &format!("http://{}", a.addr), "--code", &second, "--yes", "--force"]);
    assert!(stderr(&rejoin).contains("already registered"), "{}", stderr(&rejoin));
}

#[test]
fn a_wrong_code_three_times_locks_it_and_an_expired_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home_a = dir.path().join("a");
    let a = Served::start(&home_a);
    let code = offer_code(&home_a);
    let (words, number) = code.rsplit_once('-').unwrap();
    let wrong = format!("{words}-{:04}", (number.parse::<u32>().unwrap() + 1) % 10_000);
    for _ in 0..3 {
        let out = join(&dir.path().join("c"), &a.addr, &wrong);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("pairing code is wrong"), "{}", stderr(&out));
    }
    let out = join(&dir.path().join("c"), &a.addr, &code);
    assert!(stderr(&out).contains("locked"), "even the right code is refused now: {}", stderr(&out));

    let code = offer_code(&home_a);
    let path = home_a.join("pairing.json");
    let mut offer: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    offer["expires_at"] = Value::from(offer["expires_at"].as_i64().unwrap() - 121);
    std::fs::write(&path, offer.to_string()).unwrap();
    let out = join(&dir.path().join("d"), &a.addr, &code);
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    let who_d = json_of(&roost(&dir.path().join("d"), &["whoami", "--json"]));
    assert_ne!(who_d["roost_id"], json_of(&roost(&home_a, &["whoami", "--json"]))["roost_id"]);
}

#[test]
fn a_machine_of_another_identity_cannot_be_registered() {
    let dir = tempfile::tempdir().unwrap();
    let home_a = dir.path().join("a");
    assert!(roost(&home_a, &["init", "--name", "a"]).status.success());
    let other = Served::start(&dir.path().join("other"));
    let out = roost(&home_a, &["instance", "register", &format!("http://{}", other.addr)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("another identity"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
    assert_eq!(json_of(&roost(&home_a, &["machines", "--json"])).as_array().unwrap().len(), 1);
}

#[test]
fn export_and_import_round_trip_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let home_a = dir.path().join("a");
    assert!(roost(&home_a, &["init", "--name", "a"]).status.success());
    let file = dir.path().join("identity.txt");
    let export = |pass: &str, out: &Path| {
        Command::new(roost_bin())
            .arg("--home")
            .arg(&home_a)
            .args(["identity", "export", "--out"])
            .arg(out)
            .env("ROOST_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    let short = export("too short", &dir.path().join("short.txt"));
    assert!(stderr(&short).contains("at least 12"), "{}", stderr(&short));
    assert!(!dir.path().join("short.txt").exists());
    assert!(export("correct horse battery", &file).status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let roost_id = json_of(&roost(&home_a, &["whoami", "--json"]))["roost_id"].as_str().unwrap().to_string();
    assert!(text.contains(&roost_id), "the Roost ID is readable outside the ciphertext");

    let import = |home: &Path, path: &Path, pass: &str, extra: &[&str]| {
        Command::new(roost_bin())
            .arg("--home")
            .arg(home)
            .args(["identity", "import"])
            .arg(path)
            .args(extra)
            .env("ROOST_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    let fresh = dir.path().join("fresh");
    let wrong = import(&fresh, &file, "wrong horse battery", &[]);
    assert!(stderr(&wrong).contains("wrong passphrase"), "{}", stderr(&wrong));
    assert!(!fresh.exists(), "a failed import writes nothing");
    let truncated = dir.path().join("truncated.txt");
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let out = import(&fresh, &truncated, "correct horse battery", &[]);
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    let tampered = dir.path().join("tampered.txt");
    let body_start = text.find("\n\n").unwrap() + 2;
    let mut bytes = text.clone().into_bytes();
    bytes[body_start + 3] = if bytes[body_start + 3] == b'A' { b'B' } else { b'A' };
    std::fs::write(&tampered, bytes).unwrap();
    let out = import(&fresh, &tampered, "correct horse battery", &[]);
    assert!(!out.status.success() && !fresh.exists(), "{}", stderr(&out));

    let ok = import(&fresh, &file, "correct horse battery", &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(json_of(&roost(&fresh, &["whoami", "--json"]))["roost_id"], Value::String(roost_id.clone()));

    let other = dir.path().join("other");
    assert!(roost(&other, &["init", "--name", "other"]).status.success());
    let before = json_of(&roost(&other, &["whoami", "--json"]))["roost_id"].clone();
    let refused = import(&other, &file, "correct horse battery", &[]);
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(json_of(&roost(&other, &["whoami", "--json"]))["roost_id"], before);
    assert!(import(&other, &file, "correct horse battery", &["--force"]).status.success());
    assert_eq!(json_of(&roost(&other, &["whoami", "--json"]))["roost_id"], Value::String(roost_id));
}

#[test]
fn leaving_refuses_the_last_home_and_revokes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    assert!(roost(&home, &["init", "--name", "a"]).status.success());
    let out = roost(&home, &["leave"]);
    assert!(stderr(&out).contains("last home"), "{}", stderr(&out));
    assert!(roost(&home, &["leave", "--force"]).status.success());
    let who = json_of(&roost(&home, &["whoami", "--json"]));
    assert_eq!(who["holds_seed"], false);
    let machines = json_of(&roost(&home, &["machines", "--json"]));
    assert_eq!(machines[0]["status"], "revoked");
    assert!(stderr(&roost(&home, &["pair", "--no-wait"])).contains("left its chain"));
}

#[test]
fn a_passphrase_protected_seed_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    assert!(roost(&home, &["init", "--name", "a"]).status.success());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(roost_bin());
        c.arg("--home").arg(&home).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    assert!(run(&["identity", "protect"], &[("ROOST_PASSPHRASE", "seed passphrase 1")]).status.success());
    let sealed = std::fs::read(home.join("keys/seed.sealed")).unwrap();
    assert!(sealed.starts_with(b"RSP1"));
    let locked = json_of(&run(&["whoami", "--json"], &[]));
    assert_eq!(locked["holds_seed"], false, "without the passphrase the seed stays sealed");
    assert_eq!(locked["certificate_valid"], true, "the machine still knows who it is");
    let pair = run(&["pair", "--no-wait"], &[]);
    assert!(stderr(&pair).contains("ROOST_SEED_PASSPHRASE"), "{}", stderr(&pair));
    let wrong = run(&["whoami"], &[("ROOST_SEED_PASSPHRASE", "not the passphrase")]);
    assert!(stderr(&wrong).contains("does not open the seed"), "{}", stderr(&wrong));
    let unlocked = json_of(&run(&["whoami", "--json"], &[("ROOST_SEED_PASSPHRASE", "seed passphrase 1")]));
    assert_eq!(unlocked["holds_seed"], true);
    assert!(run(&["identity", "unprotect"], &[("ROOST_SEED_PASSPHRASE", "seed passphrase 1")]).status.success());
    assert_eq!(json_of(&run(&["whoami", "--json"], &[]))["holds_seed"], true);
}

/// A session bus with an unlocked Secret Service (gnome-keyring) of its own,
/// under a home of its own; both stop on drop. `None` when the tools are
/// not installed (`scripts/install-test-deps` installs them).
struct SecretService {
    bus: String,
    home: tempfile::TempDir,
    daemon: std::process::Child,
}

impl SecretService {
    fn start() -> Option<SecretService> {
        let installed = |tool: &str| Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().ok();
        if ["dbus-daemon", "gnome-keyring-daemon", "secret-tool"]
            .iter()
            .any(|tool| !installed(tool).is_some_and(|o| o.status.success()))
        {
            eprintln!("skipping: dbus-daemon, gnome-keyring-daemon or secret-tool is not installed");
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let service = SecretService { bus: line.trim().to_string(), home, daemon };
        let mut keyring = service
            .command("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--daemonize"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut keyring.stdin.take().unwrap(), b"keyring password").unwrap();
        assert!(keyring.wait().unwrap().success(), "gnome-keyring-daemon did not start");
        Some(service)
    }

    /// `program` in this session: its bus and its home.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("DBUS_SESSION_BUS_ADDRESS", &self.bus).env("HOME", self.home.path());
        command
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn the_local_key_moves_into_the_os_keyring_and_back() {
    let Some(session) = SecretService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    let run = |args: &[&str]| {
        let mut roost = session.command(roost_bin());
        roost.arg("--home").arg(&home).args(args).output().unwrap()
    };
    assert!(run(&["init", "--name", "a"]).status.success());
    let id =
        json_of(&run(&["memory", "add", "sealed under the moved key", "--json"]))["id"].as_str().unwrap().to_string();
    let before = json_of(&run(&["whoami", "--json"]));
    let instance = before["instance_id"].as_str().unwrap().to_string();
    let in_keyring = || {
        let mut lookup = session.command("secret-tool");
        lookup.args(["lookup", "service", "roost", "instance", &instance]).output().unwrap()
    };

    let moved = run(&["identity", "keyring"]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    assert!(!home.join("keys/seed.kek").exists(), "the key file stays on disk");
    assert_eq!(in_keyring().stdout.len(), 64, "the keyring holds the key as hex");
    // Everything sealed under it still opens: the machine keys, the seed.
    let after = json_of(&run(&["whoami", "--json"]));
    assert_eq!(
        (after["signing_key"].clone(), after["holds_seed"].clone()),
        (before["signing_key"].clone(), true.into())
    );
    assert!(run(&["memory", "get", &id]).status.success());
    // Without the keyring, roost says so in one line and changes nothing.
    let locked = Command::new(roost_bin())
        .arg("--home")
        .arg(&home)
        .args(["whoami"])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .unwrap();
    assert!(!locked.status.success());
    assert!(stderr(&locked).starts_with("roost: error: keyring: secret-tool failed"), "{}", stderr(&locked));
    assert_eq!(stderr(&locked).trim().lines().count(), 1, "{}", stderr(&locked));

    let back = run(&["identity", "keyring", "--off"]);
    assert!(back.status.success(), "{}", stderr(&back));
    assert!(home.join("keys/seed.kek").exists());
    assert!(!in_keyring().status.success(), "the keyring still holds the key");
    let plain = Command::new(roost_bin()).arg("--home").arg(&home).args(["whoami", "--json"]).output().unwrap();
    assert_eq!(json_of(&plain)["holds_seed"], true, "the key file alone opens everything again");
}

#[test]
fn a_machine_joining_after_a_revocation_takes_the_rotated_identity_and_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let (homes, served) = common::chain(dir.path(), &["a", "b"]);
    let roost_id = |home: &Path| json_of(&roost(home, &["whoami", "--json"]))["roost_id"].as_str().unwrap().to_string();
    let first = roost_id(&homes[0]);
    let revoked = roost(&homes[0], &["instance", "revoke", "b"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains("Roost ID is now"), "{}", stdout(&revoked));
    let rotated = roost_id(&homes[0]);
    assert_ne!(rotated, first);

    let c = dir.path().join("c");
    assert!(roost(&c, &["init", "--name", "c"]).status.success());
    let _c = Served::start(&c);
    common::join(&c, &homes[0], &served[0]);
    let joined = json_of(&roost(&c, &["whoami", "--json"]));
    assert_eq!(joined["roost_id"], rotated.as_str());
    assert_eq!(joined["earlier_roost_ids"][0]["roost_id"], first.as_str(), "{joined}");
    // Its votes go under the chain's first Roost ID, as a's do.
    until("c in a's voters", || {
        let listed = json_of(&roost(&homes[0], &["machines", "--json"]));
        listed.as_array().into_iter().flatten().any(|m| m["name"] == "c" && m["role"] == "standby")
    });
}
