//! Running Roost as a service, and the command line around it:
//! `roost service` with the service manager it calls, `roost serve` telling
//! that manager it is ready and well, `roost config check`, shell
//! completions and the manual page.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{listening_address, roost, roost_bin, signal, succeeded};

/// A stand-in `systemctl` that records its arguments and says `active`.
fn fake_systemctl(bin: &Path, calls: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    let script =
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n[ \"$2\" = is-active ] && echo active\nexit 0\n", calls.display());
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn service(home: &Path, config: &Path, bin: &Path, action: &str) -> std::process::Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(roost_bin())
        .arg("--home")
        .arg(home)
        .args(["service", action])
        .env("XDG_CONFIG_HOME", config)
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn service_install_writes_a_notify_unit_and_asks_systemd_to_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "Home Server"]));
    let (config, bin, calls) = (dir.path().join("config"), dir.path().join("bin"), dir.path().join("calls"));
    fake_systemctl(&bin, &calls);

    let said = succeeded(service(&home, &config, &bin, "install"));
    let unit = config.join("systemd/user/roost-home-server.service");
    assert!(said.contains(&unit.display().to_string()), "{said}");
    let text = std::fs::read_to_string(&unit).unwrap();
    let home = std::fs::canonicalize(&home).unwrap();
    for line in [
        "Type=notify".to_string(),
        "WatchdogSec=30".to_string(),
        "Restart=on-failure".to_string(),
        format!(
            "ExecStart=\"{}\" --home \"{}\" serve",
            std::fs::canonicalize(roost_bin()).unwrap().display(),
            home.display()
        ),
        "WantedBy=default.target".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
    }
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "--user daemon-reload\n--user enable --now roost-home-server.service\n"
    );

    let status = succeeded(service(&home, &config, &bin, "status"));
    assert!(status.contains("active"), "{status}");
    succeeded(service(&home, &config, &bin, "uninstall"));
    assert!(!unit.exists());
    assert!(std::fs::read_to_string(&calls).unwrap().contains("--user disable --now roost-home-server.service\n"));
    let gone = service(&home, &config, &bin, "uninstall");
    assert!(!gone.status.success(), "nothing left to uninstall");

    // Without a service manager, the unit is written and the error says what to run.
    let none = dir.path().join("empty-bin");
    std::fs::create_dir_all(&none).unwrap();
    let out = Command::new(roost_bin())
        .arg("--home")
        .arg(&home)
        .args(["service", "install"])
        .env("XDG_CONFIG_HOME", &config)
        .env("PATH", &none)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("run `systemctl --user daemon-reload` yourself"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "{error}");
    assert!(unit.exists());
}

#[test]
fn serve_tells_the_service_manager_it_is_ready_well_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let manager = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&manager).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut child = Command::new(roost_bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--name", "svc", "--home"])
        .arg(&home)
        .env("NOTIFY_SOCKET", &manager)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let mut buffer = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains(&addr), "{ready:?}");
    let started = Instant::now();
    let beats = (0..3).map(|_| next()).collect::<Vec<_>>();
    assert!(beats.iter().all(|b| b == "WATCHDOG=1"), "{beats:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "beats at half of 400 ms");
    signal(&child, "TERM");
    let stopping = (0..20).map(|_| next()).find(|m| m != "WATCHDOG=1");
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn config_check_names_the_line_of_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "home"]));
    let said = succeeded(roost(&home, &["config", "check"]));
    assert!(said.ends_with("config.toml is valid\n"), "{said}");

    let config = home.join("config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = roost(&home, &["config", "check"]);
        assert!(!out.status.success(), "{text}");
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    let unknown = check(&format!("{good}\n[gateway2]\nbind = \"x\"\n"));
    assert!(unknown.contains("unknown field") && unknown.contains("line"), "{unknown}");
    let federation = good.lines().position(|l| l.trim() == "[federation]").unwrap();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    let peer_tools = lines.iter().position(|l| l.starts_with("peer_tools")).unwrap_or_else(|| {
        lines.insert(federation + 1, String::new());
        federation + 1
    });
    lines[peer_tools] = "peer_tools = [\"roost_search_memories\",\n  \"roost_delete_everything\"]".into();
    let tools = check(&lines.join("\n"));
    assert!(tools.contains("roost_delete_everything") && tools.contains("no Roost tool"), "{tools}");
    assert!(tools.contains(&format!("(line {})", peer_tools + 2)), "{tools}");
    assert_eq!(tools.lines().count(), 1, "{tools}");
}

#[test]
fn completions_and_the_manual_page_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for shell in ["bash", "zsh", "fish"] {
        let script = succeeded(roost(&home, &["completions", shell]));
        for command in ["serve", "import", "backup", "restore", "service", "completions"] {
            assert!(script.contains(command), "{shell} completions lack {command}");
        }
    }
    let man = succeeded(roost(&home, &["manpage"]));
    assert!(man.contains(".TH roost 1"), "{}", &man[..200.min(man.len())]);
    assert!(man.contains("backup") && man.contains("restore"));
    let bad = roost(&home, &["completions", "tcsh"]);
    assert!(!bad.status.success());
}

#[test]
fn json_logs_are_one_object_a_line_with_a_span_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut child = Command::new(roost_bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--name", "logs", "--log-format", "json", "--home"])
        .arg(&home)
        .env("RUST_LOG", "info,tower_http=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    assert!(common::get_json(&addr, "/health?secret=hunter2").is_some());
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l:?}"))).collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "gateway started"), "{log}");
    let request = lines
        .iter()
        .find(|l| l["span"]["name"] == "request" && l["span"]["path"] == "/health")
        .unwrap_or_else(|| panic!("no line inside the request's span: {log}"));
    assert_eq!(request["span"]["method"], "GET");
    assert!(!log.contains("hunter2"), "the query is never logged: {log}");
}
