//! `roost config check`: reads `config.toml` as `roost serve` would and
//! checks what reading alone cannot: that every tool `[federation]
//! peer_tools` names exists, and that the bind address is one.

use anyhow::bail;
use clap::Subcommand;

use roost_instance::Instance;
use roost_mcp::Action;

use crate::out::say;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check config.toml: unknown keys, values, the tools peer_tools names; errors name the line.
    Check,
}

pub fn run(home: &std::path::Path, command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check => check(home),
    }
}

fn check(home: &std::path::Path) -> anyhow::Result<()> {
    // Unknown keys, wrong types and values the loader refuses come back
    // naming the file and the line.
    let instance = Instance::open(home)?;
    let path = home.join("config.toml");
    let text = std::fs::read_to_string(&path)?;
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|n| n + 1);
    for tool in &instance.config.federation.peer_tools {
        if Action::parse(tool).is_none() {
            let at = line_of(&format!("\"{tool}\"")).map(|n| format!(" (line {n})")).unwrap_or_default();
            bail!(
                "{}{at}: [federation] peer_tools names {tool:?}, which is no Roost tool; `roost mcp` lists them (tools/list), e.g. roost_search_memories",
                path.display()
            );
        }
    }
    let bind = &instance.config.gateway.bind;
    if std::net::ToSocketAddrs::to_socket_addrs(bind.as_str()).is_err() {
        let at = line_of("bind").map(|n| format!(" (line {n})")).unwrap_or_default();
        bail!(
            "{}{at}: [gateway] bind {bind:?} is not an address and port this machine resolves, e.g. 127.0.0.1:7151",
            path.display()
        );
    }
    say!("{} is valid", path.display())?;
    Ok(())
}
