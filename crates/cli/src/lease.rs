//! `roost wakeup` and the handoff before `roost leave`: commands sent to this
//! machine's own running gateway, which owns the lease.

use anyhow::bail;
use serde_json::{Value, json};

use roost_instance::Instance;

use crate::out::{note, say};

pub fn wakeup(instance: &Instance, force: bool) -> anyhow::Result<()> {
    if force {
        note!(
            "roost: warning: --force takes the role with this machine's vote alone. If the holder is alive \
             but cut off, two machines act as the agent until they meet again; the epoch fence keeps the \
             older one's writes from overwriting the newer one's."
        );
    }
    let answer =
        crate::http::local(&instance.home, "/api/v1/lease/wakeup", Some(&json!({"force": force})), crate::http::WAIT)?;
    say!("{}", message(&answer))?;
    Ok(())
}

/// Before this machine leaves the chain: hands the awake role off if it
/// holds it, and waits for the holder to remove it from the voters. Nothing
/// to do when the gateway is not running.
pub fn leave_the_voters(instance: &Instance) -> anyhow::Result<()> {
    match crate::http::local(&instance.home, "/api/v1/lease/leave", Some(&json!({})), crate::http::WAIT) {
        Ok(answer) => {
            say!("left the voters: {}", message(&answer))?;
            Ok(())
        }
        Err(e) if crate::http::not_running(&e) => Ok(()),
        Err(e) => bail!("{e:#}; this machine stays in the chain"),
    }
}

fn message(answer: &Value) -> String {
    answer["message"].as_str().unwrap_or("done").to_string()
}
