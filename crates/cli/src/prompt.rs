//! Reading secrets (passphrases, passwords) from the environment or the
//! person at the terminal.

use std::io::{BufRead, IsTerminal};

use anyhow::bail;

/// Reads a secret: environment variable `var`, else a hidden prompt on a
/// terminal (asked again with `repeat` when given, and the two must match),
/// else one line of standard input.
pub fn secret(var: &str, prompt: &str, repeat: Option<&str>) -> anyhow::Result<String> {
    if let Ok(value) = std::env::var(var) {
        return Ok(value);
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)?;
        if let Some(repeat) = repeat
            && rpassword::prompt_password(repeat)? != first
        {
            bail!("the two entries differ; nothing was written");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
