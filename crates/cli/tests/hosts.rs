//! Roost on machines of a private LAN: each machine a network namespace with
//! its own host name, hosts file and HOME (see common/netns.rs), so the
//! README's journey runs as a person would type it, machines finding each
//! other by name. These tests need root; without it they say SKIPPED.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::process::{Child, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{json_of, succeeded};
use netns::{Host, Lan, listening_addr, root_or_skip, stdout_lines};
use roost_awake::{clock, events};
use serde_json::Value;

/// Accepts connections on port 9999 and prints what each one sends.
const LISTENER: &str = "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 9999))
s.listen()
while True:
    c, _ = s.accept()
    print(c.recv(64).decode(), flush=True)
    c.close()";

/// Connects to argv[1]:9999 within argv[2] seconds and sends argv[3].
const CLIENT: &str = "import socket, sys
socket.create_connection((sys.argv[1], 9999), timeout=float(sys.argv[2])).send(sys.argv[3].encode())";

/// Polls `probe` until it yields a value; panics after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    eventually_showing(what, limit, || probe().ok_or_else(String::new))
}

/// Polls `probe` until it yields a value; panics after `limit` with what it
/// last said instead.
fn eventually_showing<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}; last seen: {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The IPv4 address `name` resolves to on `host`, as getaddrinfo gives it.
fn resolve(host: &Host, name: &str) -> String {
    let out = succeeded(host.run("getent", &["ahostsv4", name]));
    out.split_whitespace().next().unwrap_or_else(|| panic!("{name} does not resolve on {}", host.name)).to_string()
}

/// A [`LISTENER`] on `host`, and what it receives.
fn listen(host: &Host) -> (Child, Receiver<String>) {
    let mut child = host.command("python3", &["-c", LISTENER]).stdout(Stdio::piped()).spawn().expect("python3");
    let received = stdout_lines(&mut child);
    (child, received)
}

/// Sends `message` from `from` to port 9999 of `to`, once.
fn send(from: &Host, to: &str, timeout_seconds: u32, message: &str) -> Output {
    from.run("python3", &["-c", CLIENT, to, &timeout_seconds.to_string(), message])
}

/// Sends `message` from `from` to `to` until a listener there takes it.
fn deliver(from: &Host, to: &str, message: &str, received: &Receiver<String>) {
    eventually(&format!("{} reaching {to}", from.name), Duration::from_secs(20), || {
        send(from, to, 2, message).status.success().then_some(())
    });
    let got = received.recv_timeout(Duration::from_secs(5)).expect("the listener reporting the message");
    assert_eq!(got, message, "what {to} received");
}

#[test]
fn lan_hosts_reach_each_other_by_name() {
    if !root_or_skip("lan_hosts_reach_each_other_by_name") {
        return;
    }
    let started = Instant::now();
    let mut lan = Lan::new(&["home", "laptop", "vps"]);

    for host in lan.hosts() {
        assert_eq!(text(&host.run("sh", &["-c", "hostname"])), host.hostname, "host name of {}", host.name);
        assert_eq!(text(&host.run("cat", &["/etc/hostname"])), host.hostname, "/etc/hostname of {}", host.name);
        assert_eq!(resolve(host, "localhost"), "127.0.0.1");
    }
    let (home, laptop, vps) = (lan.host("home"), lan.host("laptop"), lan.host("vps"));
    assert_eq!(resolve(home, "laptop.lan"), laptop.addr.to_string());
    assert_eq!(resolve(laptop, "vps"), vps.addr.to_string());

    let (mut home_listener, at_home) = listen(home);
    deliver(laptop, "home.lan", "from laptop", &at_home);

    let (mut vps_listener, at_vps) = listen(vps);
    deliver(home, "vps.lan", "before the cut", &at_vps);
    lan.cut("vps");
    let attempt = Instant::now();
    let out = send(home, "vps.lan", 3, "during the cut");
    assert!(!out.status.success(), "home reached vps through a cut cable");
    eprintln!(
        "with vps cut, home's connection failed after {:.1} s: {}",
        attempt.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
    );
    lan.heal("vps");
    deliver(home, "vps.lan", "after the heal", &at_vps);

    let old = lan.host("laptop").addr;
    let new = lan.address(77);
    lan.readdress("laptop", new);
    let (home, laptop) = (lan.host("home"), lan.host("laptop"));
    assert_eq!(laptop.addr, new);
    let addresses = text(&laptop.run("ip", &["-4", "-o", "addr", "show", "dev", "eth0"]));
    assert!(addresses.contains(&format!(" {new}/24")), "eth0 of laptop: {addresses}");
    assert!(!addresses.contains(&format!(" {old}/24")), "eth0 of laptop still has {old}: {addresses}");
    assert_eq!(resolve(home, "laptop.lan"), new.to_string());
    assert_eq!(resolve(laptop, "laptop.lan"), new.to_string());
    let (mut laptop_listener, at_laptop) = listen(laptop);
    deliver(home, "laptop.lan", "to the new address", &at_laptop);

    let namespaces: Vec<String> = lan.hosts().iter().map(|h| h.namespace.clone()).collect();
    let mut links: Vec<String> = lan.hosts().iter().map(|h| h.veth.clone()).collect();
    links.push(lan.bridge().to_string());
    drop(lan);

    for listener in [&mut home_listener, &mut laptop_listener, &mut vps_listener] {
        assert!(listener.try_wait().expect("try_wait").is_some(), "a listener outlived its Lan");
    }
    let listed = text(&std::process::Command::new("ip").args(["netns", "list"]).output().unwrap());
    let link_list = text(&std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap());
    for ns in &namespaces {
        assert!(!listed.lines().any(|l| l.split_whitespace().next() == Some(ns)), "namespace {ns} remains");
        assert!(!std::path::Path::new("/etc/netns").join(ns).exists(), "/etc/netns/{ns} remains");
    }
    for link in &links {
        let named = |l: &str| l.split(": ").nth(1).is_some_and(|n| n.split('@').next() == Some(link.as_str()));
        assert!(!link_list.lines().any(named), "link {link} remains");
    }
    eprintln!("the Lan self-test took {:.1} s", started.elapsed().as_secs_f64());
}

// The README's journey.

const MACHINES: [&str; 3] = ["home", "laptop", "vps"];

/// How soon a write on one machine must be readable on the others.
const REPLICATION: Duration = Duration::from_secs(15);

/// Puts a pairing code on offer on `host` and returns it.
fn pairing_code(host: &Host) -> String {
    pairing_code_in(&succeeded(host.roost(&["pair", "--no-wait"])))
}

/// The code in what `roost pair` printed.
fn pairing_code_in(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("pairing code: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pairing code in {out:?}"))
        .to_string()
}

/// `joiner` joins the chain by `sponsor`'s name, as the README shows.
fn join(lan: &Lan, joiner: &str, sponsor: &str) {
    let code = pairing_code(lan.host(sponsor));
    let url = format!("http://{}:7151", lan.host(sponsor).hostname);
    succeeded(lan.host(joiner).roost(&["join", &url, "--code", &code, "--yes"]));
}

/// Stores `content` on `host` (only there with `local`); returns its id.
fn add(host: &Host, content: &str, local: bool) -> String {
    let mut args = vec!["memory", "add", content, "--json"];
    if local {
        args.push("--local");
    }
    json_of(host.roost(&args))["id"].as_str().expect("the new memory's id").to_string()
}

/// What `roost status --json` says on `host`; the lease is under
/// `gateway.health.lease` (the gateway's /health).
fn status(host: &Host) -> Value {
    json_of(host.roost(&["status", "--json"]))
}

/// The instance directory `roost` uses on `host` by default (`~/.local/share/roost`).
fn instance_home(host: &Host) -> std::path::PathBuf {
    host.home.join(".local/share/roost")
}

/// Waits until exactly one of `names` is awake and they all agree which;
/// returns its name.
fn one_awake(lan: &Lan, names: &[&str], limit: Duration) -> String {
    eventually("one machine awake, and all agreeing which", limit, || {
        let leases: Vec<Value> =
            names.iter().map(|name| status(lan.host(name))["gateway"]["health"]["lease"].clone()).collect();
        agreed_holder(names, &leases)
    })
}

/// The one of `names` awake by `leases` (theirs, in order), if exactly one
/// is and every one of them names it holder.
fn agreed_holder(names: &[&str], leases: &[Value]) -> Option<String> {
    let awake: Vec<usize> = (0..names.len()).filter(|i| leases[*i]["role"] == "awake").collect();
    let [holder] = awake.as_slice() else { return None };
    let id = leases[*holder]["holder"]["id"].clone();
    leases.iter().all(|l| l["holder"]["id"] == id).then(|| names[*holder].to_string())
}

/// The chain's Roost ID as `roost whoami` on `host` shows it.
fn roost_id(host: &Host) -> String {
    json_of(host.roost(&["whoami", "--json"]))["roost_id"].as_str().expect("a Roost ID").to_string()
}

