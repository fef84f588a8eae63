//! Roost's MCP server: one [`ServerHandler`] over the store, served over
//! Streamable HTTP by the gateway and over stdio by `roost mcp`.
//!
//! Tools are not hand-written one by one: [`catalog`] generates each tool's
//! name, description and input schema from the core's table descriptors, and
//! [`execute`] maps a call onto the store. Every mutating tool ends in
//! `Store::write`, the one write door, whichever transport carried it.

pub mod catalog;
pub mod stdio;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest, CustomResult, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use roost_core::Table;
use roost_store::{Keep, ListQuery, Mutation, SearchQuery, Sort, Store};

pub use catalog::Action;

/// How long one tool call on this machine's database may take.
const TOOL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

const INSTRUCTIONS: &str = "Roost is the user's long-term memory and notebook, shared by all their machines. \
Search memories before answering questions about the user's past, preferences or projects, and store new durable \
facts as they come up (one idea per memory). Projects group memories, notes and sources; blog posts, contacts and \
settings are kept here too. Ids are stable across machines.";

/// The argument that sends a tool call to another instance.
pub const INSTANCE_ARG: &str = "instance";

/// Who is calling, as the gateway established it before the request reached
/// the MCP service: in the HTTP request's extensions, or for a whole session
/// ([`RoostTools::for_caller`]) when it arrived over a machine's QUIC
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client on this machine: stdio, or loopback HTTP without a token.
    Local,
    /// Another machine of the chain, authenticated by its token or by the
    /// key of its connection.
    Machine { id: String },
}

/// A boxed future, so [`Remote`] can be a trait object.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why another instance gave no answer; its text is what the caller sees.
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// What the server can ask of the other instances: implemented by
/// `roost-federation`, which holds the connections.
/// Where `roost_agent_status` learns about the lease and the agent: the
/// running machine in `roost serve`, its gateway for `roost mcp`.
pub trait AgentSource: Send + Sync + 'static {
    /// `{awake, role, epoch, holder, agent}`.
    fn status(&self) -> Pending<Result<Value, String>>;
}

/// Where `roost_pool` runs: the running machine's pool in `roost serve`.
pub trait PoolSource: Send + Sync + 'static {
    /// Runs one operation, from `machine` (a machine of the chain) or a
    /// person (`None`); a refusal is an answer `{error, status}`.
    fn call(&self, machine: Option<String>, args: Map<String, Value>) -> Pending<Value>;
}

/// `roost_agent_status`'s answer from `/health`'s `lease` and `agent` parts.
pub fn agent_status(lease: &Value, agent: &Value) -> Value {
    json!({
        "awake": lease["role"] == "awake",
        "role": lease.get("role").cloned().unwrap_or(Value::from("unknown")),
        "epoch": lease["epoch"],
        "holder": lease["holder"],
        "agent": agent,
    })
}

pub trait Remote: Send + Sync + 'static {
    /// Runs `tool` with `args` on `instance` (name or id) and returns its
    /// result labelled with where it ran.
    fn forward(&self, instance: String, tool: String, args: Map<String, Value>) -> Pending<Result<Value, RemoteError>>;
    /// `roost_search_all`.
    fn search_all(&self, args: Map<String, Value>) -> Pending<Result<Value, RemoteError>>;
    /// `roost_list_instances`.
    fn list_instances(&self) -> Pending<Result<Value, RemoteError>>;
}

/// The MCP tool server. Cheap to clone: one per session shares the store.
#[derive(Clone)]
pub struct RoostTools {
    store: Arc<Store>,
    tools: Arc<Vec<Tool>>,
    remote: Option<Arc<dyn Remote>>,
    agent: Option<Arc<dyn AgentSource>>,
    pool: Option<Arc<dyn PoolSource>>,
    /// This instance's name, which the `instance` argument may use.
    name: Arc<str>,
    /// Tools other machines may call here.
    peer_tools: Arc<BTreeSet<String>>,
    /// Who calls, when the whole session has one caller known in advance.
    caller: Option<Caller>,
}

impl RoostTools {
    /// The server of the instance named `name`, reaching no other instance,
    /// opening `peer_tools` to machine callers.
    pub fn new(store: Arc<Store>, name: &str, peer_tools: &[String]) -> RoostTools {
        RoostTools {
            store,
            tools: Arc::new(Action::all().into_iter().map(Action::tool).collect()),
            remote: None,
            agent: None,
            pool: None,
            name: name.into(),
            peer_tools: Arc::new(peer_tools.iter().cloned().collect()),
            caller: None,
        }
    }

