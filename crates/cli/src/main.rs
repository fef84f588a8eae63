//! `roost`: the command-line entry point.
//!
//! Each subcommand opens the instance directory and then calls into the same
//! library code the gateway runs: `memory` goes through `roost_mcp::execute`
//! and so through the store's one write door, exactly as an MCP tool call does.

mod agent;
mod backup;
mod bench;
mod bench_agent;
mod bench_failover;
mod bench_federation;
mod bench_netns;
mod bench_pool;
mod bench_sync;
mod config;
mod conflicts;
mod crow;
mod demo;
mod demo_view;
mod federate;
mod http;
mod identity;
mod import;
mod lease;
mod machines;
mod memory;
mod nest;
mod notify;
mod out;
mod pair;
mod pair_relay;
mod pool;
mod prompt;
mod relay;
mod serve;
mod service;
mod status;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use roost_instance::Instance;

use crate::out::{note, say};

#[derive(Parser)]
#[command(name = "roost", version, about = "One person's AI-agent memory, on every machine they own.")]
struct Cli {
    /// Instance directory [default: ~/.roost if it exists, else ~/.local/share/roost ($XDG_DATA_HOME/roost); on macOS ~/Library/Application Support/roost]
    #[arg(long, global = true, env = "ROOST_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// How `serve`, `witness`, `relay` and `mcp` write their log to stderr: text, or one JSON object a line with its spans
    #[arg(long, global = true, env = "ROOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new instance directory.
    Init {
        /// Name for this instance [default: the host name]
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the gateway: /health, /mcp (Streamable HTTP) and /api/v1. Creates the instance on first run.
    Serve {
        /// Address to listen on [default: from config.toml, else 127.0.0.1:7151]
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Name for the instance if this run creates it [default: the host name]
        #[arg(long)]
        name: Option<String>,
        /// Serve the Nest to other machines over plain HTTP: its password and session cookie cross the network in clear [default: the Nest answers only this machine]
        #[arg(long)]
        insecure_http: bool,
    },
    /// Run a relay on a machine every other can reach, for machines that cannot reach each other directly.
    Relay {
        /// Address to listen on (TCP); machines name it in [sync] relays as http://HOST:PORT
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:3340")]
        bind: std::net::SocketAddr,
    },
    /// Run a witness: a lease voter that holds no data and never becomes awake, so two machines can fail over.
    Witness {
        /// Address to listen on [default: from config.toml, else 127.0.0.1:7151]
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Name for the instance if this run creates it [default: the host name]
        #[arg(long)]
        name: Option<String>,
    },
    /// Make this machine the awake one: the holder hands the role over (or it is taken when nobody holds it).
    Wakeup {
        /// Take the role with this machine's vote alone. Only when the other machines are really down:
        /// if the holder is alive but unreachable, two machines act until they meet again.
        #[arg(long)]
        force: bool,
    },
    /// Talk to the agent (it answers from whichever machine is awake) and read its conversations.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Where conversations run across machines (the pool): list, move one, name machines.
    Pool {
        #[command(subcommand)]
        command: Option<pool::PoolCommand>,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Serve MCP over stdin/stdout, for clients that launch their servers.
    Mcp,
    /// Show this instance: id, name, contents, and whether its gateway answers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show this machine's identity: Roost ID, id, role, keys, certificate.
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// Copy this instance to FILE while it runs: the database, its files and, sealed with a passphrase, its keys.
    Backup { file: PathBuf },
    /// Bring an instance back from a backup FILE into --home (which must hold none).
    Restore { file: PathBuf },
    /// Watch three machines on this one chain by pairing, replicate, search each other, resolve a conflict and fail over.
    Demo {
        /// Plain lines, no spinner; exits 0 only when every step held (for CI).
        #[arg(long)]
        script: bool,
    },
    /// Check config.toml.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Run `roost serve` as a user service (systemd on Linux, launchd on macOS).
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `roost manpage > roost.1`.
    Manpage,
    /// Bring in data from elsewhere: a Crow database, or memories as JSON lines. Running it again adds nothing.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Export or import the chain's identity seed.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Offer a pairing code so a new machine can join this chain.
    Pair {
        /// Print the code and return instead of following the pairing.
        #[arg(long)]
        no_wait: bool,
    },
    /// Join the chain of the machine at URL (its gateway, or the `roost:KEY?relay=URL` that `roost pair` shows when it uses a relay) with the code `roost pair` showed there.
    Join {
        url: String,
        #[arg(long)]
        code: String,
        /// Name for this machine if this creates its instance [default: the host name]
        #[arg(long)]
        name: Option<String>,
        /// Skip the prompt to compare the short authentication string.
        #[arg(long)]
        yes: bool,
        /// Join even though this instance already belongs to a chain with other machines.
        #[arg(long)]
        force: bool,
    },
    /// List the machines of this chain: role, sync state, version, last seen, addresses.
    #[command(visible_alias = "instances")]
    Machines {
        #[arg(long)]
        json: bool,
    },
    /// Rename this machine (the others learn the new name when they next hear from it).
    Rename { name: String },
    /// Register or revoke machines.
    #[command(subcommand)]
    Instance(machines::InstanceCommand),
    /// Leave the chain: hand the awake role off (if held here), revoke this machine's certificate here and forget the seed.
    Leave {
        /// Leave even if this is the chain's last home machine.
        #[arg(long)]
        force: bool,
    },
    /// Search memories (`--all`: on every reachable instance too).
    Search(memory::SearchArgs),
    /// Store, search and manage memories.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// Replication with the other machines: status, and waiting to catch up.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Sync conflicts: concurrent edits of one row on two machines.
    #[command(subcommand)]
    Conflicts(conflicts::ConflictsCommand),
    /// The Nest, the gateway's dashboard at /nest: set its password.
    #[command(subcommand)]
    Nest(nest::NestCommand),
    /// Measure performance (release builds).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    // Before anything opens a file: whatever this process creates (the
    // database, its WAL, the lease's files) is its user's alone.
    roost_instance::private_by_default();
    // TLS for outgoing HTTPS (the sync transport brings rustls without a
    // default provider); ring, as everywhere else in Roost.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`| head`): it has what it wanted.
        Err(e) if e.downcast_ref::<out::Closed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            note!("roost: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cli.home.unwrap_or_else(roost_instance::default_home);
    if home.exists() {
        make_private(&home)?;
    }
    match cli.command {
        Command::Init { name } => {
            let instance = Instance::init(&home, &name.unwrap_or_else(roost_instance::default_name))?;
            say!("created instance {} ({}) at {}", instance.config.name, instance.id, home.display())?;
            Ok(())
        }
        Command::Serve { bind, name, insecure_http } => {
            init_logging("info", cli.log_format);
            let instance = Instance::open_or_init(&home, &name.unwrap_or_else(roost_instance::default_name))?;
            runtime()?.block_on(serve::serve(instance, bind, insecure_http))
        }
        Command::Relay { bind } => {
            init_logging("info", cli.log_format);
            runtime()?.block_on(relay::run(bind))
        }
        Command::Witness { bind, name } => {
            init_logging("info", cli.log_format);
            let instance = Instance::open_or_init(&home, &name.unwrap_or_else(roost_instance::default_name))?;
            runtime()?.block_on(serve::witness(instance, bind))
        }
        Command::Wakeup { force } => lease::wakeup(&Instance::open(&home)?, force),
        Command::Agent(command) => agent::run(&Instance::open(&home)?, command),
        Command::Pool { command, json } => pool::run(&Instance::open(&home)?, command, json),
        Command::Mcp => {
            init_logging("warn", cli.log_format);
            let instance = Instance::open_or_init(&home, &roost_instance::default_name())?;
            runtime()?.block_on(serve::stdio(instance))
        }
        Command::Status { json } => status::status(&Instance::open(&home)?, json),
        Command::Memory(command) => memory::run(&Instance::open(&home)?, command),
        Command::Search(args) => memory::run(&Instance::open(&home)?, memory::MemoryCommand::Search(args)),
        Command::Whoami { json } => identity::whoami(&Instance::open(&home)?, json),
        Command::Identity(command) => identity::run(&home, command),
        Command::Backup { file } => backup::backup(&home, &file),
        Command::Config(command) => config::run(&home, command),
        Command::Demo { script } => demo::run(script),
        Command::Service(command) => service::run(&home, command),
        Command::Completions { shell } => {
            let mut buffer = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "roost", &mut buffer);
            out::raw(&buffer)
        }
        Command::Manpage => {
            let mut buffer = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buffer)?;
            out::raw(&buffer)
        }
        Command::Restore { file } => backup::restore(&home, &file),
        Command::Import(command) => import::run(&Instance::open(&home)?, command),
        Command::Pair { no_wait } => pair::pair(&home, !no_wait),
        Command::Join { url, code, name, yes, force } => {
            pair::join(&home, pair::JoinOptions { url, code, name, yes, force })
        }
        Command::Machines { json } => machines::list(&Instance::open(&home)?, json),
        Command::Rename { name } => machines::rename(&home, &name),
        Command::Instance(command) => machines::run(&home, command),
        Command::Leave { force } => identity::leave(&home, force),
        Command::Sync(command) => sync::run(&Instance::open(&home)?, command),
        Command::Conflicts(command) => conflicts::run(&Instance::open(&home)?, command),
        Command::Nest(command) => nest::run(&home, command),
        Command::Bench(command) => bench::run(command),
    }
}

/// Makes an existing home owner-only, saying in one line what other users
/// could reach until now.
fn make_private(home: &std::path::Path) -> anyhow::Result<()> {
    let changed = roost_instance::make_private(home)?;
    if !changed.is_empty() {
        let names: Vec<String> = changed
            .iter()
            .map(|p| if p.as_os_str().is_empty() { "the directory itself".into() } else { p.display().to_string() })
            .collect();
        note!(
            "roost: warning: other users could reach {} in {}; made owner-only (directories 0700, files 0600)",
            names.join(", "),
            home.display()
        );
    }
    Ok(())
}

/// A small runtime: Roost's work is I/O-bound and its heavy lifting runs on
/// blocking threads, so two workers keep memory low without costing speed.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr (stdout carries `roost mcp`'s protocol); `RUST_LOG` overrides.
fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().with_current_span(true).with_span_list(true).init(),
    }
}
