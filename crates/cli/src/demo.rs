//! `roost demo`: three machines on this one, chained by pairing as a person
//! chains them, each a `roost serve` on loopback under a temporary home.
//! It shows a write reaching the others and how fast, a search of every
//! machine with each one's answer, a conflict made while one machine is
//! stopped and then resolved, and the awake machine killed: how long until
//! another holds the role, and a message said meanwhile answered by it.
//!
//! Each step prints one line saying what held, with its figures; a step that
//! does not hold says why, and the demo exits 1 (`--script` is the same run
//! for CI). Ctrl-C, or the end, stops every machine and removes every home.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use roost_awake::LeaseStatus;
use roost_awake::status::Role;

use crate::bench::ServedProcess;
use crate::demo_view::{self, Board, LiveView, Process, SharedBoard, StepState};
use crate::out::say;

/// The lease TTL the demo's machines run with: a failover worth watching.
const TTL_MS: u64 = 2000;
/// How long any step may take before it is called failed.
const STEP_WAIT: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["home", "laptop", "pi"];
/// A step of the demo: what it found, or why it did not hold.
type Step = fn(&mut Demo) -> anyhow::Result<String>;

/// Each step: what it shows, and the function that shows it.
const STEPS: [(&str, Step); 5] = [
    ("three machines, chained by pairing", Demo::chain),
    ("a write reaches the others", Demo::propagation),
    ("one search asks every machine", Demo::search_all),
    ("a conflict while a machine is stopped, then resolved", Demo::conflict),
    ("the awake machine killed: another takes over and answers", Demo::failover),
];

/// How long Ctrl-C keeps trying to remove the homes: a killed child may
/// finish the file operation it was in before it dies.
const REMOVAL_WAIT: Duration = Duration::from_secs(5);

/// Every child process the demo runs, and the directory holding the homes:
/// what Ctrl-C must take down. A child is started only through
/// [`Children::spawn`], under the same lock Ctrl-C takes, so none starts
/// once the demo is stopping.
struct Children {
    root: PathBuf,
    state: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    pids: Vec<u32>,
    stopping: bool,
}