    /// The same server for a session whose every request comes from `caller`.
    pub fn for_caller(mut self, caller: Caller) -> RoostTools {
        self.caller = Some(caller);
        self
    }

    /// The same server, able to forward calls to other instances.
    pub fn with_remote(mut self, remote: Arc<dyn Remote>) -> RoostTools {
        self.remote = Some(remote);
        self
    }

    /// The same server, able to say what the lease and the agent are doing.
    pub fn with_agent(mut self, agent: Arc<dyn AgentSource>) -> RoostTools {
        self.agent = Some(agent);
        self
    }

    /// The same server, answering `roost_pool`.
    pub fn with_pool(mut self, pool: Arc<dyn PoolSource>) -> RoostTools {
        self.pool = Some(pool);
        self
    }

    fn remote(&self) -> Result<&Arc<dyn Remote>, String> {
        self.remote.as_ref().ok_or_else(|| "this server cannot reach other instances".to_string())
    }

    /// Whether `name` (an instance name or id) is this instance; compared as
    /// `roost_federation` resolves names (trimmed, names case-insensitive).
    fn is_this_instance(&self, name: &str) -> bool {
        let name = name.trim();
        name == self.store.origin() || self.name.eq_ignore_ascii_case(name)
    }

    /// Refuses what a machine caller may not do here: tools outside the
    /// allowlist, and asking this instance to relay the call again.
    fn admit_machine(&self, caller: &str, action: Action, args: &Map<String, Value>) -> Result<(), String> {
        let tool = action.tool_name();
        // The pool's own protocol: every machine of the chain asks it.
        if action == Action::Pool {
            return Ok(());
        }
        if !action.runs_on_one_instance() {
            return Err(format!("{tool} spans instances; another instance may not relay it through this one"));
        }
        if let Some(target) = args.get(INSTANCE_ARG).and_then(Value::as_str)
            && !self.is_this_instance(target)
        {
            return Err(format!(
                "forwarding onward is refused: a call from another instance cannot be relayed to {target:?}"
            ));
        }
        if !self.peer_tools.contains(&tool) {
            tracing::warn!(%caller, %tool, "refused a peer's call to a tool not open to peers");
            return Err(format!(
                "{tool} is not open to other instances here; add it to [federation] peer_tools in this instance's config.toml to allow it"
            ));
        }
        Ok(())
    }

