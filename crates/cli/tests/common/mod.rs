//! Helpers for end-to-end tests: real `roost` processes on temporary homes,
//! driven by the official rmcp client over Streamable HTTP and stdio.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Map, Value, json};

pub type Client = RunningService<RoleClient, ClientConfig>;

pub fn roost_bin() -> &'static str {
    env!("CARGO_BIN_EXE_roost")
}

/// Runs `roost --home HOME ARGS...` to completion.
pub fn roost(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(roost_bin()).arg("--home").arg(home).args(args).output().expect("running roost")
}

/// A `roost serve` process on a free loopback port; stopped on drop.
pub struct Served {
    pub child: Child,
    pub addr: String,
    pub home: PathBuf,
}

impl Served {
    pub fn start(home: &Path) -> Served {
        Served::run(home, "serve")
    }

    /// Starts `roost COMMAND` (`serve` or `witness`) on a free loopback port.
    pub fn run(home: &Path, command: &str) -> Served {
        let mut child = Command::new(roost_bin())
            .args([command, "--bind", "127.0.0.1:0", "--name", "test", "--home"])
            .arg(home)
            .env("RUST_LOG", std::env::var("ROOST_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning roost serve");
        let addr = listening_address(&mut child);
        Served { child, addr, home: home.to_path_buf() }
    }

    /// GET `path` on this gateway and parse the JSON body (plain HTTP/1.0,
    /// bounded), or None when it does not answer.
    pub fn get(&self, path: &str) -> Option<Value> {
        get_json(&self.addr, path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.child, "TERM");
        let status = wait_bounded(&mut self.child, Duration::from_secs(10));
        std::mem::forget(self);
        status
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` at `addr` (IP:port) and parse the JSON body (plain HTTP/1.0,
/// bounded), or None when nothing answers in time.
pub fn get_json(addr: &str, path: &str) -> Option<Value> {
    let (_, answer) = exchange(addr, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"), HTTP_LIMIT).ok()?;
    (!answer.is_null()).then_some(answer)
}

/// How long [`get_json`] and [`try_post_json`] wait to connect, and then
/// for the answer.
const HTTP_LIMIT: Duration = Duration::from_secs(3);

/// Sends one HTTP/1.0 `request` to `addr` and reads the answer until the
/// server closes: its status and its body parsed as JSON (null if it is
/// not), or what went wrong, within `limit` for the connection and again
/// for the answer.
fn exchange(addr: &str, request: &str, limit: Duration) -> Result<(u16, Value), String> {
    let (status, body) = exchange_text(addr, request, limit)?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// GET `path` at `addr` with the extra header lines `headers` (each ending
/// in CRLF): the status and the body as text.
pub fn get_text(addr: &str, path: &str, headers: &str) -> Result<(u16, String), String> {
    exchange_text(addr, &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"), HTTP_LIMIT)
}

/// [`exchange`], with the body as text.
fn exchange_text(addr: &str, request: &str, limit: Duration) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let at: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&at, limit).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(limit))
        .and_then(|()| stream.set_write_timeout(Some(limit)))
        .map_err(|e| e.to_string())?;
    stream.write_all(request.as_bytes()).map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("reading from {addr}: {e}"))?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Ok((status, body))
}

pub fn signal(child: &Child, name: &str) {
    Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// reqwest needs a rustls provider chosen before its first client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn connect_http(addr: &str) -> Client {
    install_tls_provider();
    ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp")))
        .await
        .expect("MCP over Streamable HTTP")
}

pub async fn connect_stdio(home: &Path) -> Client {
    let mut command = tokio::process::Command::new(roost_bin());
    command.arg("--home").arg(home).arg("mcp").env("RUST_LOG", "warn");
    ClientConfig::default().serve(TokioChildProcess::new(command).unwrap()).await.expect("MCP over stdio")
}

/// Calls a tool: `Ok(structured result)` or `Err(error text)` for a tool error.
pub async fn call(client: &Client, tool: &str, args: Value) -> Result<Value, String> {
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"));
    let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n");
    if result.is_error == Some(true) {
        Err(text)
    } else {
        Ok(result.structured_content.unwrap_or_else(|| serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }
}

/// Calls a tool that must succeed.
pub async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    call(client, tool, args.clone()).await.unwrap_or_else(|e| panic!("{tool}({args}) failed: {e}"))
}

/// Calls a tool that must fail; returns its message.
pub async fn refused(client: &Client, tool: &str, args: Value) -> String {
    match call(client, tool, args.clone()).await {
        Ok(v) => panic!("{tool}({args}) should have failed, returned {v}"),
        Err(message) => message,
    }
}

// Chains of machines sharing one identity, driven through the CLI.

pub const WAIT: Duration = Duration::from_secs(60);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn succeeded(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stdout(&out)
}

pub fn json_of(out: std::process::Output) -> Value {
    serde_json::from_str(&succeeded(out)).expect("JSON output")
}

/// A chain formed the way a person forms it: `roost init` on each home,
/// `setup` (config edits) before anything runs, `roost serve` on each, then
/// every machine after the first joins by `roost pair` on the machine
/// `sponsor(i)` names and `roost join` with its code. `witnesses` run
/// `roost witness` instead of `roost serve`.
pub fn chain_with(
    root: &Path,
    names: &[&str],
    witnesses: &[&str],
    setup: impl Fn(&[PathBuf]),
    sponsor: impl Fn(usize) -> usize,
) -> (Vec<PathBuf>, Vec<Served>) {
    let homes: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    for (home, name) in homes.iter().zip(names) {
        succeeded(roost(home, &["init", "--name", name]));
    }
    setup(&homes);
    let served: Vec<Served> = homes
        .iter()
        .zip(names)
        .map(|(home, name)| Served::run(home, if witnesses.contains(name) { "witness" } else { "serve" }))
        .collect();
    for i in 1..homes.len() {
        let by = sponsor(i);
        join(&homes[i], &homes[by], &served[by]);
    }
    (homes, served)
}

/// [`chain_with`]: every machine joins through the first, none a witness.
pub fn chain(root: &Path, names: &[&str]) -> (Vec<PathBuf>, Vec<Served>) {
    chain_with(root, names, &[], |_| {}, |_| 0)
}

/// `roost join` on `home` through the machine at `sponsor`, whose gateway
/// `served` runs, with a code `roost pair` offers there.
pub fn join(home: &Path, sponsor: &Path, served: &Served) {
    let offered = succeeded(roost(sponsor, &["pair", "--no-wait"]));
    let code = offered
        .lines()
        .find_map(|l| l.strip_prefix("pairing code: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pairing code in {offered:?}"))
        .to_string();
    succeeded(roost(home, &["join", &format!("http://{}", served.addr), "--code", &code, "--yes"]));
}

pub fn add(home: &Path, content: &str) -> String {
    json_of(roost(home, &["memory", "add", content, "--json"]))["id"].as_str().unwrap().to_string()
}

pub fn edit(home: &Path, id: &str, content: &str) {
    succeeded(roost(home, &["memory", "update", id, "--content", content]));
}

pub fn content(home: &Path, id: &str) -> Option<String> {
    let out = roost(home, &["memory", "get", id, "--json"]);
    out.status.success().then(|| json_of(out)["content"].as_str().unwrap().to_string())
}

pub fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sync_wait(home: &Path) {
    succeeded(roost(home, &["sync", "wait", "--timeout", "60"]));
}

pub fn conflicts(home: &Path) -> Vec<Value> {
    json_of(roost(home, &["conflicts", "list", "--json"])).as_array().unwrap().clone()
}

/// Sets `key = value` in the config.toml of `home`, where the key is.
pub fn configure(home: &Path, key: &str, value: &str) {
    let config = home.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{key} ="))).unwrap_or_else(|| panic!("{key} in {text}"));
    std::fs::write(&config, text.replace(line, &format!("{key} = {value}"))).unwrap();
}

/// The address `roost serve` (or `witness`) announces on its first line
/// of stdout.
pub fn listening_address(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut line).unwrap();
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from roost serve: {line:?}"))
        .to_string()
}

/// One reply a [`Webhook`] received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: String,
    pub body: Value,
}

/// A local webhook receiver: records every POST with its `Idempotency-Key`
/// and answers 200, or 500 while `failing` is set. Plain HTTP/1.1 with
/// keep-alive, a thread per connection; stops with the test process.
pub struct Webhook {
    pub url: String,
    pub deliveries: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
    pub failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Webhook {
    pub fn start() -> Webhook {
        Webhook::listening(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), "127.0.0.1")
    }

    /// A receiver on `listener`, which the machines reach as `host`.
    pub fn listening(listener: std::net::TcpListener, host: &str) -> Webhook {
        let url = format!("http://{host}:{}/hook", listener.local_addr().unwrap().port());
        let deliveries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kept, fail) = (deliveries.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, fail) = (kept.clone(), fail.clone());
                std::thread::spawn(move || serve_hook(stream, &kept, &fail));
            }
        });
        Webhook { url, deliveries, failing }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request off a keep-alive connection: its request line,
/// headers and body; None once the peer closes.
fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> Option<(String, Vec<String>, Vec<u8>)> {
    use std::io::Read;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        headers.push(line.trim_end().to_string());
    }
    let length: usize = header_of(&headers, "content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((request_line.trim_end().to_string(), headers, body))
}

fn header_of(headers: &[String], name: &str) -> Option<String> {
    headers.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn serve_hook(
    stream: std::net::TcpStream,
    kept: &std::sync::Mutex<Vec<Delivery>>,
    failing: &std::sync::atomic::AtomicBool,
) {
    use std::io::Write;
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some((_, headers, body)) = read_request(&mut reader) {
        let status = if failing.load(std::sync::atomic::Ordering::SeqCst) {
            "500 Internal Server Error"
        } else {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            kept.lock()
                .unwrap()
                .push(Delivery { key: header_of(&headers, "idempotency-key").unwrap_or_default(), body });
            "200 OK"
        };
        if write!(writer, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

/// Checks what a [`Webhook`] received against the messages posted, each
/// topic's message ids in the order they were posted: every message has one
/// key and one reply text, no key carried two different bodies, and each
/// topic's replies first arrived in message order, leaving out the `late`
/// messages (taken by a machine out of touch with the awake one, so
/// answered whenever they reach it); `explain(topic)` adds to the panic when
/// not. Returns the re-sends: deliveries beyond one per key.
pub fn one_reply_each_in_order(
    deliveries: &[Delivery],
    order: &std::collections::BTreeMap<String, Vec<String>>,
    late: &std::collections::BTreeSet<String>,
    explain: impl Fn(&str) -> String,
) -> usize {
    use std::collections::{BTreeMap, BTreeSet};
    let mut bodies_by_key: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut texts_by_message: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for d in deliveries {
        bodies_by_key.entry(&d.key).or_default().insert(d.body.to_string());
        texts_by_message
            .entry(d.body["message_id"].as_str().unwrap_or_default())
            .or_default()
            .insert(d.body["text"].as_str().unwrap_or_default());
    }
    for (key, bodies) in &bodies_by_key {
        assert_eq!(bodies.len(), 1, "idempotency key {key} carried different bodies: {bodies:?}");
    }
    for (message, texts) in &texts_by_message {
        assert_eq!(texts.len(), 1, "message {message} got different replies: {texts:?}");
    }
    let messages: usize = order.values().map(Vec::len).sum();
    assert_eq!(texts_by_message.len(), messages, "a reply to every message posted, and to nothing else");
    assert_eq!(bodies_by_key.len(), messages, "one key per message");
    for (topic, ids) in order {
        let in_topic: Vec<&Delivery> = deliveries.iter().filter(|d| d.body["topic"] == topic.as_str()).collect();
        let mut first_seen: Vec<&str> = Vec::new();
        for d in &in_topic {
            let id = d.body["message_id"].as_str().unwrap_or_default();
            if !first_seen.contains(&id) && !late.contains(id) {
                first_seen.push(id);
            }
        }
        let in_order: Vec<&String> = ids.iter().filter(|id| !late.contains(*id)).collect();
        if first_seen != in_order {
            let sent: Vec<String> = in_topic
                .iter()
                .map(|d| format!("{} epoch {} by {}", d.body["message_id"], d.body["epoch"], d.body["machine"]))
                .collect();
            panic!("replies in {topic} left out of message order: {first_seen:?}\n{}\n{sent:#?}", explain(topic));
        }
    }
    deliveries.len() - bodies_by_key.len()
}

/// The messages of `topic` as the gateway at `addr` lists them, each with
/// its stage, reply and the machine that replied; empty while it does not
/// answer.
pub fn topic_messages(addr: &str, topic: &str) -> Vec<Value> {
    get_json(addr, &format!("/api/v1/agent/topics/{topic}"))
        .and_then(|v| v["messages"].as_array().cloned())
        .unwrap_or_default()
}

/// (message id, stage, reply, replied by) of each message of `topic` at
/// the gateway at `addr`.
pub fn topic_view(addr: &str, topic: &str) -> Vec<(String, String, String, String)> {
    topic_messages(addr, topic)
        .iter()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (text("message_id"), text("stage"), text("reply"), text("replied_by"))
        })
        .collect()
}

/// Each message of `topic` at the gateway at `addr` in one line: who
/// received it when, its stage, and the epoch and machine of its reply; for
/// a test's panic.
pub fn ledger_lines(addr: &str, topic: &str) -> Vec<String> {
    topic_messages(addr, topic)
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].to_string();
            format!(
                "{} received {} by {}, {} at epoch {} by {}",
                field("message_id"),
                field("received_at"),
                field("received_by"),
                field("stage"),
                field("epoch"),
                field("replied_by")
            )
        })
        .collect()
}

/// A message a [`FakeTelegram`] bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotSent {
    pub chat: i64,
    pub reply_to: Option<i64>,
    pub text: String,
}

#[derive(Default)]
struct Bot {
    next_update: i64,
    next_message: i64,
    /// Updates not yet confirmed (asked past).
    pending: Vec<Value>,
    sent: Vec<BotSent>,
    /// Counts `getUpdates` requests; a newer one ends an older one, as
    /// Telegram does, with 409 Conflict.
    polls: u64,
    conflicts: u64,
    /// How long `sendMessage` answers after taking a message.
    answer_delay: Duration,
}

/// A local server speaking the Telegram Bot API's `getUpdates` (long
/// polling, offsets confirming updates, 409 when a second poller cuts in)
/// and `sendMessage`, for one bot `token`. The test speaks to the bot with
/// [`FakeTelegram::say`].
pub struct FakeTelegram {
    pub url: String,
    pub token: String,
    bot: std::sync::Arc<(std::sync::Mutex<Bot>, std::sync::Condvar)>,
}

impl FakeTelegram {
    pub fn start() -> FakeTelegram {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let token = format!("{}:AAH-fake_{}", rand_digits(), rand_digits());
        let bot = std::sync::Arc::new((std::sync::Mutex::new(Bot::default()), std::sync::Condvar::new()));
        let (shared, path) = (bot.clone(), format!("/bot{token}/"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (bot, path) = (shared.clone(), path.clone());
                std::thread::spawn(move || serve_bot(stream, &bot, &path));
            }
        });
        FakeTelegram { url, token, bot }
    }

    /// A person writes `text` in `chat`; the bot's message id for it.
    pub fn say(&self, chat: i64, text: &str) -> i64 {
        let (lock, wake) = &*self.bot;
        let mut bot = lock.lock().unwrap();
        bot.next_update += 1;
        bot.next_message += 1;
        let update = json!({
            "update_id": 1000 + bot.next_update,
            "message": {"message_id": bot.next_message, "chat": {"id": chat, "type": "private"},
                        "from": {"id": 7, "is_bot": false, "first_name": "Ann"}, "date": 0, "text": text},
        });
        bot.pending.push(update);
        wake.notify_all();
        bot.next_message
    }

    pub fn sent(&self) -> Vec<BotSent> {
        self.bot.0.lock().unwrap().sent.clone()
    }

    /// From now on `sendMessage` answers `delay` after it took the message,
    /// as over a slow network: a kill then falls between the two.
    pub fn slow_answers(&self, delay: Duration) {
        self.bot.0.lock().unwrap().answer_delay = delay;
    }

    /// Polls ended by a newer poll: two pollers at once.
    pub fn conflicts(&self) -> u64 {
        self.bot.0.lock().unwrap().conflicts
    }
}

fn rand_digits() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 + 1
}

fn serve_bot(stream: std::net::TcpStream, bot: &(std::sync::Mutex<Bot>, std::sync::Condvar), path: &str) {
    use std::io::Write;
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some((request_line, _, body)) = read_request(&mut reader) {
        let target = request_line.split_whitespace().nth(1).unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (status, answer) = match target.strip_prefix(path) {
            Some("getUpdates") => get_updates(bot, &body),
            Some("sendMessage") => {
                let mut state = bot.0.lock().unwrap();
                state.sent.push(BotSent {
                    chat: body["chat_id"].as_i64().unwrap(),
                    reply_to: body["reply_parameters"]["message_id"].as_i64(),
                    text: body["text"].as_str().unwrap().to_string(),
                });
                state.next_message += 1;
                let (answer, delay) = (state.next_message, state.answer_delay);
                drop(state);
                std::thread::sleep(delay);
                (200, json!({"ok": true, "result": {"message_id": answer}}))
            }
            _ => (404, json!({"ok": false, "error_code": 404, "description": "Not Found"})),
        };
        let answer = answer.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all((head + &answer).as_bytes()).is_err() {
            return;
        }
    }
}

fn get_updates(bot: &(std::sync::Mutex<Bot>, std::sync::Condvar), body: &Value) -> (u16, Value) {
    let (lock, wake) = bot;
    let offset = body["offset"].as_i64().unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
    let mut state = lock.lock().unwrap();
    state.pending.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
    state.polls += 1;
    let mine = state.polls;
    wake.notify_all();
    loop {
        if state.polls != mine {
            state.conflicts += 1;
            let why =
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
            return (409, json!({"ok": false, "error_code": 409, "description": why}));
        }
        let now = std::time::Instant::now();
        if !state.pending.is_empty() || now >= deadline {
            return (200, json!({"ok": true, "result": state.pending.iter().take(100).collect::<Vec<_>>()}));
        }
        state = wake.wait_timeout(state, deadline - now).unwrap().0;
    }
}

pub fn configure_agent(home: &Path, section: &str) {
    use std::io::Write;
    let mut config = std::fs::OpenOptions::new().append(true).open(home.join("config.toml")).unwrap();
    writeln!(config, "\n{section}").unwrap();
}

/// POSTs `body` as JSON to `url` (plain HTTP/1.0, bounded); the status and
/// the parsed answer.
pub fn post_json(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    try_post_json(addr, path, body, Duration::from_secs(10)).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// [`post_json`], saying what went wrong instead of panicking, within
/// `limit` to connect and again for the answer.
pub fn try_post_json(addr: &str, path: &str, body: &Value, limit: Duration) -> Result<(u16, Value), String> {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, &request, limit)
}

/// The lease part of a machine's `/health`, or null while it does not answer.
pub fn lease(s: &Served) -> Value {
    s.get("/health").map(|h| h["lease"].clone()).unwrap_or(Value::Null)
}

/// Waits until every machine counts `n` voters and hears them all.
pub fn until_every_voter_heard(served: &[Served], n: usize) {
    until("every machine counts and hears every voter", || {
        served.iter().all(|s| {
            let l = lease(s);
            l["voters"] == n && l["voters_heard"] == n
        })
    });
}