impl Children {
    fn new(root: PathBuf) -> Children {
        Children { root, state: Mutex::default() }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn spawn(&self, command: &mut Command) -> std::io::Result<Child> {
        let mut running = self.running();
        if running.stopping {
            return Err(std::io::Error::other("the demo is stopping"));
        }
        let child = command.spawn()?;
        running.pids.push(child.id());
        Ok(child)
    }

    /// Forgets a child that has been waited for, so its id, free for
    /// reuse, is never killed.
    fn reaped(&self, pid: u32) {
        self.running().pids.retain(|p| *p != pid);
    }

    /// Runs `command` to its end, its output collected.
    fn output(&self, command: &mut Command) -> std::io::Result<Output> {
        let child = self.spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()))?;
        let pid = child.id();
        let output = child.wait_with_output();
        self.reaped(pid);
        output
    }

    /// Kills every child and removes the homes, trying again while a dying
    /// child still adds a file.
    fn stop_all(&self) {
        let mut running = self.running();
        running.stopping = true;
        for pid in &running.pids {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let started = Instant::now();
        while std::fs::remove_dir_all(&self.root).is_err() && self.root.exists() && started.elapsed() < REMOVAL_WAIT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn run(script: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let children = Arc::new(Children::new(dir.path().to_path_buf()));
    let on_interrupt = children.clone();
    std::thread::spawn(move || {
        let waited = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(async { tokio::signal::ctrl_c().await.is_ok() }));
        if matches!(waited, Ok(true)) {
            on_interrupt.stop_all();
            // The live view may have hidden the cursor.
            eprint!("\x1b[?25h");
            eprintln!("\nroost demo: stopped; every machine and home removed");
            std::process::exit(130);
        }
    });
    let board: SharedBoard = Arc::new(Mutex::new(Board::new(&NAMES, &STEPS.map(|(what, _)| what))));
    // The live view on a terminal; plain lines otherwise, with --script, and
    // on a terminal that does not say where its cursor is.
    let view = (!script && demo_view::available()).then(|| LiveView::start(board.clone(), lease).ok()).flatten();
    let mut demo = Demo {
        root: dir.path().to_path_buf(),
        machines: Vec::new(),
        children,
        lines: view.is_none(),
        board,
        failed: 0,
    };
    let result = demo.all_steps();
    // The last frame shows the machines still running.
    let shown = view.map_or(Ok(()), LiveView::finish);
    let failed = demo.failed;
    drop(demo);
    result?;
    shown?;
    if failed > 0 {
        bail!("{failed} step(s) did not hold");
    }
    say!("every step held; the three machines are stopped and their homes removed")?;
    Ok(())
}

struct Machine {
    name: &'static str,
    home: PathBuf,
    process: Option<ServedProcess>,
    addr: String,
}

struct Demo {
    root: PathBuf,
    machines: Vec<Machine>,
    children: Arc<Children>,
    /// Print a line per step (no live view).
    lines: bool,
    board: SharedBoard,
    failed: usize,
}

impl Demo {
    fn all_steps(&mut self) -> anyhow::Result<()> {
        for (i, (what, step)) in STEPS.into_iter().enumerate() {
            self.step(i, what, step)?;
        }
        Ok(())
    }

    /// Runs one step and shows what it found; a failed step is counted,
    /// and the rest go on only if the chain still stands.
    fn step(&mut self, i: usize, what: &str, step: Step) -> anyhow::Result<()> {
        let started = Instant::now();
        self.show(|b| b.steps[i].state = StepState::Running(started));
        let outcome = step(self);
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(found) => {
                if self.lines {
                    say!("ok    {what} ({took:.1} s): {found}")?;
                }
                self.show(|b| b.steps[i].state = StepState::Held { took, found });
            }
            Err(e) => {
                self.failed += 1;
                if self.lines {
                    say!("FAIL  {what} ({took:.1} s): {e:#}")?;
                }
                self.show(|b| b.steps[i].state = StepState::Failed { took, why: format!("{e:#}") });
                if self.machines.iter().filter(|m| m.process.is_some()).count() < 2 {
                    bail!("the chain is gone; stopping the demo");
                }
            }
        }
        Ok(())
    }

    /// Changes what the live view shows.
    fn show(&self, change: impl FnOnce(&mut Board)) {
        change(&mut demo_view::lock(&self.board));
    }

    /// Marks machine `i`'s process as `process` on the view.
    fn mark(&self, i: usize, process: Process) {
        self.show(|b| b.machines[i].process = process);
    }

    fn chain(&mut self) -> anyhow::Result<String> {
        for name in NAMES {
            let home = self.root.join(name);
            self.roost(&home, &["init", "--name", name])?;
            let config = home.join("config.toml");
            let text = std::fs::read_to_string(&config)?.replace("ttl_ms = 3000", &format!("ttl_ms = {TTL_MS}"));
            std::fs::write(&config, text)?;
            let process = ServedProcess::start_quiet(&home, |command| self.children.spawn(command))?;
            let (i, addr) = (self.machines.len(), process.addr.clone());
            self.show(|b| {
                b.machines[i].addr = Some(addr);
                b.machines[i].process = Process::Serving;
            });
            self.machines.push(Machine { name, home, addr: process.addr.clone(), process: Some(process) });
        }
        let mut said = Vec::new();
        for joiner in 1..self.machines.len() {
            let sponsor = &self.machines[0];
            let offered = self.roost(&sponsor.home, &["pair", "--no-wait"])?;
            let code = offered
                .lines()
                .find_map(|l| l.strip_prefix("pairing code: "))
                .and_then(|rest| rest.split_whitespace().next())
                .context("roost pair offered no code")?
                .to_string();
            let url = format!("http://{}", sponsor.addr);
            let started = Instant::now();
            self.roost(&self.machines[joiner].home, &["join", &url, "--code", &code, "--yes"])?;
            said.push(format!(
                "{} joined with {code} in {} ms",
                self.machines[joiner].name,
                started.elapsed().as_millis()
            ));
        }
        self.every_voter_heard()?;
        let holder = self.holder()?;
        said.push(format!("{} is awake", self.machines[holder].name));
        Ok(said.join("; "))
    }

    fn propagation(&mut self) -> anyhow::Result<String> {
        let written = self.roost(&self.machines[0].home, &["memory", "add", "The demo's first memory", "--json"])?;
        let id = serde_json::from_str::<Value>(&written)?["id"].as_str().context("the memory's id")?.to_string();
        let started = Instant::now();
        let mut said = Vec::new();
        for machine in &self.machines[1..] {
            until(&format!("{} holds the memory", machine.name), || {
                Ok(crate::http::get(&format!("http://{}/api/v1/memories/{id}", machine.addr), Duration::from_secs(2))
                    .is_ok())
            })?;
            said.push(format!("{} after {:.1} ms", machine.name, started.elapsed().as_secs_f64() * 1000.0));
        }
        Ok(format!("written on {}, held by {}", self.machines[0].name, said.join(", ")))
    }

    fn search_all(&mut self) -> anyhow::Result<String> {
        self.roost(
            &self.machines[1].home,
            &["memory", "add", "Kept on the laptop only: the bike lock code", "--local"],
        )?;
        let found = self.roost(&self.machines[0].home, &["search", "--all", "bike lock", "--json"])?;
        let found: Value = serde_json::from_str(&found)?;
        let answers: Vec<String> = found["instances"]
            .as_array()
            .context("per-machine answers")?
            .iter()
            .map(|i| {
                format!(
                    "{} {} ({} found, {:.1} ms)",
                    i["name"].as_str().unwrap_or("?"),
                    i["outcome"].as_str().unwrap_or("?"),
                    i["results"].as_u64().unwrap_or(0),
                    i["ms"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        if found["count"].as_u64() != Some(1) {
            bail!("the laptop's local memory was not found from home: {}", answers.join(", "));
        }
        Ok(answers.join(", "))
    }

    fn conflict(&mut self) -> anyhow::Result<String> {
        let written = self.roost(&self.machines[0].home, &["memory", "add", "Dinner is at seven", "--json"])?;
        let id = serde_json::from_str::<Value>(&written)?["id"].as_str().context("the memory's id")?.to_string();
        let pi = 2;
        until("the pi holds it", || {
            Ok(crate::http::get(
                &format!("http://{}/api/v1/memories/{id}", self.machines[pi].addr),
                Duration::from_secs(2),
            )
            .is_ok())
        })?;
        let pid = self.machines[pi].process.as_ref().context("the pi runs")?.child.id().to_string();
        Command::new("kill").args(["-STOP", &pid]).status()?;
        self.mark(pi, Process::Stopped);
        // Both sides change it without seeing each other: the pi's CLI
        // writes its own database while its gateway is stopped.
        let home_edit =
            self.roost(&self.machines[0].home, &["memory", "update", &id, "--content", "Dinner is at eight"]);
        let pi_edit = self
            .roost(&self.machines[pi].home, &["memory", "update", &id, "--content", "Dinner is at half past seven"]);
        Command::new("kill").args(["-CONT", &pid]).status()?;
        self.mark(pi, Process::Serving);
        home_edit?;
        pi_edit?;
        let mut conflict = String::new();
        until("every machine sees the conflict", || {
            let lists: Vec<Value> = self
                .machines
                .iter()
                .map(|m| {
                    self.roost(&m.home, &["conflicts", "list", "--json"]).and_then(|t| Ok(serde_json::from_str(&t)?))
                })
                .collect::<anyhow::Result<_>>()?;
            let open = lists.iter().all(|l| l.as_array().is_some_and(|a| a.len() == 1));
            if open {
                conflict = lists[0][0]["id"].as_str().unwrap_or_default().to_string();
            }
            Ok(open)
        })?;
        let shown = self.roost(&self.machines[1].home, &["memory", "get", &id, "--json"])?;
        let winner = serde_json::from_str::<Value>(&shown)?["content"].as_str().unwrap_or_default().to_string();
        self.roost(&self.machines[0].home, &["conflicts", "resolve", &conflict, "--keep", "local"])?;
        until("every machine closes it", || {
            let mut closed = true;
            for m in &self.machines {
                let list: Value = serde_json::from_str(&self.roost(&m.home, &["conflicts", "list", "--json"])?)?;
                closed &= list.as_array().is_some_and(Vec::is_empty);
            }
            Ok(closed)
        })?;
        let kept = self.roost(&self.machines[2].home, &["memory", "get", &id, "--json"])?;
        let kept = serde_json::from_str::<Value>(&kept)?["content"].as_str().unwrap_or_default().to_string();
        Ok(format!(
            "all three showed {winner:?} and kept the other version; resolved on home, every machine has {kept:?}"
        ))
    }

    fn failover(&mut self) -> anyhow::Result<String> {
        // Two of three voters take over only once each hears the other:
        // the pi has just been stopped and started again.
        self.every_voter_heard()?;
        let holder = self.holder()?;
        let name = self.machines[holder].name;
        let killed_at = Instant::now();
        self.stop_machine(holder);
        self.mark(holder, Process::Killed);
        let standby = (holder + 1) % self.machines.len();
        let home = self.machines[standby].home.clone();
        let exe = std::env::current_exe()?;
        let children = self.children.clone();
        let say = std::thread::spawn(move || {
            children.output(Command::new(exe).arg("--home").arg(&home).args([
                "agent",
                "say",
                "demo",
                "Are you still there?",
            ]))
        });
        let next = self.holder()?;
        let failover = killed_at.elapsed();
        let reply = say.join().map_err(|_| anyhow::anyhow!("the message's thread panicked"))??;
        if !reply.status.success() {
            bail!("no answer across the failover: {}", String::from_utf8_lossy(&reply.stderr).trim());
        }
        Ok(format!(
            "killed {name}; {} awake after {} ms (TTL {TTL_MS} ms); a message said on {} meanwhile was answered: {:?}",
            self.machines[next].name,
            failover.as_millis(),
            self.machines[standby].name,
            String::from_utf8_lossy(&reply.stdout).trim()
        ))
    }

    /// Runs `roost --home HOME ARGS` (this same binary) to its end; its
    /// stdout, or its error line.
    fn roost(&self, home: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = self.children.output(Command::new(std::env::current_exe()?).arg("--home").arg(home).args(args))?;
        if !out.status.success() {
            bail!("roost {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Kills machine `i`'s process, if it runs.
    fn stop_machine(&mut self, i: usize) {
        if let Some(process) = self.machines[i].process.take() {
            let pid = process.child.id();
            drop(process);
            self.children.reaped(pid);
        }
    }

    /// Waits until every machine counts all three as voters and hears them.
    fn every_voter_heard(&self) -> anyhow::Result<()> {
        until("every machine a voter, each heard by all", || {
            Ok(self
                .machines
                .iter()
                .all(|m| lease(&m.addr).is_some_and(|l| l.voters == NAMES.len() && l.voters_heard == NAMES.len())))
        })
    }

    /// The one machine awake, once every running machine names it.
    fn holder(&self) -> anyhow::Result<usize> {
        let mut holder = 0;
        until("one machine awake, named by all", || {
            let running: Vec<(usize, LeaseStatus)> = self
                .machines
                .iter()
                .enumerate()
                .filter(|(_, m)| m.process.is_some())
                .filter_map(|(i, m)| lease(&m.addr).map(|l| (i, l)))
                .collect();
            let awake: Vec<usize> = running.iter().filter(|(_, l)| l.role == Role::Awake).map(|(i, _)| *i).collect();
            let named = |l: &LeaseStatus| l.holder.as_ref().map(|h| h.id.clone());
            let agreed = awake.len() == 1
                && running.len() == self.machines.iter().filter(|m| m.process.is_some()).count()
                && running.iter().all(|(_, l)| named(l) == named(&running[0].1));
            if agreed {
                holder = awake[0];
            }
            Ok(agreed)
        })?;
        Ok(holder)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for i in 0..self.machines.len() {
            self.stop_machine(i);
        }
    }
}

fn lease(addr: &str) -> Option<LeaseStatus> {
    let health = crate::http::get(&format!("http://{addr}/health"), Duration::from_secs(2)).ok()?;
    serde_json::from_value(health["lease"].clone()).ok()
}

/// Polls `done` until it holds, within [`STEP_WAIT`].
fn until(what: &str, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > STEP_WAIT {
            bail!("{what}: not within {STEP_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
