//! `roost backup FILE` and `roost restore FILE`: an instance in one file,
//! its secrets sealed under a passphrase (`roost_instance::backup`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use roost_identity::export::MIN_PASSPHRASE;
use roost_instance::Instance;

use crate::identity::passphrase;
use crate::out::say;

pub fn backup(home: &Path, file: &Path) -> anyhow::Result<()> {
    let instance = Instance::open(home)?;
    if file.exists() {
        bail!("{} exists; give a new file name (a backup never overwrites)", file.display());
    }
    let pass = passphrase(&format!("Backup passphrase (at least {MIN_PASSPHRASE} characters): "), true)?;
    if pass.chars().count() < MIN_PASSPHRASE {
        bail!("the passphrase is shorter than {MIN_PASSPHRASE} characters; nothing was written");
    }
    let spinner = spinner(&format!("backing up {} to {}", instance.config.name, file.display()));
    let contents = roost_instance::backup::back_up(&instance, file, &pass)
        .with_context(|| format!("backing up to {}", file.display()))?;
    spinner.finish_and_clear();
    say!(
        "backed up {} ({}) to {}: database {:.1} MiB, {}, keys{} sealed with your passphrase",
        instance.config.name,
        instance.id,
        file.display(),
        contents.database_bytes as f64 / (1024.0 * 1024.0),
        contents
            .files
            .iter()
            .filter(|f| !f.contains("secrets") && !f.contains("seed"))
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        if contents.seed { " and the chain's seed" } else { "" }
    )?;
    Ok(())
}

pub fn restore(home: &Path, file: &Path) -> anyhow::Result<()> {
    let pass = passphrase("Backup passphrase: ", false)?;
    let spinner = spinner(&format!("restoring {} into {}", file.display(), home.display()));
    let instance =
        roost_instance::backup::restore(file, home, &pass).with_context(|| format!("restoring {}", file.display()))?;
    spinner.finish_and_clear();
    say!("restored {} ({}) in {}", instance.config.name, instance.id, home.display())?;
    say!(
        "run `roost serve`: it first takes back from the other machines what this one wrote after the backup, then writes again"
    )?;
    Ok(())
}

fn spinner(message: &str) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(message.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}
