//! Machines on a private LAN for end-to-end tests: one Linux network
//! namespace per machine, all cabled to one bridge, each with its own host
//! name, `/etc/hosts` and HOME, so real `roost` processes find each other by
//! name the way they do on a home network, and a test can pull a machine's
//! cable or change its address.
//!
//! Needs root, iproute2 (`ip`) and util-linux (`unshare`); tests call
//! [`root_or_skip`] first.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long [`Host::run`] and [`Host::roost`] let a command take.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How long [`listening_addr`] waits for `roost serve` to start listening
/// (debug builds on two busy cores start slowly).
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// The prefix of every namespace a Lan creates; the next part is the pid of
/// the test process, so a later run can tell what a crashed one left behind.
const NS_PREFIX: &str = "roost-";

/// The prefix of the temporary directory holding a Lan's homes, followed by
/// the pid likewise.
const HOMES_PREFIX: &str = "roost-lan-";

/// True when this process can build namespaces. Otherwise says on stderr that
/// `test` is skipped, or panics when `ROOST_REQUIRE_NETNS=1` (so CI cannot
/// pass by skipping).
pub fn root_or_skip(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    let tools = ["ip", "unshare"].iter().all(|tool| {
        Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    });
    if root && tools {
        return true;
    }
    let why = format!("{test}: needs root, iproute2 and unshare (util-linux) for network namespaces");
    if std::env::var("ROOST_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("ROOST_REQUIRE_NETNS=1 but {why}");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// One machine of a [`Lan`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name, as tests refer to it: "home".
    pub name: String,
    /// Its host name, in every hosts file of the Lan: "home.lan".
    pub hostname: String,
    /// The network namespace it runs in.
    pub namespace: String,
    /// Its address on the Lan (eth0 in the namespace).
    pub addr: Ipv4Addr,
    /// Its HOME: roost keeps its instance in `HOME/.local/share/roost`.
    pub home: PathBuf,
    /// The bridge-side end of its cable; down means unplugged.
    pub veth: String,
}

impl Host {
    /// `program args...` inside this machine: its namespace, its host name
    /// (a UTS namespace of its own, which `ip netns exec` does not give),
    /// its hosts file, its HOME, and no ROOST_HOME so roost finds
    /// `HOME/.local/share/roost` as it would on a real machine.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace, "unshare", "--uts", "sh", "-c"])
            .arg(r#"hostname "$1" && shift && exec "$@""#)
            .args(["sh", &self.hostname, program])
            .args(args)
            .env("HOME", &self.home)
            .env_remove("ROOST_HOME")
            .env_remove("XDG_DATA_HOME")
            .env("RUST_LOG", std::env::var("ROOST_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null());
        command
    }

    /// Runs `program args...` here to completion, killed after [`RUN_LIMIT`].
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let what = format!("{program} {args:?} on {}", self.name);
        let child = self
            .command(program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        wait_output(child, RUN_LIMIT, &what)
    }

    /// Runs `roost args...` here to completion, killed after [`RUN_LIMIT`].
    pub fn roost(&self, args: &[&str]) -> Output {
        self.run(roost_bin(), args)
    }

    /// Starts a long-running `roost args...` here (`serve --bind
    /// 0.0.0.0:7151`) with stdout piped for [`listening_addr`] and stderr
    /// passed through. The Lan kills it when dropped, if the test did not.
    pub fn spawn_roost(&self, args: &[&str]) -> Child {
        self.command(roost_bin(), args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting roost {args:?} on {}: {e}", self.name))
    }

    /// Runs `work` on a thread of the test process moved into this machine's
    /// network namespace, so the test can listen and connect as a program on
    /// this machine would (files and names stay the test's: use addresses).
    /// Sockets made there stay there when handed to other threads.
    pub fn thread<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        use std::os::fd::AsFd;
        let (path, name) = (Path::new("/run/netns").join(&self.namespace), self.name.clone());
        std::thread::spawn(move || {
            let namespace = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            rustix::thread::move_into_link_name_space(
                namespace.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("entering the network of {name}: {e}"));
            work()
        })
    }

    /// [`Host::thread`], waiting for what `work` returns.
    pub fn inside<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        self.thread(work).join().unwrap_or_else(|_| panic!("work inside {} panicked", self.name))
    }
}

fn roost_bin() -> &'static str {
    env!("CARGO_BIN_EXE_roost")
}

/// The lines of `child`'s piped stdout, as they come. A thread keeps reading
/// after the receiver is dropped, so the child never blocks on a full pipe.
pub fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("stdout was not piped, or was taken already");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    receiver
}

