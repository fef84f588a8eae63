//! `roost`: the command-line entry point.
//!
//! Each subcommand opens the instance directory and then calls into the same
//! library code the gateway runs: `memory` goes through `roost_mcp::execute`
//! and so through the store's one write door, exactly as an MCP tool call does.

mod bench;
mod memory;
mod serve;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use roost_instance::Instance;

#[derive(Parser)]
#[command(name = "roost", version, about = "One person's AI-agent memory, on every machine they own.")]
struct Cli {
    /// Instance directory [default: ~/.roost]
    #[arg(long, global = true, env = "ROOST_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
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
    },
    /// Serve MCP over stdin/stdout, for clients that launch their servers.
    Mcp,
    /// Show this instance: id, name, contents, and whether its gateway answers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Store, search and manage memories.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// Measure performance (release builds).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = cli.home.unwrap_or_else(roost_instance::default_home);
    match cli.command {
        Command::Init { name } => {
            let instance = Instance::init(&home, &name.unwrap_or_else(roost_instance::default_name))?;
            println!("created instance {} ({}) at {}", instance.config.name, instance.id, home.display());
            Ok(())
        }
        Command::Serve { bind, name } => {
            init_logging("info");
            let instance = Instance::open_or_init(&home, &name.unwrap_or_else(roost_instance::default_name))?;
            runtime()?.block_on(serve::serve(instance, bind))
        }
        Command::Mcp => {
            init_logging("warn");
            let instance = Instance::open_or_init(&home, &roost_instance::default_name())?;
            runtime()?.block_on(serve::stdio(instance))
        }
        Command::Status { json } => status::status(&Instance::open(&home)?, json),
        Command::Memory(command) => memory::run(&Instance::open(&home)?, command),
        Command::Bench(command) => bench::run(command),
    }
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

/// Logs go to stderr (stdout carries `roost mcp`'s protocol); `RUST_LOG` overrides.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
