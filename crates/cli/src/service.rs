//! `roost service install|uninstall|status`: `roost serve` run by the
//! platform's service manager for this user, started at login and again
//! after a failure. On Linux a systemd user unit (`Type=notify`, with a
//! watchdog: see `notify`), its logs in the journal; on macOS a launchd
//! agent, its logs in `~/Library/Logs/roost`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use roost_instance::Instance;

use crate::out::say;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Run `roost serve` for this home as a user service: at login, and again after a failure.
    Install,
    /// Stop the service and remove it.
    Uninstall,
    /// Whether the service is installed and running.
    Status,
}

/// How long a call of `systemctl` or `launchctl` may take.
const MANAGER_WAIT: Duration = Duration::from_secs(30);

/// What the platform's service manager needs to know.
struct Manager {
    /// The file describing the service.
    file: PathBuf,
    contents: String,
    /// Commands that start it, stop it and ask about it.
    start: Vec<Vec<String>>,
    stop: Vec<Vec<String>>,
    status: Vec<String>,
}

pub fn run(home: &Path, command: ServiceCommand) -> anyhow::Result<()> {
    let instance = Instance::open(home)?;
    let home = std::fs::canonicalize(home).with_context(|| format!("finding {}", home.display()))?;
    let exe = std::env::current_exe().context("finding the roost executable")?;
    let manager = manager(&instance, &home, &exe)?;
    match command {
        ServiceCommand::Install => {
            if let Some(dir) = manager.file.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&manager.file, &manager.contents)
                .with_context(|| format!("writing {}", manager.file.display()))?;
            for command in &manager.start {
                call(command).with_context(|| {
                    format!(
                        "wrote {}, but could not start it; run `{}` yourself",
                        manager.file.display(),
                        command.join(" ")
                    )
                })?;
            }
            say!("installed {} and started it; it runs `roost serve` for {}", manager.file.display(), home.display())?;
        }
        ServiceCommand::Uninstall => {
            if !manager.file.exists() {
                bail!("no service is installed ({} does not exist)", manager.file.display());
            }
            for command in &manager.stop {
                // Already stopped, or never loaded: the file goes all the same.
                if let Err(e) = call(command) {
                    tracing::debug!(error = %e, "stopping the service");
                }
            }
            std::fs::remove_file(&manager.file).with_context(|| format!("removing {}", manager.file.display()))?;
            say!("stopped and removed {}", manager.file.display())?;
        }
        ServiceCommand::Status => {
            if !manager.file.exists() {
                say!("not installed ({} does not exist); `roost service install` installs it", manager.file.display())?;
                return Ok(());
            }
            let state = call(&manager.status).unwrap_or_else(|e| format!("{e:#}"));
            say!("installed at {}: {}", manager.file.display(), state.lines().next().unwrap_or("").trim())?;
        }
    }
    Ok(())
}

/// The unit name: one service per home, named after the instance.
fn unit_name(instance: &Instance) -> String {
    let name: String = instance
        .config
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    format!("roost-{}", name.trim_matches('-'))
}

#[cfg(not(target_os = "macos"))]
fn manager(instance: &Instance, home: &Path, exe: &Path) -> anyhow::Result<Manager> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(config) => PathBuf::from(config),
        None => home_dir()?.join(".config"),
    };
    let unit = format!("{}.service", unit_name(instance));
    let contents = format!(
        "[Unit]\n\
         Description=Roost gateway for {name} ({home})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={exe} --home {home} serve\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         WatchdogSec=30\n\
         TimeoutStopSec=15\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        name = instance.config.name,
        exe = systemd_quoted(exe),
        home = systemd_quoted(home),
    );
    let systemctl = |args: &[&str]| {
        std::iter::once("systemctl".to_string()).chain(["--user"].iter().chain(args).map(|a| a.to_string())).collect()
    };
    Ok(Manager {
        file: dir.join("systemd/user").join(&unit),
        contents,
        start: vec![systemctl(&["daemon-reload"]), systemctl(&["enable", "--now", &unit])],
        stop: vec![systemctl(&["disable", "--now", &unit]), systemctl(&["daemon-reload"])],
        status: systemctl(&["is-active", &unit]),
    })
}

/// A path as one systemd command-line word.
#[cfg(not(target_os = "macos"))]
fn systemd_quoted(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%"))
}

#[cfg(target_os = "macos")]
fn manager(instance: &Instance, home: &Path, exe: &Path) -> anyhow::Result<Manager> {
    let label = format!("dev.{}", unit_name(instance));
    let user_home = home_dir()?;
    let logs = user_home.join("Library/Logs/roost");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let escape = |p: &Path| p.display().to_string().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let contents = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{label}</string>
  <key>ProgramArguments</key>
  <array><string>{exe}</string><string>--home</string><string>{home}</string><string>serve</string></array>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardOutPath</key><string>{out}</string>
  <key>StandardErrorPath</key><string>{err}</string>
</dict>
</plist>
"#,
        exe = escape(exe),
        home = escape(home),
        out = escape(&logs.join("serve.out.log")),
        err = escape(&logs.join("serve.log")),
    );
    let file = user_home.join("Library/LaunchAgents").join(format!("{label}.plist"));
    let uid = rustix::process::getuid().as_raw();
    let domain = format!("gui/{uid}");
    Ok(Manager {
        start: vec![vec!["launchctl".into(), "bootstrap".into(), domain.clone(), file.display().to_string()]],
        stop: vec![vec!["launchctl".into(), "bootout".into(), format!("{domain}/{label}")]],
        status: vec!["launchctl".into(), "print".into(), format!("{domain}/{label}")],
        file,
        contents,
    })
}

fn home_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).context("HOME is not set")
}

/// Runs `command` (program and arguments) within [`MANAGER_WAIT`]; its
/// standard output, or why it failed, in one line.
fn call(command: &[String]) -> anyhow::Result<String> {
    let (program, args) = command.split_first().context("an empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{program} is not available"))?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > MANAGER_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not finish within {MANAGER_WAIT:?}", command.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr.lines().chain(stdout.lines()).find(|l| !l.trim().is_empty()).unwrap_or("no reason given");
        bail!("{} failed ({}): {}", command.join(" "), output.status, why.trim());
    }
    Ok(stdout)
}