    async fn run(&self, caller: Caller, action: Action, mut args: Map<String, Value>) -> Result<Value, String> {
        if let Caller::Machine { id } = &caller {
            self.admit_machine(id, action, &args)?;
        }
        let target = match args.remove(INSTANCE_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if action.runs_on_one_instance() => Some(s),
            Some(_) if action.runs_on_one_instance() => {
                return Err(format!("argument `{INSTANCE_ARG}` must be a string"));
            }
            Some(_) => return Err(format!("{} does not take `{INSTANCE_ARG}`", action.tool_name())),
        };
        match target {
            Some(target) if !self.is_this_instance(&target) => {
                return self.remote()?.forward(target, action.tool_name(), args).await.map_err(|e| e.to_string());
            }
            _ => {}
        }
        match action {
            Action::SearchAll => self.remote()?.search_all(args).await.map_err(|e| e.to_string()),
            Action::ListInstances => self.remote()?.list_instances().await.map_err(|e| e.to_string()),
            Action::Pool => match &self.pool {
                // A machine reads a refusal's status from the answer; a
                // person's client gets an error result.
                Some(pool) => match caller {
                    Caller::Machine { id } => Ok(pool.call(Some(id), args).await),
                    Caller::Local => {
                        let answer = pool.call(None, args).await;
                        match answer.get("error").and_then(Value::as_str) {
                            Some(refused) => Err(refused.to_string()),
                            None => Ok(answer),
                        }
                    }
                },
                None => Err(
                    "the pool is off on this machine, or this server does not run it; ask the one `roost serve` runs"
                        .into(),
                ),
            },
            Action::AgentStatus => match &self.agent {
                Some(agent) => agent.status().await,
                None => Err("this server does not run the lease; ask the one `roost serve` runs".into()),
            },
            _ => {
                let store = self.store.clone();
                roost_tasks::blocking("the tool", TOOL_WAIT, move || execute(&store, action, args))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

impl RoostTools {
    /// The caller of one request: the session's, when it has one; else
    /// stdio has no HTTP parts and is local, and over HTTP the gateway always
    /// says, and a request it did not mark is treated as coming from an
    /// unknown machine.
    fn caller_of(&self, context: &RequestContext<RoleServer>) -> Caller {
        if let Some(caller) = &self.caller {
            return caller.clone();
        }
        match context.extensions.get::<http::request::Parts>() {
            None => Caller::Local,
            Some(parts) => {
                parts.extensions.get::<Caller>().cloned().unwrap_or(Caller::Machine { id: "unidentified".into() })
            }
        }
    }
}

impl ServerHandler for RoostTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("roost", env!("CARGO_PKG_VERSION")).with_title("Roost"))
            .with_instructions(INSTRUCTIONS)
    }

    /// Machine callers see only the tools open to them.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = match self.caller_of(&context) {
            Caller::Local => self.tools.as_ref().clone(),
            Caller::Machine { .. } => self
                .tools
                .iter()
                .filter(|t| {
                    self.peer_tools.contains(t.name.as_ref())
                        && Action::parse(&t.name).is_some_and(Action::runs_on_one_instance)
                })
                .cloned()
                .collect(),
        };
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    /// A request rmcp could not read as any method it knows. For a method
    /// this server offers, that means its params were malformed: -32602,
    /// not "method not found".
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        const OFFERED: [&str; 4] = ["initialize", "ping", "tools/list", "tools/call"];
        let method = request.method.as_str();
        if !OFFERED.contains(&method) {
            return Err(ErrorData::new(ErrorCode::METHOD_NOT_FOUND, request.method, None));
        }
        let reason = match request.params_as::<CallToolRequestParams>() {
            Err(e) if method == "tools/call" => e.to_string(),
            Ok(None) if method == "tools/call" => "they are missing; give name and arguments".to_string(),
            _ => "they do not have the shape the specification gives".to_string(),
        };
        Err(ErrorData::invalid_params(format!("invalid params for {method}: {reason}"), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(action) = Action::parse(&request.name) else {
            return Err(ErrorData::invalid_params(format!("unknown tool {:?}", request.name), None));
        };
        let args = request.arguments.unwrap_or_default();
        let outcome = self.run(self.caller_of(&context), action, args).await;
        let labels = [("tool", request.name.as_ref()), ("outcome", if outcome.is_ok() { "ok" } else { "error" })];
        roost_metrics::count(&roost_metrics::metrics().tool_calls, &labels);
        Ok(match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(message) => {
                tracing::debug!(tool = %request.name, %message, "tool refused");
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
        }
        .into())
    }
}

/// Runs one tool call against the store. Errors are one line for the caller.
pub fn execute(store: &Store, action: Action, mut args: Map<String, Value>) -> Result<Value, String> {
    let allowed = action.arguments();
    if let Some(unknown) = args.keys().find(|k| !allowed.contains(k)) {
        return Err(format!(
            "unknown argument `{unknown}` for {}; accepted: {}",
            action.tool_name(),
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        ));
    }
    let err = |e: roost_store::StoreError| e.to_string();
    match action {
        Action::Create(table) => store.write(Mutation::Create { table, fields: args }).map(Value::Object).map_err(err),
        Action::StoreMemories => {
            let memories = batch_of_memories(args.remove("memories"))?;
            let items = store.write_all(memories).map_err(err)?;
            Ok(json!({"count": items.len(), "items": items}))
        }
        Action::Get(table) => {
            let id = take_string(&mut args, "id")?.ok_or("argument `id` is required")?;
            let row = store.get(table, &id).map_err(err)?;
            if table == Table::Memories {
                let id = row["id"].as_str().unwrap_or_default().to_string();
                store.record_access(&id).map_err(err)?;
                return store.get(table, &id).map(Value::Object).map_err(err);
            }
            Ok(Value::Object(row))
        }
        Action::List(table) => {
            let query = ListQuery {
                tag: take_string(&mut args, "tag")?,
                sort: match take_string(&mut args, "sort")? {
                    Some(s) => Sort::parse(&s).ok_or(format!("argument `sort`: unknown order {s:?}"))?,
                    None => Sort::Recent,
                },
                limit: take_u32(&mut args, "limit")?.unwrap_or(0),
                offset: take_u32(&mut args, "offset")?.unwrap_or(0),
                filters: args,
            };
            let items = store.list(table, &query).map_err(err)?;
            Ok(json!({"count": items.len(), "items": items}))
        }
        Action::Update(table) => {
            let id = take_string(&mut args, "id")?.ok_or("argument `id` is required")?;
            store.write(Mutation::Update { table, key: id, patch: args }).map(Value::Object).map_err(err)
        }
        Action::Delete(table) => {
            let id = take_string(&mut args, "id")?.ok_or("argument `id` is required")?;
            let tombstone = store.write(Mutation::Delete { table, key: id }).map_err(err)?;
            Ok(json!({"deleted": tombstone["id"], "table": table.name()}))
        }
        Action::SearchMemories => {
            let query = SearchQuery {
                query: take_string(&mut args, "query")?.ok_or("argument `query` is required")?,
                category: take_string(&mut args, "category")?,
                min_importance: take_u32(&mut args, "min_importance")?.map(i64::from),
                project: take_string(&mut args, "project")?,
                tag: take_string(&mut args, "tag")?,
                limit: take_u32(&mut args, "limit")?.unwrap_or(0),
            };
            let hits = store.search_memories(&query).map_err(err)?;
            Ok(json!({"count": hits.len(), "results": hits}))
        }
        Action::MemoryStats => store.memory_stats().map_err(err),
        Action::SearchAll | Action::ListInstances | Action::AgentStatus | Action::Pool => {
            Err(format!("{} needs the running server: call it through MCP", action.tool_name()))
        }
        Action::AgentTopic => {
            let topic = take_string(&mut args, "topic")?.ok_or("argument `topic` is required")?;
            let limit = take_u32(&mut args, "limit")?.unwrap_or(50).clamp(1, 500) as usize;
            let entries = store.ledger(Some(&topic)).map_err(err)?;
            let skip = entries.len().saturating_sub(limit);
            let messages: Vec<Value> = entries[skip..]
                .iter()
                .map(|e| {
                    let reply = e.reply.as_ref();
                    json!({
                        "message_id": e.message.message_id, "channel": e.message.channel, "sender": e.message.sender,
                        "text": e.message.text, "received_at": e.message.received_at,
                        "stage": reply.map(|(r, _)| r.stage), "reply": reply.and_then(|(r, _)| r.text.clone()),
                        "epoch": reply.map(|(_, epoch)| epoch), "replied_by": reply.map(|(r, _)| r.machine.clone()),
                    })
                })
                .collect();
            Ok(json!({"topic": topic, "count": messages.len(), "messages": messages}))
        }
        Action::ListSyncConflicts => {
            let include_resolved = match args.remove("include_resolved") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(_) => return Err("argument `include_resolved` must be true or false".into()),
            };
            let limit = take_u32(&mut args, "limit")?.unwrap_or(50);
            let conflicts = store.conflicts(include_resolved, limit).map_err(err)?;
            Ok(json!({"count": conflicts.len(), "conflicts": conflicts}))
        }
        Action::ResolveSyncConflict => {
            let id = take_string(&mut args, "id")?.ok_or("argument `id` is required")?;
            let keep = take_string(&mut args, "keep")?.ok_or("argument `keep` is required")?;
            let fields = match args.remove("fields") {
                None | Some(Value::Null) => None,
                Some(Value::Object(fields)) => Some(fields),
                Some(_) => return Err("argument `fields` must be an object of field: value".into()),
            };
            let keep = Keep::parse(&keep, fields).map_err(|e| e.to_string())?;
            let row = store.write(Mutation::Resolve { conflict: id.clone(), keep }).map_err(err)?;
            let conflict = store.conflict(&id).map_err(err)?;
            Ok(json!({"conflict": conflict, "row": row}))
        }
    }
}

