//! A real `roost serve` probed as a hostile web page, a hostile neighbour
//! and a careless client would probe it: cross-site requests, slow and
//! silent connections, descriptor exhaustion, a flood of MCP sessions,
//! malformed searches, a rebinding page, and the edges of MCP's transports.
//!
//! The tests that load the machine take turns ([`HEAVY`]), so that one's
//! load never shows in another's timings.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Served, json_of, roost, roost_bin, succeeded};

/// One load test at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The gateway's limits, as `roost_gateway::conn` sets them.
const HEADER_READ_TIMEOUT: Duration = roost_gateway::conn::HEADER_READ_TIMEOUT;

const NEST_PASSWORD: &str = "correct horse battery";

/// `roost serve` on a fresh home in `dir`, its log kept in `serve.log`;
/// with `descriptors`, under that soft and hard limit on open files.
fn serve(dir: &Path, descriptors: Option<u64>) -> (Served, PathBuf) {
    let home = dir.join("home");
    succeeded(roost(&home, &["init", "--name", "hostile"]));
    let log = dir.join("serve.log");
    let mut command = match descriptors {
        Some(n) => {
            let mut sh = Command::new("sh");
            sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), roost_bin()]);
            sh
        }
        None => Command::new(roost_bin()),
    };
    let mut child = command
        .args(["serve", "--bind", "127.0.0.1:0", "--home"])
        .arg(&home)
        .env("RUST_LOG", "warn,roost=info,roost_gateway=info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawning roost serve");
    let addr = common::listening_address(&mut child);
    (Served { child, addr, home }, log)
}

/// An answer read off the wire.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The JSON-RPC answer: the body when it is JSON, else the event of an
    /// SSE body that carries an id.
    fn message(&self) -> Value {
        if self.header("content-type") == Some("application/json") {
            return self.json();
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .find(|m| m.get("id").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC answer in {}", self.body))
    }
}

/// One HTTP/1.1 connection, kept alive between requests.
struct Http {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Http {
    fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Http { reader: BufReader::new(stream), host: addr.to_string() }
    }

    /// Sends a request with `headers` (Host and Content-Length are added)
    /// and reads the whole answer.
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        self.read_answer()
    }

    fn read_answer(&mut self) -> Answer {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else { break };
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut answer = Answer { status, headers, body: String::new() };
        let mut body = Vec::new();
        if answer.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("chunk size {line:?}"));
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = answer.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).unwrap();
        }
        answer.body = String::from_utf8_lossy(&body).into_owned();
        answer
    }
}

/// A request on a connection of its own.
fn once(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    Http::connect(addr).send(method, path, headers, body)
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const MCP_ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

fn initialize(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hostile", "version": "1"}}})
    .to_string()
}

/// Opens an MCP session on `http`; returns its id.
fn open_session(http: &mut Http) -> String {
    let answer = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT], &initialize(1));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let session = answer.header("mcp-session-id").expect("a session id").to_string();
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let accepted = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT, ("Mcp-Session-Id", &session)], &done);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    session
}

fn set_nest_password(home: &Path) {
    let out = Command::new(roost_bin())
        .arg("--home")
        .arg(home)
        .args(["nest", "password"])
        .env("ROOST_NEST_PASSWORD", NEST_PASSWORD)
        .output()
        .unwrap();
    succeeded(out);
}

/// Logs in to the Nest as a browser on its own page would; returns the
/// session cookie and the session's CSRF token.
fn nest_login(addr: &str) -> (String, String) {
    let form = once(addr, "GET", "/nest/login", &[], "");
    let cookie = form.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let token = cookie.split_once('=').unwrap().1.to_string();
    let origin = format!("http://{addr}");
    let body = format!("csrf={token}&password={}", NEST_PASSWORD.replace(' ', "+"));
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let signed_in = once(addr, "POST", "/nest/login", &headers, &body);
    assert_eq!(signed_in.status, 303, "the Nest's own login form passes: {}", signed_in.body);
    let session = signed_in
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("roost_nest="))
        .unwrap();
    let page = once(addr, "GET", "/nest/memories", &[("Cookie", &session)], "");
    let csrf = page.body.split(r#"name="csrf" value=""#).nth(1).unwrap().split('"').next().unwrap().to_string();
    (session, csrf)
}

