//! `roost nest password`: the password for the Nest, the gateway's dashboard.

use std::path::Path;

use clap::Subcommand;

use roost_gateway::nest::{MIN_PASSWORD, PASSWORD_FILE, set_password};
use roost_instance::Instance;

use crate::out::say;
use crate::prompt;

/// Where `roost nest password` reads the password from when set.
const PASSWORD_VAR: &str = "ROOST_NEST_PASSWORD";

#[derive(Subcommand)]
pub enum NestCommand {
    /// Set the Nest's login password (from ROOST_NEST_PASSWORD, else asked twice).
    Password,
}

pub fn run(home: &Path, command: NestCommand) -> anyhow::Result<()> {
    match command {
        NestCommand::Password => {
            let instance = Instance::open(home)?;
            let prompt = format!("Nest password (at least {MIN_PASSWORD} characters): ");
            let password = prompt::secret(PASSWORD_VAR, &prompt, Some("Repeat password: "))?;
            set_password(home, &password)?;
            say!(
                "the Nest password of {} is set (in {}); open /nest on its gateway to log in",
                instance.config.name,
                home.join(PASSWORD_FILE).display()
            )?;
            Ok(())
        }
    }
}