/// The `memories` argument as creates, each checked first so that an error
/// names the memory it is about.
fn batch_of_memories(memories: Option<Value>) -> Result<Vec<Mutation>, String> {
    let Some(Value::Array(memories)) = memories else {
        return Err("argument `memories` is required: an array of memories, each as roost_store_memory takes it".into());
    };
    if memories.is_empty() || memories.len() > catalog::MAX_BATCH {
        return Err(format!(
            "argument `memories` holds {} memories; give 1 to {} per call",
            memories.len(),
            catalog::MAX_BATCH
        ));
    }
    let count = memories.len();
    memories
        .into_iter()
        .enumerate()
        .map(|(i, memory)| {
            let Value::Object(fields) = memory else {
                return Err(format!("memory {} of {count} is not an object of fields; nothing was stored", i + 1));
            };
            roost_core::validate::validate_create(Table::Memories, &fields)
                .map_err(|e| format!("memory {} of {count}: {e}; nothing was stored", i + 1))?;
            Ok(Mutation::Create { table: Table::Memories, fields })
        })
        .collect()
}

fn take_string(args: &mut Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match args.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("argument `{name}` must be a string (got {other})")),
    }
}

fn take_u32(args: &mut Map<String, Value>, name: &str) -> Result<Option<u32>, String> {
    match args.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or(format!("argument `{name}` must be a non-negative integer (got {n})")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("argument `{name}` must be a non-negative integer (got {s:?})")),
        Some(other) => Err(format!("argument `{name}` must be a non-negative integer (got {other})")),
    }
}