#[test]
fn cross_site_requests_are_refused_on_every_state_changing_route() {
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    let addr = served.addr.clone();
    set_nest_password(&served.home);
    succeeded(roost(&served.home, &["pair", "--no-wait"]));
    let (nest_session, csrf) = nest_login(&addr);

    let form = format!("csrf={csrf}&keep=local");
    let routes: [(&str, String); 10] = [
        ("/api/v1/conflicts/0190a000-0000-7000-8000-000000000000/resolve", json!({"keep": "local"}).to_string()),
        ("/api/v1/pair/start", json!({"message": "AAAA"}).to_string()),
        ("/api/v1/pair/finish", json!({"session": "x", "confirmation": "AA", "sealed": "AA"}).to_string()),
        ("/api/v1/lease/wakeup", json!({"force": true}).to_string()),
        ("/api/v1/lease/leave", "{}".to_string()),
        ("/api/v1/local/reload", "{}".to_string()),
        ("/mcp", initialize(1)),
        ("/nest/login", format!("csrf={csrf}&password=x")),
        ("/nest/logout", form.clone()),
        ("/nest/conflicts/0190a000-0000-7000-8000-000000000000/resolve", form.clone()),
    ];
    let own = format!("http://{addr}");
    let other_port =
        format!("http://127.0.0.1:{}", served.addr.rsplit(':').next().unwrap().parse::<u16>().unwrap() ^ 1);
    for (path, body) in &routes {
        let cookie = ("Cookie", nest_session.as_str());
        // What a form or a preflight-free fetch on another site sends.
        let as_a_form = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
            cookie,
            MCP_ACCEPT,
        ];
        let foreign_json = [JSON, ("Origin", "http://evil.example"), cookie, MCP_ACCEPT];
        let file_page = [JSON, ("Origin", "null"), cookie, MCP_ACCEPT];
        let fetch_metadata_only = [JSON, ("Sec-Fetch-Site", "cross-site"), cookie, MCP_ACCEPT];
        let another_local_port =
            [JSON, ("Origin", other_port.as_str()), ("Sec-Fetch-Site", "same-site"), cookie, MCP_ACCEPT];
        for (what, headers) in [
            ("a cross-site form", &as_a_form[..]),
            ("a foreign Origin", &foreign_json[..]),
            ("Origin: null", &file_page[..]),
            ("Sec-Fetch-Site: cross-site", &fetch_metadata_only[..]),
            ("another port of localhost", &another_local_port[..]),
        ] {
            let refused = once(&addr, "POST", path, headers, body);
            assert_eq!(refused.status, 403, "{what} to {path}: {}", refused.body);
            assert!(refused.body.contains("cross-site request refused"), "{what} to {path}: {}", refused.body);
        }
        if path.starts_with("/api/") {
            let plain = once(&addr, "POST", path, &[("Content-Type", "text/plain")], body);
            assert_eq!(plain.status, 415, "a body that is not JSON to {path}: {}", plain.body);
            let none = once(&addr, "POST", path, &[], "");
            assert_eq!(none.status, 415, "no body to {path}: {}", none.body);
        }
    }

    // Nothing was done: the code on offer was never tried, the Nest session lives.
    let offer: Value = serde_json::from_slice(&std::fs::read(served.home.join("pairing.json")).unwrap()).unwrap();
    assert_eq!(offer["attempts"], 0, "refused requests never reached the pairing code");
    let still = once(&addr, "GET", "/nest/memories", &[("Cookie", &nest_session)], "");
    assert_eq!(still.status, 200, "the cross-site logout did nothing");

    // The same requests from the CLI, another machine or the Nest's own
    // pages reach their handlers.
    let from_cli = once(&addr, "POST", routes[0].0, &[JSON], &routes[0].1);
    assert_eq!(from_cli.status, 404, "no such conflict, said by the handler: {}", from_cli.body);
    let from_a_machine = once(&addr, "POST", routes[1].0, &[JSON], &routes[1].1);
    assert_eq!(from_a_machine.status, 400, "a malformed SPAKE2 message, said by the handler: {}", from_a_machine.body);
    let same_origin = [JSON, ("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let own_page = once(&addr, "POST", routes[0].0, &same_origin, &routes[0].1);
    assert_eq!(own_page.status, 404, "{}", own_page.body);
    let socket_only = once(&addr, "POST", routes[3].0, &[JSON], &routes[3].1);
    assert_eq!(socket_only.status, 403, "{}", socket_only.body);
    assert!(socket_only.body.contains("this machine's own user"), "{}", socket_only.body);
    let mcp_own = once(&addr, "POST", "/mcp", &[JSON, MCP_ACCEPT, ("Origin", own.as_str())], &initialize(1));
    assert_eq!(mcp_own.status, 200, "{}", mcp_own.body);
    let logout_headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", nest_session.as_str()),
        ("Origin", own.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let logout = once(&addr, "POST", "/nest/logout", &logout_headers, &form);
    assert_eq!(logout.status, 303, "{}", logout.body);
}

/// The connections of a slow or silent client.
struct Attackers {
    streams: Vec<Option<TcpStream>>,
    closed_after: Vec<Option<Duration>>,
    started: Instant,
}

impl Attackers {
    /// Opens `n` connections and sends each the start of a request head.
    fn open(addr: &str, n: usize, first_bytes: &[u8]) -> Attackers {
        let streams = (0..n)
            .map(|_| {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.write_all(first_bytes).unwrap();
                stream.set_nonblocking(true).unwrap();
                Some(stream)
            })
            .collect();
        Attackers { streams, closed_after: vec![None; n], started: Instant::now() }
    }

    /// Sends one more byte on each open connection (when `trickle`) and
    /// notes those the server closed (or answered, which hyper does only to
    /// close them).
    fn poll(&mut self, trickle: bool) {
        for (i, slot) in self.streams.iter_mut().enumerate() {
            let Some(stream) = slot else { continue };
            let mut buffer = [0u8; 512];
            let closed = match stream.read(&mut buffer) {
                Ok(_) => true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    trickle && stream.write(b"a").is_err_and(|e| e.kind() != ErrorKind::WouldBlock)
                }
                Err(_) => true,
            };
            if closed {
                *slot = None;
                self.closed_after[i] = Some(self.started.elapsed());
            }
        }
    }

    fn open_count(&self) -> usize {
        self.streams.iter().filter(|s| s.is_some()).count()
    }
}

/// GET /health on a new connection: its status and how long the answer took.
fn health(addr: &str) -> (u16, Duration) {
    let started = Instant::now();
    let answer = once(addr, "GET", "/health", &[("Connection", "close")], "");
    (answer.status, started.elapsed())
}

#[test]
fn slowloris_connections_are_closed_within_the_header_timeout_while_health_stays_fast() {
    let _turn = heavy();
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    let head = format!("GET /health HTTP/1.1\r\nHost: {}\r\nX-Slow: ", served.addr);
    let mut attackers = Attackers::open(&served.addr, 300, head.as_bytes());
    let mut latencies = Vec::new();
    let deadline = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    let mut last_trickle = Instant::now();
    while attackers.open_count() > 0 && attackers.started.elapsed() < deadline {
        let trickle = last_trickle.elapsed() >= Duration::from_secs(1);
        if trickle {
            last_trickle = Instant::now();
        }
        attackers.poll(trickle);
        let (status, took) = health(&served.addr);
        assert_eq!(status, 200);
        latencies.push(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(attackers.open_count(), 0, "every slow connection closed within {deadline:?}");
    let slowest_close = attackers.closed_after.iter().flatten().max().copied().unwrap();
    assert!(
        slowest_close >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
        "not before the timeout: {slowest_close:?}"
    );
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().unwrap();
    eprintln!(
        "slowloris: 300 connections at 1 byte/s, all closed by {slowest_close:?}; /health ×{} median {median:?}, max {worst:?}",
        latencies.len()
    );
    assert!(worst < Duration::from_secs(1), "/health stayed fast: worst {worst:?}");
}

#[test]
fn under_a_1024_descriptor_limit_1100_silent_connections_leave_health_answering() {
    let _turn = heavy();
    roost_gateway::conn::raise_descriptor_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (served, log) = serve(dir.path(), Some(1024));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", served.child.id())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert_eq!(open_files.split_whitespace().nth(3), Some("1024"), "{open_files}");
    assert_eq!(open_files.split_whitespace().nth(4), Some("1024"), "{open_files}");

    let mut attackers = Attackers::open(&served.addr, 1100, b"");
    std::thread::sleep(Duration::from_millis(500));
    attackers.poll(false);
    let closed_at_once = 1100 - attackers.open_count();
    let (status, took) = health(&served.addr);
    assert_eq!(status, 200, "/health answers with 1,100 silent connections open");
    let (again, took_again) = health(&served.addr);
    assert_eq!(again, 200);
    attackers.poll(false);
    let held = attackers.open_count();
    eprintln!(
        "descriptors 1024: 1,100 silent connections, {held} held, {} closed to make room ({closed_at_once} at once); /health 200 in {took:?} and {took_again:?}",
        1100 - held
    );
    assert!(held < 1024 - 128, "the cap leaves descriptors for the rest of the process: {held} held");
    assert!(held > 500, "most connections are served: {held} held");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("connection limit reached"), "the cap is logged: {log}");
    assert!(log.contains("open-descriptor"), "the descriptor limit is logged: {log}");
    drop(attackers);
    let (status, _) = health(&served.addr);
    assert_eq!(status, 200);
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What 20,000 sessions may cost the gateway at most, over its idle size.
const SESSION_FLOOD_RSS_BOUND_MIB: u64 = 200;

#[test]
fn twenty_thousand_session_initialisations_stay_under_the_rss_bound() {
    let _turn = heavy();
    let dir = tempfile::tempdir().unwrap();
    let (served, log) = serve(dir.path(), None);
    let mut first = Http::connect(&served.addr);
    let oldest = open_session(&mut first);
    let idle = rss_kib(served.child.id());
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addr = served.addr.clone();
            std::thread::spawn(move || {
                let mut http = Http::connect(&addr);
                for i in 0..5_000 {
                    let answer = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT], &initialize(i));
                    assert_eq!(answer.status, 200, "{}", answer.body);
                    assert!(answer.header("mcp-session-id").is_some());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let took = started.elapsed();
    let after = rss_kib(served.child.id());
    eprintln!("20,000 MCP initialisations in {took:?}: RSS {} MiB idle, {} MiB after", idle / 1024, after / 1024);
    assert!(
        after.saturating_sub(idle) < SESSION_FLOOD_RSS_BOUND_MIB * 1024,
        "RSS grew by {} MiB (bound {SESSION_FLOOD_RSS_BOUND_MIB} MiB)",
        after.saturating_sub(idle) / 1024
    );
    // The oldest session was evicted: a clean 404, so its client starts again
    // (on a new connection: the first one, silent since, was closed).
    let mut first = Http::connect(&served.addr);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let evicted = first.send("POST", "/mcp", &[JSON, MCP_ACCEPT, ("Mcp-Session-Id", &oldest)], &list);
    assert_eq!(evicted.status, 404, "{}", evicted.body);
    let fresh = open_session(&mut first);
    let listed = first.send("POST", "/mcp", &[JSON, MCP_ACCEPT, ("Mcp-Session-Id", &fresh)], &list);
    assert_eq!(listed.status, 200);
    assert!(listed.message()["result"]["tools"].as_array().is_some_and(|t| t.len() == 45));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("ended an MCP session"), "evictions are logged");
}

#[tokio::test]
async fn malformed_searches_are_400_class_with_the_hint_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    set_nest_password(&served.home);
    succeeded(roost(&served.home, &["memory", "add", "Tax filing deadline is April 15"]));
    let client = common::connect_http(&served.addr).await;
    let (nest_session, _) = nest_login(&served.addr);
    for (query, encoded, hint) in [
        ("\"tax", "%22tax", "double quote is not closed"),
        ("*", "*", "`*` must end a word"),
        ("-word", "-word", "use NOT to leave a word out"),
    ] {
        let api = once(&served.addr, "GET", &format!("/api/v1/memories/search?q={encoded}"), &[], "");
        assert_eq!(api.status, 400, "{query} on the API: {}", api.body);
        let error = api.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(hint) && error.contains("prefix*"), "{query} on the API: {error}");

        for tool in ["roost_search_memories", "roost_search_all"] {
            let refused = common::refused(&client, tool, json!({"query": query})).await;
            assert!(refused.contains(hint), "{query} through {tool}: {refused}");
        }

        let nest = once(&served.addr, "GET", &format!("/nest/memories?q={encoded}"), &[("Cookie", &nest_session)], "");
        assert_eq!(nest.status, 400, "{query} in the Nest: {}", nest.body);
        let shown = nest.body.replace("&#96;", "`").replace("&#x60;", "`");
        assert!(shown.contains(hint) && shown.contains("prefix*"), "{query} in the Nest: {}", nest.body);
        assert!(nest.body.contains(r#"name="q""#), "the search form stays, to correct the query");

        let cli = roost(&served.home, &["memory", "search", "--", query]);
        assert!(!cli.status.success());
        let stderr = String::from_utf8_lossy(&cli.stderr);
        assert!(stderr.contains(hint), "{query} from the CLI: {stderr}");
    }
    let found = once(&served.addr, "GET", "/api/v1/memories/search?q=tax", &[], "");
    assert_eq!(found.json()["count"], 1, "a good query still finds");
    client.cancel().await.unwrap();
}

#[test]
fn the_nest_refuses_a_host_that_is_not_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    let port = served.addr.rsplit(':').next().unwrap();
    for host in [format!("evil.example:{port}"), format!("127.0.0.1.evil.example:{port}"), "evil.example".into()] {
        let mut stream = TcpStream::connect(&served.addr).unwrap();
        write!(stream, "GET /nest/login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{host}: {answer}");
        assert!(answer.contains("does not answer to the name"), "{host}: {answer}");
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        let mut stream = TcpStream::connect(&served.addr).unwrap();
        write!(stream, "GET /nest/login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

#[test]
fn mcp_answers_protocol_edges_as_the_specifications_say() {
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    let mut http = Http::connect(&served.addr);

    let garbled = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT], r#"{"jsonrpc": "2.0", "id": 1, "method": "#);
    assert_eq!(garbled.status, 400, "{}", garbled.body);
    assert_eq!(garbled.header("content-type"), Some("application/json"));
    assert_eq!(garbled.json()["error"]["code"], -32700, "{}", garbled.body);
    let not_a_message = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT], r#"{"jsonrpc": "2.0", "id": 9}"#);
    assert_eq!(not_a_message.status, 400, "{}", not_a_message.body);
    assert_eq!(not_a_message.json()["error"]["code"], -32600);
    assert_eq!(not_a_message.json()["id"], 9);

    let session = open_session(&mut http);
    let in_session = [JSON, MCP_ACCEPT, ("Mcp-Session-Id", session.as_str())];
    for (params, what) in [
        (json!({"name": 5}), "a name that is not a string"),
        (json!({"arguments": {"query": "tax"}}), "no name"),
        (json!("roost_search_memories"), "params that are not an object"),
    ] {
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}).to_string();
        let answer = http.send("POST", "/mcp", &in_session, &call);
        assert_eq!(answer.message()["error"]["code"], -32602, "{what}: {}", answer.body);
    }
    let unknown = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list"}).to_string();
    assert_eq!(http.send("POST", "/mcp", &in_session, &unknown).message()["error"]["code"], -32601);
    let bad_arguments = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "roost_search_memories", "arguments": {"query": 5}}})
    .to_string();
    let tool_error = http.send("POST", "/mcp", &in_session, &bad_arguments).message();
    assert_eq!(tool_error["result"]["isError"], true, "wrong argument types are a tool error: {tool_error}");

    let ended = http.send("DELETE", "/mcp", &in_session[1..], "");
    assert_eq!(ended.status, 200, "a session ends with 200: {}", ended.body);
    let again = http.send("DELETE", "/mcp", &in_session[1..], "");
    assert_eq!(again.status, 404, "{}", again.body);
    let list = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}).to_string();
    assert_eq!(http.send("POST", "/mcp", &in_session, &list).status, 404, "an ended session is unknown");
    let nameless = http.send("DELETE", "/mcp", &[MCP_ACCEPT], "");
    assert_eq!(nameless.status, 400, "{}", nameless.body);
    let foreign = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT, ("Origin", "http://evil.example")], &initialize(7));
    assert_eq!(foreign.status, 403, "{}", foreign.body);
}

