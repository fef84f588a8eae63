//! Federation for the processes that run no replication of their own
//! (`roost mcp`, `roost search --all`): through this machine's gateway when
//! it runs, so their calls leave from its endpoint and its relay connection
//! (an endpoint of their own with the machine's key would take that
//! connection over at the relay); from this process when no gateway runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use roost_federation::Federation;
use roost_federation::search::Merged;
use roost_instance::Instance;
use roost_mcp::{Pending, Remote, RemoteError};
use roost_store::Store;

use crate::http;

/// Federation through the gateway, or in this process.
#[derive(Clone)]
pub struct ThroughGateway {
    home: PathBuf,
    /// The longest a call through the gateway may take: its own limit and
    /// a margin.
    wait: Duration,
    own: Federation,
}

impl ThroughGateway {
    pub fn new(instance: &Instance, store: Arc<Store>) -> ThroughGateway {
        let limits = &instance.config.federation;
        let longest = limits.call_timeout_ms.max(limits.search_timeout_ms);
        ThroughGateway {
            home: instance.home.clone(),
            wait: Duration::from_millis(longest) + Duration::from_secs(5),
            own: Federation::new(instance, store, Arc::new(|| None)),
        }
    }

    /// Keeps this process's own summaries fresh, for when no gateway runs.
    pub fn start_refreshing(&self) {
        self.own.start_refreshing();
    }

    pub async fn stop(&self) {
        self.own.stop().await;
    }

    /// `roost_search_all`, with its answer as the federation gives it.
    pub async fn search_all(&self, args: Map<String, Value>) -> Result<Merged, RemoteError> {
        match self.gateway("/api/v1/federation/search", Some(Value::Object(args.clone()))).await? {
            Some(answer) => Ok(serde_json::from_value(answer)?),
            None => Ok(self.own.search_all(args).await?),
        }
    }

    /// The gateway's answer to `path`; `None` when no gateway runs.
    async fn gateway(&self, path: &'static str, body: Option<Value>) -> Result<Option<Value>, RemoteError> {
        let (home, wait) = (self.home.clone(), self.wait);
        let answered = tokio::task::spawn_blocking(move || http::local(&home, path, body.as_ref(), wait)).await?;
        match answered {
            Ok(answer) => Ok(Some(answer)),
            Err(e) if http::not_running(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Remote for ThroughGateway {
    fn forward(&self, instance: String, tool: String, args: Map<String, Value>) -> Pending<Result<Value, RemoteError>> {
        let this = self.clone();
        Box::pin(async move {
            let call = json!({"instance": instance, "tool": tool, "arguments": args});
            match this.gateway("/api/v1/federation/forward", Some(call)).await? {
                Some(answer) => Ok(answer),
                None => Ok(this.own.forward(&instance, &tool, args).await?),
            }
        })
    }

    fn search_all(&self, args: Map<String, Value>) -> Pending<Result<Value, RemoteError>> {
        let this = self.clone();
        Box::pin(async move { Ok(json!(ThroughGateway::search_all(&this, args).await?)) })
    }

    fn list_instances(&self) -> Pending<Result<Value, RemoteError>> {
        let this = self.clone();
        Box::pin(async move {
            match this.gateway("/api/v1/instances", None).await? {
                Some(answer) => Ok(answer),
                None => this.own.list_instances().await,
            }
        })
    }
}
