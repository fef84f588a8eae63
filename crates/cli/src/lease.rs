//! `roost wakeup` and the handoff before `roost leave`: commands sent to this
//! machine's own running gateway, which owns the lease.

use anyhow::bail;
use serde_json::{Value, json};

use roost_instance::Instance;

fn local_url(instance: &Instance, path: &str) -> String {
    format!("http://{}{path}", instance.gateway_addr().replace("0.0.0.0", "127.0.0.1"))
}

pub fn wakeup(instance: &Instance, force: bool) -> anyhow::Result<()> {
    if force {
        eprintln!(
            "roost: warning: --force takes the role with this machine's vote alone. If the holder is alive \
             but cut off, two machines act as the agent until they meet again; the epoch fence keeps the \
             older one's writes from overwriting the newer one's."
        );
    }
    let url = local_url(instance, "/api/v1/lease/wakeup");
    let answer = crate::http::post(&url, &json!({"force": force}))?;
    println!("{}", message(&answer));
    Ok(())
}

/// Hands the role off before this machine leaves the chain. Nothing to do
/// when the gateway is not running (it holds no lease then).
pub fn hand_off_before_leaving(instance: &Instance) -> anyhow::Result<()> {
    let health = local_url(instance, "/health");
    let Ok(status) = crate::http::get(&health, std::time::Duration::from_millis(1500)) else { return Ok(()) };
    if status["lease"]["role"] != json!("awake") {
        return Ok(());
    }
    match crate::http::post(&local_url(instance, "/api/v1/lease/leave"), &json!({})) {
        Ok(answer) => {
            println!("handed the awake role off: {}", message(&answer));
            Ok(())
        }
        Err(e) => bail!("this machine is awake and could not hand the role off ({e:#}); it stays in the chain"),
    }
}

fn message(answer: &Value) -> String {
    answer["message"].as_str().unwrap_or("done").to_string()
}