#[test]
fn an_mcp_event_stream_outlives_the_connection_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    let mut http = Http::connect(&served.addr);
    let session = open_session(&mut http);
    let mut stream = TcpStream::connect(&served.addr).unwrap();
    write!(
        stream,
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {session}\r\n\r\n",
        served.addr
    )
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let hold = HEADER_READ_TIMEOUT + Duration::from_secs(8);
    while started.elapsed() < hold {
        let mut buffer = [0u8; 1024];
        match stream.read(&mut buffer) {
            Ok(0) => panic!("the stream was closed after {:?}", started.elapsed()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("the stream failed after {:?}: {e}", started.elapsed()),
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let mut silent = [0u8; 1];
    assert_eq!(http.reader.read(&mut silent).unwrap(), 0, "the silent keep-alive connection was closed meanwhile");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mut http = Http::connect(&served.addr);
    let listed = http.send("POST", "/mcp", &[JSON, MCP_ACCEPT, ("Mcp-Session-Id", &session)], &list);
    assert_eq!(listed.status, 200, "the session outlived the header timeout too");
}

#[test]
fn a_stdio_line_over_16_mib_gets_a_json_rpc_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "stdio"]));
    let mut child = Command::new(roost_bin())
        .arg("--home")
        .arg(&home)
        .arg("mcp")
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut line = vec![b'x'; 16 * 1024 * 1024 + 1];
        line.push(b'\n');
        input.write_all(&line).unwrap();
        input.write_all(format!("{}\n", initialize(1)).as_bytes()).unwrap();
        input
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let refusal: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(refusal["error"]["code"], -32600, "{refusal}");
    assert!(refusal["error"]["message"].as_str().unwrap().contains("longer than"), "{refusal}");
    let initialized: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(initialized["id"], 1, "the next message is read: {initialized}");
    assert_eq!(initialized["result"]["serverInfo"]["name"], "roost");
    drop(writer.join().unwrap());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_second_serve_on_one_home_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (served, _) = serve(dir.path(), None);
    let second = Command::new(roost_bin())
        .arg("--home")
        .arg(&served.home)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!second.status.success(), "a second serve on the same home must not start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let pid = served.child.id().to_string();
    assert!(stderr.contains(&format!("pid {pid}")), "names the running one's pid: {stderr}");
    assert!(stderr.contains(&served.addr), "names the running one's address: {stderr}");
    assert!(String::from_utf8_lossy(&second.stdout).is_empty(), "it never listened");
    assert_eq!(health(&served.addr).0, 200, "the first one still serves");
    let status = json_of(roost(&served.home, &["status", "--json"]));
    assert_eq!(status["gateway"]["running"], true, "the CLI still finds the first one: {status}");
}

#[test]
fn a_config_typo_is_refused_naming_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    succeeded(roost(&home, &["init", "--name", "typo"]));
    let path = home.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    for (section, typo) in [
        ("[gateway]", "loopback_without_tokens = false"),
        ("[federation]", "peer_tool = []"),
        ("[lease]", "ttl = 100"),
        ("", "nmae = \"x\""),
    ] {
        let (at, text) = match section {
            "" => (1, format!("{typo}\n{config}")),
            _ => {
                let before = config.split(section).next().unwrap();
                (before.lines().count() + 2, config.replace(section, &format!("{section}\n{typo}")))
            }
        };
        std::fs::write(&path, text).unwrap();
        let key = typo.split(' ').next().unwrap();
        for args in [&["serve", "--bind", "127.0.0.1:0"][..], &["memory", "list"][..]] {
            let out = roost(&home, args);
            assert!(!out.status.success(), "{typo} in {section:?}: roost {args:?} must refuse it");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(&format!("unknown field `{key}`")), "names the key: {stderr}");
            assert!(stderr.contains(&format!("(line {at})")), "{typo} is on line {at}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        }
    }
}