/// `roost machines --json` on `host`.
fn machines(host: &Host) -> Vec<Value> {
    json_of(host.roost(&["machines", "--json"])).as_array().cloned().unwrap_or_default()
}

/// Waits until a memory written on `writer` is readable on every other machine.
fn replicated(lan: &Lan, writer: &str, content: &str, limit: Duration) {
    replicated_to(lan, writer, &MACHINES, content, limit);
}

/// Waits until a memory written on `writer` is readable on each of
/// `machines` but the writer; returns its id.
fn replicated_to(lan: &Lan, writer: &str, machines: &[&str], content: &str, limit: Duration) -> String {
    let id = add(lan.host(writer), content, false);
    let written = Instant::now();
    for reader in machines.iter().filter(|r| **r != writer) {
        let memory = eventually(&format!("{reader} reading what {writer} wrote: {content}"), limit, || {
            let out = lan.host(reader).roost(&["memory", "get", &id, "--json"]);
            out.status.success().then(|| json_of(out))
        });
        assert_eq!(memory["content"], content, "on {reader}");
    }
    eprintln!("{content:?} was on every machine {:.2} s after the write", written.elapsed().as_secs_f64());
    id
}

/// Starts `roost serve` on each of `names`, reachable by the others.
fn serve(lan: &Lan, names: &[&str]) -> Vec<Child> {
    names
        .iter()
        .map(|name| {
            let mut gateway = lan.host(name).spawn_roost(&["serve", "--bind", "0.0.0.0:7151"]);
            listening_addr(&mut gateway);
            gateway
        })
        .collect()
}

/// Waits until every machine lists the three as voters, one of them awake.
fn three_voters(lan: &Lan) {
    eventually("three voters and one of them awake, on every machine", Duration::from_secs(30), || {
        running_roost(lan)
            .all(|host| {
                let roles: Vec<String> =
                    machines(host).iter().map(|m| m["role"].as_str().unwrap_or_default().to_string()).collect();
                roles.len() == 3
                    && roles.iter().filter(|r| *r == "awake").count() == 1
                    && roles.iter().all(|r| r == "awake" || r == "standby")
            })
            .then_some(())
    });
}

/// The machines of `lan` with an instance of Roost.
fn running_roost(lan: &Lan) -> impl Iterator<Item = &Host> {
    lan.hosts().iter().filter(|host| instance_home(host).exists())
}

/// Every term of every machine as the holder, and none overlapping.
fn assert_one_holder_at_a_time(lan: &Lan) -> Vec<events::Term> {
    let mut terms = Vec::new();
    for host in running_roost(lan) {
        terms.extend(events::terms(&events::read(&instance_home(host)).unwrap(), None));
    }
    if let Some((a, b)) = events::overlap(&terms) {
        panic!("two machines awake at once: {a:?} and {b:?}");
    }
    terms
}

