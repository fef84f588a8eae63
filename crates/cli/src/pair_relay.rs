//! `roost join roost:KEY?relay=URL`: the pairing exchange over QUIC (ALPN
//! `roost/pair/1`) with a chain machine this one cannot reach directly,
//! known by its machine key and the relays it keeps a connection to.

use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use iroh::endpoint::{Connection, RecvStream, SendStream, VarInt};
use iroh::{Endpoint, EndpointAddr, PublicKey, RelayUrl};
use serde_json::Value;

use roost_identity::pairing::{ALPN, RelayedMachine};
use roost_sync::frame;

/// How long reaching the machine through its relay may take.
const CONNECT_WAIT: Duration = Duration::from_secs(20);
/// How long each answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// An open pairing exchange with a machine through a relay.
pub struct RelayedSponsor {
    runtime: tokio::runtime::Runtime,
    endpoint: Endpoint,
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    shown: String,
    relays: Vec<String>,
}

impl RelayedSponsor {
    /// Dials `machine` through its relays (iroh takes a direct path if one
    /// opens), from a key of this exchange's own: the machine key stays the
    /// running gateway's, which may hold the relay's one connection for it.
    pub fn connect(machine: &RelayedMachine) -> anyhow::Result<RelayedSponsor> {
        let shown = format!("the machine {} through {}", &hex_prefix(&machine.machine_key), machine.relays.join(", "));
        let relays: Vec<RelayUrl> = machine
            .relays
            .iter()
            .map(|r| r.parse().with_context(|| format!("{r:?} is not a relay URL")))
            .collect::<anyhow::Result<_>>()?;
        let id = PublicKey::from_bytes(&machine.machine_key).context("the machine key is not a valid key")?;
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
        let (endpoint, conn, send, recv) = runtime
            .block_on(async {
                let key = SigningKey::from_bytes(&rand::random());
                let endpoint = roost_sync::bind_endpoint(&key, None, &relays, Vec::new()).await?;
                let to = relays.iter().cloned().fold(EndpointAddr::new(id), |addr, relay| addr.with_relay_url(relay));
                let conn = tokio::time::timeout(CONNECT_WAIT, endpoint.connect(to, ALPN))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_WAIT:?}"))?
                    .context("connecting")?;
                let (send, recv) = conn.open_bi().await.context("opening the pairing stream")?;
                anyhow::Ok((endpoint, conn, send, recv))
            })
            .with_context(|| format!("cannot reach {shown}"))?;
        Ok(RelayedSponsor { runtime, endpoint, conn, send, recv, shown, relays: machine.relays.clone() })
    }

    /// Sends one step's request and reads the answer; an answer carrying an
    /// error is one, as over HTTP.
    pub fn ask(&mut self, step: &str, body: &Value) -> anyhow::Result<Value> {
        let answer: Value = self
            .runtime
            .block_on(async {
                frame::write_json(&mut self.send, body).await?;
                frame::read_json(&mut self.recv, ANSWER_WAIT).await
            })
            .with_context(|| format!("pairing {step} with {}", self.shown))?;
        if let Some(reason) = answer["error"].as_str() {
            bail!("{} answered {}: {reason}", self.shown, answer["status"]);
        }
        Ok(answer)
    }

    /// The relays it was reached through.
    pub fn relays(&self) -> &[String] {
        &self.relays
    }

    /// Who this is, for people.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl Drop for RelayedSponsor {
    fn drop(&mut self) {
        self.conn.close(VarInt::from_u32(0), b"done");
        let endpoint = self.endpoint.clone();
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.close()).await;
        });
    }
}

fn hex_prefix(key: &[u8; 32]) -> String {
    roost_core::hex::encode(&key[..5])
}