/// The ADDR of the first stdout line of `roost serve`, `roost: listening on
/// http://ADDR ...`, waiting at most [`START_LIMIT`]. Takes the child's
/// stdout (and keeps draining it).
pub fn listening_addr(child: &mut Child) -> String {
    let line = stdout_lines(child)
        .recv_timeout(START_LIMIT)
        .unwrap_or_else(|_| panic!("roost did not say where it listens within {START_LIMIT:?}"));
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from roost: {line:?}"))
        .to_string()
}

/// Waits for `child` (stdout and stderr piped) and collects its output; kills
/// it and panics, with what it said so far, after `limit`.
pub fn wait_output(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            kill(pid);
            let output = receiver.recv().expect("the waiting thread ended").expect("waiting after the kill");
            panic!(
                "{what} did not finish within {limit:?}; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Machines on one bridge, each in a network namespace of its own. Dropping
/// it (also while a test panics) kills every process in its namespaces and
/// removes the namespaces, the bridge, the cables, the hosts files and the
/// homes.
pub struct Lan {
    bridge: String,
    /// The first three octets of the Lan's /24.
    subnet: [u8; 3],
    /// Names of its links and namespaces: `<pid>-<n>` and `<pid36>-<n36>`.
    tag: String,
    short_tag: String,
    hosts: Vec<Host>,
    /// The routers machines added by [`Lan::add_behind_nat`] sit behind.
    routers: Vec<Host>,
    homes: tempfile::TempDir,
}

static LANS: AtomicU32 = AtomicU32::new(0);

impl Lan {
    /// A Lan with one machine per name; host names are `<name>.lan`.
    pub fn new(names: &[&str]) -> Lan {
        remove_stale();
        let pid = std::process::id();
        let n = LANS.fetch_add(1, Ordering::Relaxed);
        // The bridge carries no address and each namespace only sees its
        // own, so subnets matter only for readable logs; still, spread them.
        let k = pid.wrapping_mul(7).wrapping_add(n);
        let subnet = [10, 100 + (k / 250 % 100) as u8, 1 + (k % 250) as u8];
        let short_tag = format!("{}-{}", base36(pid), base36(n));
        let mut lan = Lan {
            bridge: format!("rb{short_tag}"),
            subnet,
            tag: format!("{pid}-{n}"),
            short_tag,
            hosts: Vec::new(),
            routers: Vec::new(),
            homes: tempfile::Builder::new()
                .prefix(&format!("{HOMES_PREFIX}{pid}-{n}-"))
                .tempdir()
                .expect("a temporary directory"),
        };
        // From here on a panic drops `lan`, which removes what exists so far.
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&["link", "set", &lan.bridge, "up"]);
        for name in names {
            lan.add(name);
        }
        lan
    }

    /// Adds a machine `<name>.lan` with the next free address.
    pub fn add(&mut self, name: &str) -> &Host {
        assert!(self.hosts.iter().all(|h| h.name != name), "{name} is on the Lan already");
        let i = self.hosts.len();
        assert!(i < 36, "a Lan holds at most 36 machines");
        let host = Host {
            name: name.to_string(),
            hostname: format!("{name}.lan"),
            namespace: format!("{NS_PREFIX}{}-{name}", self.tag),
            addr: self.address(10 + i as u8),
            home: self.homes.path().join(name),
            veth: format!("rv{}-{}", self.short_tag, base36(i as u32)),
        };
        std::fs::create_dir_all(&host.home).expect("creating the host's home");
        std::fs::create_dir_all(netns_dir(&host.namespace)).expect("creating /etc/netns/<namespace>");
        // Pushed before it exists, so that a failure below still removes it.
        self.hosts.push(host.clone());
        let ns = host.namespace.as_str();
        ip(&["netns", "add", ns]);
        ip(&["link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ip(&["link", "set", &host.veth, "master", &self.bridge, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        // `ip netns exec` mounts this over /etc/hostname, where roost looks
        // for the default instance name.
        std::fs::write(netns_dir(ns).join("hostname"), format!("{}\n", host.hostname))
            .expect("writing the host's /etc/hostname");
        self.write_hosts_files();
        self.hosts.last().expect("just added")
    }

    /// Adds a machine `<name>.lan` behind a router of its own that
    /// masquerades, as a home router does: the router takes the next address
    /// on the Lan (its cable is the machine's [`Host::veth`]), the machine a
    /// private address behind it. The machine can open connections to the
    /// Lan; nothing on the Lan can open one to it. Needs iptables.
    pub fn add_behind_nat(&mut self, name: &str) -> &Host {
        assert!(self.hosts.iter().all(|h| h.name != name), "{name} is on the Lan already");
        let i = self.hosts.len() + self.routers.len();
        assert!(i < 36, "a Lan holds at most 36 machines and routers");
        let router = Host {
            name: format!("{name}-nat"),
            hostname: format!("{name}-nat.lan"),
            namespace: format!("{NS_PREFIX}{}-{name}-nat", self.tag),
            addr: self.address(10 + i as u8),
            home: self.homes.path().join(format!("{name}-nat")),
            veth: format!("rv{}-{}", self.short_tag, base36(i as u32)),
        };
        let private = [192, 168, 100 + i as u8];
        let host = Host {
            name: name.to_string(),
            hostname: format!("{name}.lan"),
            namespace: format!("{NS_PREFIX}{}-{name}", self.tag),
            addr: Ipv4Addr::new(private[0], private[1], private[2], 2),
            home: self.homes.path().join(name),
            veth: router.veth.clone(),
        };
        for ns in [&router.namespace, &host.namespace] {
            std::fs::create_dir_all(netns_dir(ns)).expect("creating /etc/netns/<namespace>");
        }
        std::fs::create_dir_all(&host.home).expect("creating the host's home");
        // Pushed before they exist, so that a failure below still removes them.
        self.routers.push(router.clone());
        self.hosts.push(host.clone());
        let (r, ns) = (router.namespace.as_str(), host.namespace.as_str());
        let inside = format!("{}.{}.{}.1", private[0], private[1], private[2]);
        ip(&["netns", "add", r]);
        ip(&["netns", "add", ns]);
        ip(&["link", "add", &router.veth, "type", "veth", "peer", "name", "eth0", "netns", r]);
        ip(&["link", "set", &router.veth, "master", &self.bridge, "up"]);
        ip(&["-n", r, "addr", "add", &format!("{}/24", router.addr), "dev", "eth0"]);
        ip(&["-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ip(&["-n", r, "addr", "add", &format!("{inside}/24"), "dev", "lan0"]);
        for (namespace, link) in [(r, "lo"), (r, "eth0"), (r, "lan0"), (ns, "lo"), (ns, "eth0")] {
            ip(&["-n", namespace, "link", "set", link, "up"]);
        }
        ip(&["-n", ns, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]);
        ip(&["-n", ns, "route", "add", "default", "via", &inside]);
        in_namespace(r, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        in_namespace(r, "iptables", &["-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"]);
        std::fs::write(netns_dir(ns).join("hostname"), format!("{}\n", host.hostname))
            .expect("writing the host's /etc/hostname");
        self.write_hosts_files();
        self.hosts.last().expect("just added")
    }

    /// The machine called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} on the Lan"))
    }

    /// Every machine, in the order added.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The Lan's bridge, in the root namespace.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The address with last octet `last` in the Lan's /24.
    pub fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], last)
    }

    /// Unplugs `name`'s cable: its packets go nowhere, nothing answers it.
    pub fn cut(&self, name: &str) {
        ip(&["link", "set", &self.host(name).veth, "down"]);
    }

    /// Plugs `name`'s cable back in.
    pub fn heal(&self, name: &str) {
        ip(&["link", "set", &self.host(name).veth, "up"]);
    }

    /// Moves `name` to `addr` (in the Lan's /24), as a DHCP lease change
    /// would, and updates every machine's hosts file.
    pub fn readdress(&mut self, name: &str, addr: Ipv4Addr) {
        assert_eq!(addr.octets()[..3], self.subnet, "{addr} is outside the Lan's /24");
        assert!(self.hosts.iter().all(|h| h.addr != addr), "{addr} is taken");
        let i = self.hosts.iter().position(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"));
        let ns = self.hosts[i].namespace.clone();
        // Deleting first: deleting a primary address also deletes the
        // secondaries of its subnet, which the new one would be.
        ip(&["-n", &ns, "addr", "del", &format!("{}/24", self.hosts[i].addr), "dev", "eth0"]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        self.hosts[i].addr = addr;
        self.write_hosts_files();
    }

    /// Every machine's `/etc/hosts`: localhost and all machines of the Lan.
    /// Written in place, not replaced: running processes see the file through
    /// a bind mount of its inode, and glibc reads it again on each lookup.
    fn write_hosts_files(&self) {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for h in &self.hosts {
            text.push_str(&format!("{}\t{} {}\n", h.addr, h.hostname, h.name));
        }
        for h in &self.hosts {
            std::fs::write(netns_dir(&h.namespace).join("hosts"), &text).expect("writing a hosts file");
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let namespaces: Vec<String> = self.hosts.iter().chain(&self.routers).map(|h| h.namespace.clone()).collect();
        for ns in &namespaces {
            remove_namespace(ns);
        }
        for h in self.hosts.iter().chain(&self.routers) {
            quiet_ip(&["link", "del", &h.veth]);
        }
        quiet_ip(&["link", "del", &self.bridge]);
    }
}

/// Runs `program args...` in `namespace` (no host name or hosts file of its
/// own: a router's set-up); panics with its complaint when it fails.
fn in_namespace(namespace: &str, program: &str, args: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", namespace, program]).args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "{program} {} in {namespace}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip args...`; panics with its complaint when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Runs `ip args...` for cleanup, where the thing may be gone already.
fn quiet_ip(args: &[&str]) {
    let _ = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn netns_dir(namespace: &str) -> PathBuf {
    Path::new("/etc/netns").join(namespace)
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
}

/// The processes in `namespace`: every process a Host started, their own
/// children, and anything a test spawned from `Host::command` itself.
fn namespace_pids(namespace: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", namespace])
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Running, not exited (a zombie has left its namespaces already).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')))
        .unwrap_or(false)
}

/// SIGKILLs everything in `namespace`, waits (bounded) until it is gone, then
/// deletes the namespace and its /etc/netns directory.
fn remove_namespace(namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = namespace_pids(namespace).into_iter().filter(|p| alive(*p)).collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        pids.iter().for_each(|p| kill(*p));
        std::thread::sleep(Duration::from_millis(20));
    }
    quiet_ip(&["netns", "del", namespace]);
    let _ = std::fs::remove_dir_all(netns_dir(namespace));
}

/// Removes what Lans of test processes that no longer run left behind (a
/// crash, a SIGKILL): their namespaces, /etc/netns directories, homes,
/// bridges and cables. Names carry the pid, so live Lans of parallel tests are left be.
fn remove_stale() {
    let running = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    let mut namespaces: Vec<String> = String::from_utf8_lossy(&listed)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    if let Ok(dirs) = std::fs::read_dir("/etc/netns") {
        namespaces.extend(dirs.filter_map(|d| d.ok()?.file_name().into_string().ok()));
    }
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        let pid = ns.strip_prefix(NS_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        if pid.is_some_and(|pid| !running(pid)) {
            remove_namespace(&ns);
        }
    }
    if let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) {
        for dir in dirs.filter_map(Result::ok) {
            let name = dir.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(HOMES_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
            if pid.is_some_and(|pid| !running(pid)) {
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
    }
    let links = Command::new("ip").args(["-o", "link", "show"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&links).lines() {
        // "7: rb2hvgo-1: <BROADCAST,..." or "8: rv2hvgo-1-0@if2: <...".
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        if let Some(pid) = link_pid(name)
            && !running(pid)
        {
            quiet_ip(&["link", "del", name]);
        }
    }
}

/// The test process a Lan's link belongs to: `rb<pid36>-<n36>` (a bridge) or
/// `rv<pid36>-<n36>-<i36>` (a cable); None for any other link.
fn link_pid(name: &str) -> Option<u32> {
    let (parts, count) = match (name.strip_prefix("rb"), name.strip_prefix("rv")) {
        (Some(rest), _) => (rest, 2),
        (_, Some(rest)) => (rest, 3),
        _ => return None,
    };
    let numbers: Vec<u32> = parts.split('-').map(|p| u32::from_str_radix(p, 36).ok()).collect::<Option<_>>()?;
    (numbers.len() == count && parts.chars().all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_lowercase()))
        .then_some(numbers[0])
}

/// Keeps link names within Linux's 15 characters: any pid (up to 2^22) fits
/// in 5 base-36 digits.
fn base36(mut n: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit(n % 36, 36).expect("a base-36 digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}