#[test]
fn the_pairing_journey_works_across_three_machines() {
    if !root_or_skip("the_pairing_journey_works_across_three_machines") {
        return;
    }
    let mut lan = Lan::new(&MACHINES);
    // Started once, before any pairing, and never restarted: joining must
    // take effect in running gateways.
    let _gateways = serve(&lan, &MACHINES);
    join(&lan, "laptop", "home");
    join(&lan, "vps", "laptop");
    let joined = Instant::now();
    three_voters(&lan);
    eprintln!(
        "{:.1} s after the last join, every machine listed three voters, one awake",
        joined.elapsed().as_secs_f64()
    );

    for writer in MACHINES {
        replicated(&lan, writer, &format!("written on {writer}"), REPLICATION);
    }

    for name in MACHINES {
        add(lan.host(name), &format!("heron seen only on {name}"), true);
    }
    for searcher in MACHINES {
        eventually(&format!("`roost search --all` on {searcher} finding every machine's heron"), REPLICATION, || {
            let merged = json_of(lan.host(searcher).roost(&["search", "heron", "--all", "--json"]));
            let found: Vec<&str> =
                merged["results"].as_array()?.iter().filter_map(|hit| hit["memory"]["content"].as_str()).collect();
            MACHINES.iter().all(|name| found.contains(&format!("heron seen only on {name}").as_str())).then_some(())
        });
    }

    let holder = one_awake(&lan, &MACHINES, Duration::from_secs(30));

    // Every machine lists every machine: by its host name, with the address
    // others reach it at (never a loopback one), live sync, its version.
    for host in lan.hosts() {
        let listed = eventually(&format!("`roost machines` on {} settled", host.name), REPLICATION, || {
            let listed = machines(host);
            let others_online = listed.iter().filter(|m| m["this"] == false).all(|m| m["sync"] == "online");
            // Joiners become voters one at a time, each once the holder hears it.
            let voters = listed.iter().all(|m| m["role"] == "awake" || m["role"] == "standby");
            (listed.len() == 3 && others_online && voters).then_some(listed)
        });
        for machine in &listed {
            let name = machine["name"].as_str().unwrap();
            let peer = lan.hosts().iter().find(|h| h.hostname == name).unwrap_or_else(|| panic!("{name} is a host"));
            let addresses: Vec<&str> =
                machine["addresses"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(addresses.contains(&format!("http://{}:7151", peer.hostname).as_str()), "{machine}");
            assert!(addresses.contains(&format!("http://{}:7151", peer.addr).as_str()), "{machine}");
            assert!(addresses.iter().all(|a| !a.contains("127.0.0.1")), "{machine}");
            assert_eq!(machine["version"], env!("CARGO_PKG_VERSION"), "{machine}");
            let role = if peer.name == holder { "awake" } else { "standby" };
            assert_eq!(machine["role"], role, "{name} as {} sees it", host.name);
        }
    }

    // The holder's cable is pulled: the two others elect one, and the
    // cut-off holder stops acting before the new one starts. How soon is
    // reported here and measured by `roost bench failover`.
    let others: Vec<&str> = MACHINES.iter().copied().filter(|m| *m != holder).collect();
    let cut_at = clock::now();
    lan.cut(&holder);
    let next = one_awake(&lan, &others, Duration::from_secs(30));
    let terms = assert_one_holder_at_a_time(&lan);
    let next_id = status(lan.host(&next))["id"].as_str().unwrap().to_string();
    let took = terms.iter().filter(|t| t.node == next_id && t.from > cut_at).map(|t| t.from).min().unwrap();
    eprintln!("with {holder}'s link cut, {next} was awake {:.0} ms later", (took - cut_at).as_secs_f64() * 1000.0);
    let stranded = add(lan.host(&holder), "written on the cut-off machine", false);
    let outside = add(lan.host(&next), "written while the holder was cut off", false);
    lan.heal(&holder);
    assert_eq!(one_awake(&lan, &MACHINES, Duration::from_secs(30)), next, "the healed machine stays standby");
    for id in [&stranded, &outside] {
        for reader in MACHINES {
            eventually(&format!("{reader} holding {id} after the heal"), Duration::from_secs(60), || {
                lan.host(reader).roost(&["memory", "get", id, "--json"]).status.success().then_some(())
            });
        }
    }
    assert_one_holder_at_a_time(&lan);

    // The laptop gets another address (a new DHCP lease): the others find it
    // again, replication and federation both ways.
    let moved = lan.address(77);
    lan.readdress("laptop", moved);
    let new_url = format!("http://{moved}:7151");
    eventually("home listing the laptop at its new address", Duration::from_secs(60), || {
        machines(lan.host("home"))
            .iter()
            .any(|m| {
                m["name"] == "laptop.lan"
                    && m["addresses"].as_array().is_some_and(|a| a.contains(&Value::from(new_url.as_str())))
            })
            .then_some(())
    });
    replicated(&lan, "home", "written on home after the laptop moved", Duration::from_secs(60));
    replicated(&lan, "laptop", "written on the laptop after it moved", Duration::from_secs(60));
    add(lan.host("laptop"), "kingfisher seen only on the moved laptop", true);
    eventually_showing("home's search of all machines reaching the moved laptop", Duration::from_secs(60), || {
        let merged = json_of(lan.host("home").roost(&["search", "kingfisher", "--all", "--json"]));
        match merged["results"].as_array() {
            Some(found) if found.len() == 1 => Ok(()),
            _ => Err(merged.to_string()),
        }
    });
    one_awake(&lan, &MACHINES, Duration::from_secs(30));
    assert_one_holder_at_a_time(&lan);
}

/// `tcpdump` writing every packet through `veth` (a machine's cable, seen
/// from the bridge) to a file; stopped and read by [`Capture::bytes`].
struct Capture {
    child: Child,
    file: tempfile::NamedTempFile,
}

impl Capture {
    fn start(veth: &str) -> Capture {
        let file = tempfile::NamedTempFile::new().expect("a capture file");
        let mut child = std::process::Command::new("tcpdump")
            .args(["-i", veth, "-s", "0", "-U", "--immediate-mode", "-Z", "root", "-n", "-w"])
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump runs (scripts/install-test-deps installs it)");
        // It says "listening on ..." once packets are being captured.
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("tcpdump's stderr"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).expect("reading tcpdump's stderr");
        assert!(line.contains("listening on"), "tcpdump did not start: {line}");
        Capture { child, file }
    }

    /// Every byte captured, once tcpdump has written its last packet.
    fn bytes(mut self) -> Vec<u8> {
        common::signal(&self.child, "INT");
        self.child.wait().expect("tcpdump ends");
        std::fs::read(self.file.path()).expect("reading the capture")
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn memory_contents_never_cross_the_wire_in_clear() {
    if !root_or_skip("memory_contents_never_cross_the_wire_in_clear") {
        return;
    }
    let lan = Lan::new(&["home", "laptop"]);
    let _gateways = serve(&lan, &["home", "laptop"]);
    join(&lan, "laptop", "home");
    let (home, laptop) = (lan.host("home"), lan.host("laptop"));
    let captures = [Capture::start(&home.veth), Capture::start(&laptop.veth)];

    let unique = format!("{:016x}", rand::random::<u64>());
    let only_on_laptop = format!("wren{unique} kept only on the laptop");
    let replicated = format!("dipper{unique} written on the laptop for every machine");
    let local_id = add(laptop, &only_on_laptop, true);
    let shared_id = add(laptop, &replicated, false);

    // Replication carries the shared memory to home.
    eventually("home holding the laptop's shared memory", REPLICATION, || {
        home.roost(&["memory", "get", &shared_id, "--json"]).status.success().then_some(())
    });
    // A search of all machines on home finds the laptop's local memory.
    eventually("`roost search --all` on home finding the laptop's local memory", REPLICATION, || {
        let merged = json_of(home.roost(&["search", &format!("wren{unique}"), "--all", "--json"]));
        let found = merged["results"].as_array()?.iter().any(|hit| hit["memory"]["content"] == only_on_laptop);
        found.then_some(())
    });
    // A call forwarded by an agent on home (stdio MCP) reads it whole.
    let forwarded = forwarded_get(home, &local_id, "laptop.lan");
    assert!(forwarded.contains(&only_on_laptop), "the forwarded call returned the memory: {forwarded}");
    // A positive control: plain text sent across the same cable is seen.
    let control = format!("control{unique}");
    let send_to_gateway =
        "import socket, sys\nsocket.create_connection((sys.argv[1], 7151), timeout=5).send(sys.argv[2].encode())";
    let sent = home.run("python3", &["-c", send_to_gateway, &laptop.addr.to_string(), &control]);
    assert!(sent.status.success(), "sending the control: {}", String::from_utf8_lossy(&sent.stderr));

    std::thread::sleep(Duration::from_millis(500));
    for (capture, name) in captures.into_iter().zip(["home", "laptop"]) {
        let bytes = capture.bytes();
        assert!(contains(&bytes, &control), "the capture on {name}'s cable holds the plain-text control");
        for probe in [format!("wren{unique}"), format!("dipper{unique}")] {
            assert!(!contains(&bytes, &probe), "{probe} crossed {name}'s cable in clear");
        }
        eprintln!("{name}'s cable: {} bytes captured, no memory content in clear", bytes.len());
    }
}

/// Runs `roost mcp` on `host` as an agent would and calls
/// `roost_get_memory` for `id` on the machine `on`; returns the answer line.
fn forwarded_get(host: &Host, id: &str, on: &str) -> String {
    use std::io::{BufRead, Write};
    let mut agent = host
        .command(env!("CARGO_BIN_EXE_roost"), &["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("roost mcp");
    let mut stdin = agent.stdin.take().expect("stdin");
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "roost_get_memory", "arguments": {"id": id, "instance": on}}});
    for message in [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        call,
    ] {
        writeln!(stdin, "{message}").expect("writing to roost mcp");
    }
    let answer = std::io::BufReader::new(agent.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("\"id\":2"))
        .expect("an answer to the call");
    drop(stdin);
    let _ = agent.wait();
    answer
}

/// `GET url` from `host`: the status and body.
fn http_get(host: &Host, url: &str) -> (u16, String) {
    let script = "import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())";
    let out = host.run("python3", &["-c", script, url]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, body) = text.split_once('\n').unwrap_or_else(|| panic!("no answer from {url}: {out:?}"));
    (status.trim().parse().expect("a status code"), body.to_string())
}

#[test]
fn the_nest_answers_other_machines_only_over_insecure_http_by_choice() {
    if !root_or_skip("the_nest_answers_other_machines_only_over_insecure_http_by_choice") {
        return;
    }
    let lan = Lan::new(&["home", "laptop"]);
    let mut home = lan.host("home").spawn_roost(&["serve", "--bind", "0.0.0.0:7151"]);
    let mut laptop = lan.host("laptop").spawn_roost(&["serve", "--bind", "0.0.0.0:7151", "--insecure-http"]);
    listening_addr(&mut home);
    listening_addr(&mut laptop);

    let (status, body) = http_get(lan.host("laptop"), "http://home.lan:7151/nest/login");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--insecure-http"), "the refusal says what to do: {body}");
    let (status, body) = http_get(lan.host("home"), "http://home.lan:7151/health");
    assert_eq!(status, 200, "the rest of the gateway still answers: {body}");
    let (status, body) = http_get(lan.host("home"), "http://localhost:7151/nest/login");
    assert_eq!(status, 200, "this machine's own browser gets the Nest: {body}");

    let (status, body) = http_get(lan.host("home"), "http://laptop.lan:7151/nest/login");
    assert_eq!(status, 200, "started with --insecure-http, the laptop serves its Nest to others: {body}");
    assert!(body.contains("password"), "{body}");
}

/// `rule` (an iptables rule without its chain) in `host`'s namespace.
fn firewall(host: &Host, chain: &str, rule: &[&str]) {
    let mut args = vec!["-A", chain];
    args.extend_from_slice(rule);
    let out = host.run("iptables", &args);
    assert!(out.status.success(), "iptables {args:?} on {}: {}", host.name, String::from_utf8_lossy(&out.stderr));
}

/// Drops every UDP packet between `host` and `other` (rules on `host`), so
/// QUIC cannot go direct between them; TCP still passes.
fn drop_udp_between(host: &Host, other: &Host) {
    let other_ip = other.addr.to_string();
    firewall(host, "OUTPUT", &["-p", "udp", "-d", &other_ip, "-j", "DROP"]);
    firewall(host, "INPUT", &["-p", "udp", "-s", &other_ip, "-j", "DROP"]);
}

/// A memory written on each of `a` and `b` reaches the other within `limit`.
fn replicates_both_ways(a: &Host, b: &Host, limit: Duration) {
    for (writer, reader) in [(b, a), (a, b)] {
        let id = add(writer, &format!("written on {} behind the wall", writer.name), false);
        eventually(&format!("{} reading what {} wrote", reader.name, writer.name), limit, || {
            reader.roost(&["memory", "get", &id, "--json"]).status.success().then_some(())
        });
    }
}

/// Creates `host`'s instance and names `relay` in its config.toml, as
/// README says to before serving.
fn name_a_relay(host: &Host, relay: &str) {
    succeeded(host.roost(&["init", "--name", &host.hostname]));
    add_relay_to_config(host, relay);
}

/// Names `relay` in `host`'s config.toml, as a person edits it.
fn add_relay_to_config(host: &Host, relay: &str) {
    let config = instance_home(host).join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let line = format!("relays = [\"{relay}\"]");
    let text = match text.find("[sync]\n") {
        Some(at) => format!("{}{line}\n{}", &text[..at + "[sync]\n".len()], &text[at + "[sync]\n".len()..]),
        None => format!("{text}\n[sync]\n{line}\n"),
    };
    std::fs::write(&config, text).unwrap();
}

/// The relays `host`'s config.toml names.
fn relays_in_config(host: &Host) -> String {
    let text = std::fs::read_to_string(instance_home(host).join("config.toml")).unwrap();
    text.lines().filter(|l| l.trim_start().starts_with("relays")).collect::<Vec<_>>().join("; ")
}

#[test]
fn a_relay_named_on_one_machine_reaches_the_others_and_carries_them() {
    if !root_or_skip("a_relay_named_on_one_machine_reaches_the_others_and_carries_them") {
        return;
    }
    let lan = Lan::new(&["home", "laptop", "vps"]);
    let (home, laptop) = (lan.host("home"), lan.host("laptop"));
    let mut gateways = serve(&lan, &["home", "laptop"]);
    join(&lan, "laptop", "home");
    replicated_to(&lan, "laptop", &["home", "laptop"], "written before any relay", REPLICATION);

    // A relay comes up on the vps; its owner names it on home alone and
    // restarts home's `roost serve`, as README says.
    let mut relay = lan.host("vps").spawn_roost(&["relay", "--bind", "0.0.0.0:3340"]);
    listening_addr(&mut relay);
    add_relay_to_config(home, "http://vps.lan:3340");
    let mut old = gateways.remove(0);
    common::signal(&old, "INT");
    old.wait().expect("home's gateway stops");
    let mut restarted = home.spawn_roost(&["serve", "--bind", "0.0.0.0:7151"]);
    listening_addr(&mut restarted);
    gateways.push(restarted);

    // The laptop takes it up from home's hello: into its config.toml, and
    // into its running endpoint, with no restart.
    eventually_showing("the laptop's config.toml naming the relay home named", REPLICATION, || {
        let named = relays_in_config(laptop);
        if named.contains("vps.lan:3340") { Ok(()) } else { Err(named) }
    });
    // Then no UDP passes between them: they carry on through the relay.
    drop_udp_between(home, laptop);
    replicates_both_ways(home, laptop, Duration::from_secs(60));
    let peer = eventually_showing("the laptop's sync status naming a relayed path to home", REPLICATION, || {
        let status = json_of(laptop.roost(&["sync", "status", "--json"]));
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        peers.iter().find(|p| p["path"] == "relayed").cloned().ok_or_else(|| status.to_string())
    });
    assert!(peer["rtt_ms"].as_f64().is_some_and(|rtt| rtt > 0.0), "{peer}");
    one_awake(&lan, &["home", "laptop"], Duration::from_secs(30));
}

#[test]
fn two_machines_that_cannot_reach_each_other_directly_meet_through_a_relay() {
    if !root_or_skip("two_machines_that_cannot_reach_each_other_directly_meet_through_a_relay") {
        return;
    }
    let lan = Lan::new(&["home", "laptop", "vps"]);
    let (home, laptop) = (lan.host("home"), lan.host("laptop"));
    // The vps runs the relay; between home and the laptop no UDP passes,
    // so QUIC cannot go direct (pairing, over TCP, still can).
    let mut relay = lan.host("vps").spawn_roost(&["relay", "--bind", "0.0.0.0:3340"]);
    listening_addr(&mut relay);
    drop_udp_between(home, laptop);
    // Each machine names the relay in its config.toml before it serves.
    for host in [home, laptop] {
        name_a_relay(host, "http://vps.lan:3340");
    }
    let _gateways = serve(&lan, &["home", "laptop"]);
    join(&lan, "laptop", "home");

    // Replication both ways, through the relay.
    replicates_both_ways(home, laptop, Duration::from_secs(30));
    // `roost sync status` says the path is relayed, with its round-trip time.
    let peer = eventually("home's sync status naming the laptop's path", Duration::from_secs(15), || {
        let status = json_of(home.roost(&["sync", "status", "--json"]));
        status["peers"].as_array()?.iter().find(|p| p["path"].is_string()).cloned()
    });
    assert_eq!(peer["path"], "relayed", "{peer}");
    assert!(peer["rtt_ms"].as_f64().is_some_and(|rtt| rtt > 0.0), "{peer}");
    let shown = succeeded(home.roost(&["sync", "status"]));
    assert!(shown.contains("relayed"), "{shown}");
    // Federation and the lease go through it too.
    add(laptop, "nightjar heard only on the laptop", true);
    eventually("home's search of all machines reaching the laptop", Duration::from_secs(30), || {
        let merged = json_of(home.roost(&["search", "nightjar", "--all", "--json"]));
        (merged["results"].as_array()?.len() == 1).then_some(())
    });
    one_awake(&lan, &["home", "laptop"], Duration::from_secs(30));
}

/// The names of the machines whose local memories `searcher`'s
/// `roost search QUERY --all` found.
fn found_on(lan: &Lan, searcher: &str, query: &str) -> Vec<String> {
    let merged = json_of(lan.host(searcher).roost(&["search", query, "--all", "--json"]));
    let mut found: Vec<String> = merged["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|hit| hit["memory"]["content"].as_str()?.rsplit(' ').next().map(str::to_string))
        .collect();
    found.sort();
    found
}

#[test]
fn a_machine_revoked_on_one_machine_is_refused_by_every_machine() {
    if !root_or_skip("a_machine_revoked_on_one_machine_is_refused_by_every_machine") {
        return;
    }
    let mut lan = Lan::new(&MACHINES);
    let _gateways = serve(&lan, &MACHINES);
    join(&lan, "laptop", "home");
    join(&lan, "vps", "home");
    three_voters(&lan);
    let before = replicated_to(&lan, "laptop", &MACHINES, "written on the laptop before its revocation", REPLICATION);
    for name in MACHINES {
        add(lan.host(name), &format!("plover seen only on {name}"), true);
    }
    eventually("the laptop's search of all machines reaching the vps", REPLICATION, || {
        found_on(&lan, "laptop", "plover").contains(&"vps".to_string()).then_some(())
    });

    let laptop_id = status(lan.host("laptop"))["id"].as_str().unwrap().to_string();
    let first_id = roost_id(lan.host("home"));
    let revoked_at = Instant::now();
    succeeded(lan.host("home").roost(&["instance", "revoke", &laptop_id]));

    // The revocation rotated the chain's identity: home moved at once, the
    // vps moves when replication brings it the new seed, sealed to its key;
    // both say which Roost ID the chain had before.
    let rotated_id = roost_id(lan.host("home"));
    assert_ne!(rotated_id, first_id, "home did not rotate the identity");
    eventually("the vps taking the rotated identity", Duration::from_secs(10), || {
        let vps = json_of(lan.host("vps").roost(&["whoami", "--json"]));
        (vps["roost_id"] == rotated_id.as_str() && vps["earlier_roost_ids"][0]["roost_id"] == first_id.as_str())
            .then_some(())
    });
    eprintln!(
        "the vps took the rotated identity {:.2} s after home revoked the laptop",
        revoked_at.elapsed().as_secs_f64()
    );
    let whoami = succeeded(lan.host("vps").roost(&["whoami"]));
    assert!(whoami.contains(&format!("was         {first_id}")), "whoami does not show the old Roost ID: {whoami}");
    assert_eq!(roost_id(lan.host("laptop")), first_id, "the laptop is left on the old identity");

    // Within 10 s the vps, which was told only by replication, refuses the
    // laptop: listed revoked, no sync session, no federation, no vote.
    eventually("the vps refusing the laptop", Duration::from_secs(10), || {
        let listed = machines(lan.host("vps"));
        let laptop = listed.iter().find(|m| m["id"] == laptop_id.as_str())?;
        let sync = json_of(lan.host("vps").roost(&["sync", "status", "--json"]));
        let session = sync["peers"].as_array()?.iter().find(|p| p["id"] == laptop_id.as_str())?;
        (laptop["status"] == "revoked"
            && session["state"] == "revoked"
            && !found_on(&lan, "laptop", "plover").contains(&"vps".to_string()))
        .then_some(())
    });
    eprintln!("the vps refused the laptop {:.2} s after home revoked it", revoked_at.elapsed().as_secs_f64());
    let awake = one_awake(&lan, &["home", "vps"], Duration::from_secs(30));
    assert_ne!(awake, "laptop");
    eventually("home and the vps listing only the two of them as voters", Duration::from_secs(10), || {
        ["home", "vps"]
            .iter()
            .all(|host| {
                let listed = machines(lan.host(host));
                let voters: Vec<&Value> =
                    listed.iter().filter(|m| m["role"] == "awake" || m["role"] == "standby").collect();
                voters.len() == 2 && voters.iter().all(|m| m["id"] != laptop_id.as_str())
            })
            .then_some(())
    });

    // The laptop's later writes reach no one; home and the vps go on
    // replicating; nothing written before the revocation is lost.
    let after = add(lan.host("laptop"), "written on the laptop after its revocation", false);
    replicated_to(&lan, "vps", &["home", "vps"], "written on the vps after the revocation", REPLICATION);
    replicated_to(&lan, "home", &["home", "vps"], "written on home after the revocation", REPLICATION);
    for host in ["home", "vps"] {
        assert!(!lan.host(host).roost(&["memory", "get", &after, "--json"]).status.success(), "{host} took it");
        assert!(lan.host(host).roost(&["memory", "get", &before, "--json"]).status.success(), "{host} lost it");
    }
    assert_eq!(found_on(&lan, "home", "plover"), ["home", "vps"], "home no longer asks the laptop");

    // The laptop still holds the old seed: it certifies a fresh machine by
    // pairing, which learns from it where home and the vps are and knocks
    // with that certificate. Both refuse it, and neither ever lists it.
    lan.add("intruder");
    let _intruder = serve(&lan, &["intruder"]);
    join(&lan, "intruder", "laptop");
    let intruder_id = status(lan.host("intruder"))["id"].as_str().unwrap().to_string();
    // Each refusal shows until the next dial; a dial can also fail before
    // the hello (home's certificate names a loopback URL, which from the
    // intruder leads to itself), so collect them over time.
    let mut refused = std::collections::BTreeSet::new();
    eventually_showing("home and the vps refusing the machine the laptop certified", Duration::from_secs(30), || {
        let sync = json_of(lan.host("intruder").roost(&["sync", "status", "--json"]));
        for peer in sync["peers"].as_array().into_iter().flatten() {
            if peer["last_error"].as_str().is_some_and(|e| e.contains("not from this identity")) {
                refused.insert(peer["name"].as_str().unwrap_or_default().to_string());
            }
        }
        (refused.len() == 2 && refused.contains("home.lan") && refused.contains("vps.lan"))
            .then_some(())
            .ok_or_else(|| sync.to_string())
    });
    for host in ["home", "vps"] {
        let listed = machines(lan.host(host));
        assert!(listed.iter().all(|m| m["id"] != intruder_id.as_str()), "{host} registered the intruder: {listed:?}");
    }
    let found = found_on(&lan, "intruder", "plover");
    assert!(!found.iter().any(|on| on == "home" || on == "vps"), "the intruder reached them: {found:?}");

    // `roost leave` on the vps revokes it across the chain too: home hears it
    // from replication.
    let vps_id = status(lan.host("vps"))["id"].as_str().unwrap().to_string();
    succeeded(lan.host("vps").roost(&["leave"]));
    eventually("home listing the vps as revoked after it left", Duration::from_secs(10), || {
        machines(lan.host("home")).iter().any(|m| m["id"] == vps_id.as_str() && m["status"] == "revoked").then_some(())
    });
    // Leaving rotated the identity once more, to one the vps never held.
    eventually("home taking the identity the vps rotated to as it left", Duration::from_secs(10), || {
        let home = json_of(lan.host("home").roost(&["whoami", "--json"]));
        let earlier: Vec<&str> =
            home["earlier_roost_ids"].as_array()?.iter().filter_map(|e| e["roost_id"].as_str()).collect();
        (earlier == [first_id.as_str(), rotated_id.as_str()]).then_some(())
    });
    assert_eq!(one_awake(&lan, &["home"], Duration::from_secs(30)), "home");
    assert_one_holder_at_a_time(&lan);
}

#[test]
fn two_machines_each_behind_its_own_nat_pair_and_work_through_a_relay() {
    if !root_or_skip("two_machines_each_behind_its_own_nat_pair_and_work_through_a_relay") {
        return;
    }
    let mut lan = Lan::new(&["relay"]);
    lan.add_behind_nat("home");
    lan.add_behind_nat("laptop");
    let (home, laptop) = (lan.host("home"), lan.host("laptop"));
    let mut relay = lan.host("relay").spawn_roost(&["relay", "--bind", "0.0.0.0:3340"]);
    listening_addr(&mut relay);
    // Nothing gets in through a NAT: the laptop cannot open a connection to
    // home, though home can to the relay.
    let (_listener, _) = listen(home);
    let relay_ip = lan.host("relay").addr.to_string();
    assert!(!send(laptop, &home.addr.to_string(), 2, "in?").status.success(), "the laptop reached home");
    assert!(http_get(home, &format!("http://{relay_ip}:3340/")).0 > 0, "home reaches the relay");

    // Home names the relay in its config.toml before it serves (README);
    // the laptop learns it when it joins.
    name_a_relay(home, "http://relay.lan:3340");
    let _gateways = serve(&lan, &["home", "laptop"]);

    // The code travels through the relay: `roost pair` says what to type.
    let offer = succeeded(home.roost(&["pair", "--no-wait"]));
    let code = pairing_code_in(&offer);
    let target = offer
        .lines()
        .find_map(|l| l.split("cannot reach it: roost join ").nth(1))
        .and_then(|rest| rest.split(" --code").next())
        .unwrap_or_else(|| panic!("no relayed join line in {offer:?}"));
    let joined = succeeded(laptop.roost(&["join", target, "--code", &code, "--yes"]));
    assert!(joined.contains("http://relay.lan:3340"), "the laptop did not take up the relay: {joined}");

    const THROUGH_NAT: Duration = Duration::from_secs(60);
    let both = ["home", "laptop"];
    replicated_to(&lan, "home", &both, "written on home behind its NAT", THROUGH_NAT);
    replicated_to(&lan, "laptop", &both, "written on the laptop behind its NAT", THROUGH_NAT);
    for name in both {
        add(lan.host(name), &format!("sandpiper seen only on {name}"), true);
    }
    for searcher in both {
        eventually(&format!("{searcher}'s search of all machines reaching the other"), THROUGH_NAT, || {
            (found_on(&lan, searcher, "sandpiper") == both).then_some(())
        });
    }
    let awake = one_awake(&lan, &both, THROUGH_NAT);
    let sync = json_of(home.roost(&["sync", "status", "--json"]));
    let peer = sync["peers"].as_array().and_then(|p| p.first().cloned()).expect("the laptop in home's sync status");
    let path = peer["path"].as_str().unwrap_or_default().to_string();
    assert!(path == "direct" || path == "relayed", "{peer}");
    eprintln!("through two NATs: {awake} awake, home reaches the laptop {path}, round trip {} ms", peer["rtt_ms"]);
}

/// The conversation `topic` as `roost agent tail --json` on `host` shows
/// it: (message, reply, machine that replied) in order.
fn conversation(host: &Host, topic: &str) -> Vec<(String, String, String)> {
    let lines = succeeded(host.roost(&["agent", "tail", topic, "--json"]));
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    lines
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|e| (text(&e, "text"), text(&e, "reply"), text(&e, "replied_by")))
        .collect()
}

/// README's agent journey on three machines: `roost agent say` on a standby
/// is answered from the awake machine; once that machine is killed, the one
/// awake next answers, with the conversation so far as its context; every
/// machine shows the same conversation.
#[test]
fn the_agent_answers_from_whichever_machine_is_awake_across_three_machines() {
    if !root_or_skip("the_agent_answers_from_whichever_machine_is_awake_across_three_machines") {
        return;
    }
    let lan = Lan::new(&MACHINES);
    let mut gateways = serve(&lan, &MACHINES);
    join(&lan, "laptop", "home");
    join(&lan, "vps", "home");
    three_voters(&lan);
    let awake = one_awake(&lan, &MACHINES, Duration::from_secs(30));
    let id_of =
        |name: &str| json_of(lan.host(name).roost(&["whoami", "--json"]))["instance_id"].as_str().unwrap().to_string();
    let ids: Vec<String> = MACHINES.iter().map(|name| id_of(name)).collect();
    let id = |name: &str| ids[MACHINES.iter().position(|n| *n == name).unwrap()].clone();
    let standby = MACHINES.into_iter().find(|name| *name != awake).unwrap();
    let first = succeeded(lan.host(standby).roost(&["agent", "say", "plans", "what is on today?"]));
    assert_eq!(first.trim(), "echo #1 in plans: what is on today?");

    let at = MACHINES.iter().position(|name| *name == awake).unwrap();
    gateways[at].kill().unwrap();
    gateways[at].wait().unwrap();
    let survivors: Vec<&str> = MACHINES.into_iter().filter(|name| *name != awake).collect();
    let next = one_awake(&lan, &survivors, Duration::from_secs(30));
    let asker = survivors.iter().find(|name| **name != next).unwrap();
    let said = Instant::now();
    let second = succeeded(lan.host(asker).roost(&["agent", "say", "plans", "and tomorrow?"]));
    assert_eq!(second.trim(), "echo #2 in plans: and tomorrow?", "the new holder continued the conversation");
    eprintln!("{next}, awake now, answered what was asked on {asker} in {:.2} s", said.elapsed().as_secs_f64());

    let expected = vec![
        ("what is on today?".to_string(), first.trim().to_string(), id(&awake)),
        ("and tomorrow?".to_string(), second.trim().to_string(), id(&next)),
    ];
    for name in &survivors {
        eventually(&format!("the conversation on {name}"), REPLICATION, || {
            (conversation(lan.host(name), "plans") == expected).then_some(())
        });
    }
}

/// Where `host`'s gateway listens on the Lan (`roost serve --bind 0.0.0.0:7151`).
fn gateway_of(host: &Host) -> String {
    format!("{}:7151", host.addr)
}

/// Waits until exactly one of `names` is awake, each of them answering
/// `/health` to `desk` and naming it holder; returns its name.
fn awake_seen_from(desk: &Host, lan: &Lan, names: &[&str]) -> String {
    eventually_showing("one machine awake, seen from the desk", Duration::from_secs(30), || {
        let leases: Vec<Value> = names.iter().map(|name| health_seen_from(desk, lan, name)["lease"].clone()).collect();
        agreed_holder(names, &leases).ok_or_else(|| {
            let roles: Vec<String> = names.iter().zip(&leases).map(|(n, l)| format!("{n}: {}", l["role"])).collect();
            roles.join(", ")
        })
    })
}

/// The messages a driver posted, each topic's ids in the order posted; those
/// a machine took while it was out of touch with the others; and how many
/// posts a machine did not take (down, stopped), so the driver tried the
/// next.
#[derive(Default)]
struct Posted {
    order: std::collections::BTreeMap<String, Vec<String>>,
    late: std::collections::BTreeSet<String>,
    tried_again: usize,
}

/// Which machine (an index into the driver's posters) is out of touch with
/// the others, from the moment a fault begins until its sessions are up
/// again and it has sent what it took meanwhile: what it takes in until
/// then reaches the awake machine late.
type OutOfTouch = std::sync::Arc<std::sync::Mutex<Option<usize>>>;

/// Waits until `name`, asked from `desk`, has a live replication session
/// with each of its `peers` and holds nothing they lack.
fn in_touch(desk: &Host, lan: &Lan, name: &str, peers: usize) {
    eventually_showing(&format!("{name} in touch with the others again"), Duration::from_secs(60), || {
        let health = health_seen_from(desk, lan, name);
        let sessions = health["sync"]["peers"].as_array().cloned().unwrap_or_default();
        let live = sessions.iter().filter(|p| !p["address"].is_null() && p["ahead"] == 0).count();
        (live == peers).then_some(()).ok_or_else(|| format!("{live} live sessions with nothing to send"))
    });
}

/// A request for a [`local_poster`]: the message, and where to say how the
/// POST went.
type PostJob = (Value, std::sync::mpsc::Sender<Result<(u16, Value), String>>);

/// A thread in `host`'s network posting each message it is given to the
/// gateway there over loopback, as a channel's bridge running on that
/// machine would (a loopback caller needs no token), each POST bounded by
/// two seconds.
fn local_poster(host: &Host) -> std::sync::mpsc::Sender<PostJob> {
    let (jobs, queue) = std::sync::mpsc::channel::<PostJob>();
    host.thread(move || {
        for (body, outcome) in queue {
            let posted =
                common::try_post_json("127.0.0.1:7151", "/api/v1/agent/messages", &body, Duration::from_secs(2));
            let _ = outcome.send(posted);
        }
    });
    jobs
}

/// Posts `messages` webhook messages over `topics` topics, each to a machine
/// picked at random among `posters` (the next one when that one does not
/// take it), `pace` apart.
fn post_messages(
    posters: &[std::sync::mpsc::Sender<PostJob>],
    out_of_touch: &OutOfTouch,
    messages: usize,
    topics: usize,
    pace: Duration,
    seed: u64,
) -> Posted {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut posted = Posted::default();
    for n in 0..messages {
        let topic = format!("topic-{}", rng.random_range(0..topics));
        let id = format!("m{n}");
        let body = serde_json::json!({
            "channel": "webhook", "topic": topic, "message_id": id, "sender": "ann", "text": format!("message {n}"),
        });
        let mut at = rng.random_range(0..posters.len());
        let started = Instant::now();
        loop {
            let late = *out_of_touch.lock().unwrap() == Some(at);
            let (said, outcome) = std::sync::mpsc::channel();
            posters[at].send((body.clone(), said)).expect("the poster thread");
            match outcome.recv().expect("the poster's answer") {
                Ok((202, _)) => {
                    if late {
                        posted.late.insert(id.clone());
                    }
                    break;
                }
                outcome => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "no machine took {id} in a minute: {outcome:?}"
                    );
                    posted.tried_again += 1;
                    at = (at + 1) % posters.len();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        posted.order.entry(topic).or_default().push(id);
        std::thread::sleep(pace);
    }
    posted
}

/// One machine's terms as the holder from its role log, a term left open by
/// a kill -9 ending at that kill (`deaths`, in order).
fn terms_through_kills(log: &[events::Event], deaths: &[Duration]) -> Vec<events::Term> {
    let mut terms = Vec::new();
    let mut rest = log;
    for death in deaths {
        let lived = rest.iter().take_while(|e| e.at <= *death).count();
        terms.extend(events::terms(&rest[..lived], Some(*death)));
        rest = &rest[lived..];
    }
    terms.extend(events::terms(rest, None));
    terms
}

/// (message id, stage, reply) of each message of `topic` as `host`'s
/// gateway lists it to a caller on that machine.
fn ledger_on(host: &Host, topic: &str) -> Vec<(String, String, String)> {
    let topic = topic.to_string();
    host.inside(move || {
        common::topic_view("127.0.0.1:7151", &topic)
            .into_iter()
            .map(|(id, stage, reply, _)| (id, stage, reply))
            .collect()
    })
}

/// What `name`'s `/health` says to a caller on `desk`; null while it does
/// not answer.
fn health_seen_from(desk: &Host, lan: &Lan, name: &str) -> Value {
    let at = gateway_of(lan.host(name));
    desk.inside(move || common::get_json(&at, "/health")).unwrap_or(Value::Null)
}

/// The agent under faults on three machines of a Lan: a fourth machine runs
/// the webhook receiver; a bridge on each machine posts messages over 20
/// topics to its own gateway, the machine picked at random for each message,
/// standbys included (a machine cut off still takes them), while the awake
/// machine is in turn killed with -9 (and started again), stopped with
/// SIGSTOP past its lease, and cut off by its cable coming out, a fault
/// every few seconds, until every message is posted. Then every message has
/// one distinct reply, no idempotency key carries two bodies, each topic's
/// replies arrive in message order (but for messages a machine took while
/// out of touch with the awake one, answered when they reach it), every
/// machine holds the same ledger, and no two machines were ever awake at
/// once. `ROOST_AGENT_CHAOS_MESSAGES` (default 300) sets how many messages;
/// README's figures come from 2,000.
#[test]
fn every_message_is_answered_once_while_the_awake_machine_is_killed_stopped_and_cut_off() {
    if !root_or_skip("every_message_is_answered_once_while_the_awake_machine_is_killed_stopped_and_cut_off") {
        return;
    }
    let messages: usize = std::env::var("ROOST_AGENT_CHAOS_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let (lan, desk, hook, mut gateways) = agent_lan("");
    let (driver, out_of_touch, _) = start_posting(&lan, messages);
    let mut faults: Vec<String> = Vec::new();
    let mut kills: Vec<(usize, Duration)> = Vec::new();
    while faults.len() < 3 || !driver.is_finished() {
        std::thread::sleep(Duration::from_secs(2));
        let holder = awake_seen_from(&desk, &lan, &MACHINES);
        let fault = hurt(&lan, &desk, &mut gateways, &holder, faults.len(), &out_of_touch, &mut kills);
        faults.push(format!("{holder} {fault}"));
    }
    let posted = driver.join().expect("the driver");
    eprintln!(
        "faults: {faults:?}; {} posts went to another machine; {} messages taken out of touch",
        posted.tried_again,
        posted.late.len()
    );
    assert_answered_once(&lan, &hook, &posted, messages, &kills);
}

/// Starts posting `messages` messages over [`CHAOS_TOPICS`] topics from a
/// bridge on each machine of `lan`, 60 ms apart, topics and machines picked
/// by a seed it prints and returns; the driver notes as late what it posts
/// to the machine marked out of touch.
fn start_posting(lan: &Lan, messages: usize) -> (std::thread::JoinHandle<Posted>, OutOfTouch, u64) {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    eprintln!("posting {messages} messages, topics and machines picked by seed {seed}");
    let posters: Vec<_> = MACHINES.iter().map(|name| local_poster(lan.host(name))).collect();
    let out_of_touch = OutOfTouch::default();
    let marked = out_of_touch.clone();
    let driver = std::thread::spawn(move || {
        post_messages(&posters, &marked, messages, CHAOS_TOPICS, Duration::from_millis(60), seed)
    });
    (driver, out_of_touch, seed)
}

/// Topics the chaos runs post to.
const CHAOS_TOPICS: usize = 20;
/// The lease TTL in the chaos runs.
const CHAOS_TTL: Duration = Duration::from_secs(2);

/// Three machines of a Lan whose agent replies to a webhook receiver on a
/// fourth (the desk), the lease TTL at [`CHAOS_TTL`], `extra` added to each
/// `config.toml`; started, chained by pairing, three voters.
fn agent_lan(extra: &str) -> (Lan, Host, common::Webhook, Vec<Child>) {
    let mut lan = Lan::new(&MACHINES);
    lan.add("desk");
    let desk = lan.host("desk").clone();
    let listener = desk.inside(|| std::net::TcpListener::bind("0.0.0.0:0").expect("a port on the desk"));
    let hook = common::Webhook::listening(listener, &desk.hostname);
    for name in MACHINES {
        let host = lan.host(name);
        succeeded(host.roost(&["init", "--name", &host.hostname]));
        common::configure(&instance_home(host), "ttl_ms", &CHAOS_TTL.as_millis().to_string());
        common::configure_agent(&instance_home(host), &format!("[agent.webhook]\nurl = \"{}\"", hook.url));
        if !extra.is_empty() {
            common::configure_agent(&instance_home(host), extra);
        }
    }
    let gateways = serve(&lan, &MACHINES);
    join(&lan, "laptop", "home");
    join(&lan, "vps", "home");
    three_voters(&lan);
    (lan, desk, hook, gateways)
}

/// Fault number `nth` on `victim`, in turn: kill -9 (started again once
/// another machine is awake), SIGSTOP for three
/// TTLs, its cable out for three TTLs; marked out of touch until it is back
/// in touch with the others. Says what it did.
fn hurt(
    lan: &Lan,
    desk: &Host,
    gateways: &mut [Child],
    victim: &str,
    nth: usize,
    out_of_touch: &OutOfTouch,
    kills: &mut Vec<(usize, Duration)>,
) -> &'static str {
    let at = MACHINES.iter().position(|name| *name == victim).unwrap();
    *out_of_touch.lock().unwrap() = Some(at);
    let fault = match nth % 3 {
        0 => {
            gateways[at].kill().unwrap();
            gateways[at].wait().unwrap();
            kills.push((at, clock::now()));
            let others: Vec<&str> = MACHINES.into_iter().filter(|name| *name != victim).collect();
            awake_seen_from(desk, lan, &others);
            gateways[at] = serve(lan, &[victim]).remove(0);
            "killed with -9"
        }
        1 => {
            common::signal(&gateways[at], "STOP");
            std::thread::sleep(3 * CHAOS_TTL);
            common::signal(&gateways[at], "CONT");
            "stopped for three TTLs"
        }
        _ => {
            lan.cut(victim);
            std::thread::sleep(3 * CHAOS_TTL);
            lan.heal(victim);
            "cut off for three TTLs"
        }
    };
    in_touch(desk, lan, victim, MACHINES.len() - 1);
    std::thread::sleep(Duration::from_secs(1));
    *out_of_touch.lock().unwrap() = None;
    fault
}

/// After a chaos run: every message has one distinct reply at the webhook,
/// no key carries two bodies, each topic's replies arrived in message order
/// (but for `posted.late`), every machine holds the same ledger with every
/// reply sent, and no two machines were ever awake at once (`kills` ended
/// terms left open).
fn assert_answered_once(
    lan: &Lan,
    hook: &common::Webhook,
    posted: &Posted,
    messages: usize,
    kills: &[(usize, Duration)],
) {
    let answered = || -> std::collections::BTreeSet<String> {
        hook.deliveries().iter().filter_map(|d| d.body["message_id"].as_str().map(String::from)).collect()
    };
    eventually_showing("a reply to every message at the webhook", Duration::from_secs(120), || {
        let n = answered().len();
        (n == messages).then_some(()).ok_or_else(|| format!("{n} of {messages} answered"))
    });
    let re_sends = common::one_reply_each_in_order(&hook.deliveries(), &posted.order, &posted.late, |topic| {
        let topic = topic.to_string();
        let ledger = lan.host("home").inside(move || common::ledger_lines("127.0.0.1:7151", &topic));
        let roles: Vec<String> = MACHINES
            .iter()
            .flat_map(|name| events::read(&instance_home(lan.host(name))).unwrap())
            .map(|e| format!("{:.3} {} {} {:?} {:?}", e.at.as_secs_f64(), e.node, e.event, e.epoch, e.reason))
            .collect();
        format!("late: {:?}\non home: {ledger:#?}\nroles: {roles:#?}", posted.late)
    });
    eventually_showing("every machine holding the same ledger, every reply sent", REPLICATION, || {
        for (topic, ids) in &posted.order {
            let ledgers: Vec<_> = MACHINES.iter().map(|name| ledger_on(lan.host(name), topic)).collect();
            let settled = ledgers[0].len() == ids.len() && ledgers[0].iter().all(|(_, stage, _)| stage == "sent");
            if !settled || ledgers.iter().any(|l| *l != ledgers[0]) {
                return Err(format!("{topic}: {ledgers:?}"));
            }
        }
        Ok(())
    });
    let mut terms = Vec::new();
    for (at, name) in MACHINES.iter().enumerate() {
        let deaths: Vec<Duration> = kills.iter().filter(|(k, _)| *k == at).map(|(_, when)| *when).collect();
        terms.extend(terms_through_kills(&events::read(&instance_home(lan.host(name))).unwrap(), &deaths));
    }
    if let Some((a, b)) = events::overlap(&terms) {
        panic!("two machines awake at once: {a:?} and {b:?}");
    }
    eprintln!(
        "{messages} messages, {} deliveries, {re_sends} re-sends under the same key; {} terms as holder",
        hook.deliveries().len(),
        terms.len()
    );
}

// The pool.

/// Each machine's `[pool] capacity`: the laptop carries twice the others' share.
const CAPACITY: [(&str, u32); 3] = [("home", 1), ("laptop", 2), ("vps", 1)];

/// Turns the pool on in each machine's `config.toml`, as README says, after
/// `roost init`; starts every machine and chains them by pairing.
fn pool_of_three(lan: &Lan, extra: &str) -> Vec<Child> {
    for (name, capacity) in CAPACITY {
        let host = lan.host(name);
        succeeded(host.roost(&["init"]));
        common::configure_agent(&instance_home(host), &format!("[pool]\nenabled = true\ncapacity = {capacity}"));
        if !extra.is_empty() {
            common::configure_agent(&instance_home(host), extra);
        }
    }
    let gateways = serve(lan, &MACHINES);
    join(lan, "laptop", "home");
    join(lan, "vps", "home");
    three_voters(lan);
    eventually("every machine in the pool, online", Duration::from_secs(30), || {
        let out = lan.host("home").roost(&["pool", "--json"]);
        let pool: Value = serde_json::from_slice(&out.stdout).ok()?;
        let machines = pool["machines"].as_array()?;
        (machines.len() == 3 && machines.iter().all(|m| m["online"] == true)).then_some(())
    });
    gateways
}

/// `roost pool --json` on `host`.
fn pool_seen_on(host: &Host) -> Value {
    json_of(host.roost(&["pool", "--json"]))
}

/// The machine (id) that owns `topic` now, as `host`'s pool says.
fn owner_seen_on(host: &Host, topic: &str) -> Option<String> {
    let pool = pool_seen_on(host);
    let topics = pool["topics"].as_array()?;
    topics.iter().find(|t| t["topic"] == topic).and_then(|t| t["owner"].as_str().map(String::from))
}

/// Says `text` in `topic` on `host` with `roost agent say`; returns the
/// reply and the machine (id) that answered it.
fn say_in(host: &Host, topic: &str, text: &str) -> (String, String) {
    let reply = succeeded(host.roost(&["agent", "say", topic, text])).trim().to_string();
    let (_, said, by) = conversation(host, topic).into_iter().rev().find(|(asked, ..)| asked == text).unwrap();
    assert_eq!(said, reply);
    (reply, by)
}

/// The pool's journey on three machines of a Lan, as README tells it: the
/// pool turned on in each config, thirty conversations spread by capacity;
/// every machine says where a topic runs, alike; a transfer by the API and
/// one by a chat message ("move this to laptop") move a topic, and "move it
/// back here" returns it; a move to a machine that went away is refused
/// until confirmed.
#[test]
fn the_pool_spreads_thirty_topics_and_moves_them_by_api_and_by_chat_across_three_machines() {
    if !root_or_skip("the_pool_spreads_thirty_topics_and_moves_them_by_api_and_by_chat_across_three_machines") {
        return;
    }
    let lan = Lan::new(&MACHINES);
    let mut gateways = pool_of_three(&lan, "");
    let id_of =
        |name: &str| json_of(lan.host(name).roost(&["whoami", "--json"]))["instance_id"].as_str().unwrap().to_string();
    let ids: std::collections::BTreeMap<&str, String> = MACHINES.iter().map(|name| (*name, id_of(name))).collect();
    let name_of = |id: &str| *ids.iter().find(|(_, i)| *i == id).unwrap().0;

    for i in 0..30 {
        say_in(lan.host(MACHINES[i % 3]), &format!("t{i}"), &format!("hello {i}"));
    }
    let pool = pool_seen_on(lan.host("vps"));
    let mut load: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for topic in pool["topics"].as_array().unwrap() {
        *load.entry(name_of(topic["machine"].as_str().unwrap())).or_default() += 1;
    }
    eprintln!("thirty topics spread as {load:?}");
    assert_eq!(load.values().sum::<usize>(), 30);
    assert!((14..=16).contains(&load["laptop"]), "twice the capacity, twice the topics: {load:?}");
    assert!((7..=8).contains(&load["home"]) && (7..=8).contains(&load["vps"]), "{load:?}");
    for i in 0..30 {
        let topic = format!("t{i}");
        let seen: Vec<Value> = MACHINES
            .iter()
            .map(|name| json_of(lan.host(name).roost(&["pool", "placement", &topic, "--json"])))
            .collect();
        assert!(seen.iter().all(|p| *p == seen[0]), "every machine says the same of {topic}: {seen:?}");
        let answered_by = &conversation(lan.host("home"), &topic)[0].2;
        assert_eq!(seen[0]["machine"], answered_by.as_str(), "{topic} was answered where it is placed");
        assert_eq!(seen[0]["reason"], "placed");
    }
    // As a person reads them: the table of machines, and one topic's line.
    let table = succeeded(lan.host("laptop").roost(&["pool"]));
    for name in MACHINES {
        assert!(table.lines().any(|l| l.starts_with(name) && l.contains(&format!("{name}.lan"))), "{table}");
    }
    let line = succeeded(lan.host("laptop").roost(&["pool", "placement", "t1"]));
    let t1 =
        name_of(json_of(lan.host("laptop").roost(&["pool", "placement", "t1", "--json"]))["machine"].as_str().unwrap());
    assert_eq!(line.trim(), format!("t1: {t1} (placed)"));

    // By the API, on the vps: t0 moves, pinned, and is answered there.
    let placed = |topic: &str| json_of(lan.host("home").roost(&["pool", "placement", topic, "--json"]));
    let from = name_of(placed("t0")["machine"].as_str().unwrap());
    let to = if from == "vps" { "home" } else { "vps" };
    let body = serde_json::json!({"topic": "t0", "to": to});
    let (status, moved) =
        lan.host("vps").inside(move || common::post_json("127.0.0.1:7151", "/api/v1/pool/transfer", &body));
    assert_eq!((status, moved["moved"].clone()), (200, Value::Bool(true)), "{moved}");
    assert_eq!(placed("t0")["reason"], "pinned");
    eventually("t0 held by the machine it moved to", Duration::from_secs(15), || {
        (owner_seen_on(lan.host("home"), "t0") == Some(ids[to].clone())).then_some(())
    });
    let (_, by) = say_in(lan.host("laptop"), "t0", "still there?");
    assert_eq!(name_of(&by), to, "answered by the machine it moved to");

    // By chat, on home: "move this to laptop", then "move it back here".
    let topic = (1..30).map(|i| format!("t{i}")).find(|t| placed(t)["machine"] == ids["home"].as_str()).unwrap();
    let (reply, _) = say_in(lan.host("home"), &topic, "move this to laptop");
    assert_eq!(reply, "Moved this conversation to laptop.");
    eventually(&format!("{topic} held by the laptop"), Duration::from_secs(15), || {
        (owner_seen_on(lan.host("home"), &topic) == Some(ids["laptop"].clone())).then_some(())
    });
    let (reply, by) = say_in(lan.host("home"), &topic, "what is on today?");
    assert_eq!(name_of(&by), "laptop", "{reply}");
    assert!(reply.ends_with("what is on today?"), "an ordinary message goes to the handler: {reply}");
    // A topic moves at most once a second ([pool] transfer_interval_ms).
    std::thread::sleep(Duration::from_secs(1));
    let (reply, by) = say_in(lan.host("home"), &topic, "move it back here");
    assert_eq!((reply.as_str(), name_of(&by)), ("Moved this conversation to home.", "laptop"));
    eventually(&format!("{topic} held by home again"), Duration::from_secs(15), || {
        (owner_seen_on(lan.host("home"), &topic) == Some(ids["home"].clone())).then_some(())
    });
    let (_, by) = say_in(lan.host("vps"), &topic, "back home?");
    assert_eq!(name_of(&by), "home");
    let (reply, _) = say_in(lan.host("home"), &topic, "move this to the toaster");
    assert!(reply.starts_with("No machine is called \"toaster\""), "{reply}");

    // A nickname given on the vps is every machine's: "the mini" is the laptop.
    let named = succeeded(lan.host("vps").roost(&["pool", "nickname", "laptop", "mini"]));
    assert_eq!(named.trim(), "laptop is now called mini");
    let taken = lan.host("home").roost(&["pool", "nickname", "home", "mini"]);
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already called \"mini\""), "{taken:?}");
    std::thread::sleep(Duration::from_secs(1));
    let (reply, _) = say_in(lan.host("home"), &topic, "move this to the mini");
    assert_eq!(reply, "Moved this conversation to mini.");
    eventually(&format!("{topic} held by the mini"), Duration::from_secs(15), || {
        (owner_seen_on(lan.host("home"), &topic) == Some(ids["laptop"].clone())).then_some(())
    });
    succeeded(lan.host("laptop").roost(&["pool", "nickname", "mini", "laptop"]));

    // A machine goes away: a move to it is refused until confirmed.
    let awake = one_awake(&lan, &MACHINES, Duration::from_secs(30));
    let gone = MACHINES.into_iter().rev().find(|name| *name != awake).unwrap();
    let at = MACHINES.into_iter().find(|name| *name != awake && *name != gone).unwrap();
    let index = MACHINES.iter().position(|name| *name == gone).unwrap();
    gateways[index].kill().unwrap();
    gateways[index].wait().unwrap();
    eventually(&format!("{gone} offline in the pool"), Duration::from_secs(15), || {
        let pool = pool_seen_on(lan.host(at));
        let machines = pool["machines"].as_array()?;
        machines.iter().any(|m| m["id"] == ids[gone].as_str() && m["online"] == false).then_some(())
    });
    let elsewhere = (1..30).map(|i| format!("t{i}")).find(|t| placed(t)["machine"] != ids[gone].as_str()).unwrap();
    let (reply, _) = say_in(lan.host(at), &elsewhere, &format!("move this to the {gone}"));
    assert_eq!(
        reply,
        format!(
            "This conversation stays where it is: {gone} is offline. To move it anyway, run \
             `roost pool move {elsewhere} {gone} --confirm` or use the Nest's Pool page."
        )
    );
    let refused = lan.host(at).roost(&["pool", "move", &elsewhere, gone]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("offline") && why.contains("confirm"), "{why}");
    let confirmed = succeeded(lan.host(at).roost(&["pool", "move", &elsewhere, gone, "--confirm"]));
    assert_eq!(confirmed.trim(), format!("moved {elsewhere} to {gone}"));
}

/// The agent chaos run with the pool on: messages over 20 topics posted
/// to random machines while, every few seconds, a topic is moved by the API
/// to another machine and its old owner is at once, in turn, killed with
/// -9, stopped past its grant or cut off: mid-transfer, with its work in
/// flight. Still every message has one distinct reply, each topic's replies
/// arrive in message order (but for messages a machine took while out of
/// touch), every machine holds the same ledger, and no two machines were
/// ever awake at once. `ROOST_POOL_CHAOS_MESSAGES` (default 200) sets how
/// many messages.
#[test]
fn with_the_pool_every_message_is_answered_once_while_topics_move_and_their_owners_fail() {
    if !root_or_skip("with_the_pool_every_message_is_answered_once_while_topics_move_and_their_owners_fail") {
        return;
    }
    let messages: usize = std::env::var("ROOST_POOL_CHAOS_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let (lan, desk, hook, mut gateways) = agent_lan("[pool]\nenabled = true");
    let ids: Vec<String> = MACHINES
        .iter()
        .map(|name| json_of(lan.host(name).roost(&["whoami", "--json"]))["instance_id"].as_str().unwrap().to_string())
        .collect();
    eventually("every machine in the pool, online", Duration::from_secs(30), || {
        let pool = pool_seen_on(lan.host("home"));
        let machines = pool["machines"].as_array()?;
        (machines.len() == 3 && machines.iter().all(|m| m["online"] == true)).then_some(())
    });
    let (driver, out_of_touch, seed) = start_posting(&lan, messages);
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let mut faults: Vec<String> = Vec::new();
    let mut kills: Vec<(usize, Duration)> = Vec::new();
    let mut moves = 0;
    while moves < 3 || !driver.is_finished() {
        std::thread::sleep(Duration::from_secs(2));
        let topic = format!("topic-{}", rng.random_range(0..CHAOS_TOPICS));
        let to = rng.random_range(0..MACHINES.len());
        let asked_on = lan.host(MACHINES[rng.random_range(0..MACHINES.len())]);
        let body = serde_json::json!({"topic": topic, "to": ids[to], "confirm": true});
        let (status, moved) = asked_on.inside(move || {
            common::try_post_json("127.0.0.1:7151", "/api/v1/pool/transfer", &body, Duration::from_secs(10))
                .unwrap_or((0, Value::Null))
        });
        let from = moved["from"].as_str().and_then(|from| ids.iter().position(|id| id == from));
        let (Some(from), true) = (from, moved["moved"] == true) else {
            faults.push(format!("{topic} not moved to {}: {status} {moved}", MACHINES[to]));
            continue;
        };
        let fault = hurt(&lan, &desk, &mut gateways, MACHINES[from], moves, &out_of_touch, &mut kills);
        moves += 1;
        faults
            .push(format!("{topic} moved from {} to {}, and {} {fault}", MACHINES[from], MACHINES[to], MACHINES[from]));
    }
    let posted = driver.join().expect("the driver");
    eprintln!(
        "moves and faults: {faults:#?}\n{} posts went to another machine; {} messages taken out of touch",
        posted.tried_again,
        posted.late.len()
    );
    assert_answered_once(&lan, &hook, &posted, messages, &kills);
}
