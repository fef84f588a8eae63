//! Machines on a wire for `roost bench sync --netns`: each in a network
//! namespace of its own, cabled by a veth pair to one bridge, so that
//! replication crosses real interfaces and a real bridge instead of loopback.
//! The bridge carries an address too, so the bench (in the root namespace)
//! reaches the gateways as a client on the same wire would. Needs root and
//! iproute2; everything is removed when the value is dropped.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Namespaces are `<prefix><pid of the bench>-<machine>`.
const NS_PREFIX: &str = "roost-bench-";

pub(crate) struct Wire {
    bridge: String,
    /// The first three octets of the wire's /24.
    subnet: [u8; 3],
    namespaces: Vec<String>,
    cables: Vec<String>,
}

impl Wire {
    /// `machines` namespaces on one bridge; machine `i` has address `.(i + 1)`.
    pub(crate) fn new(machines: usize) -> anyhow::Result<Wire> {
        remove_stale();
        let pid = std::process::id();
        let mut wire = Wire {
            bridge: bridge_name(pid),
            subnet: [10, 213, (pid % 250) as u8 + 1],
            namespaces: Vec::new(),
            cables: Vec::new(),
        };
        // From here on an error drops `wire`, which removes what exists so far.
        ip(&["link", "add", &wire.bridge, "type", "bridge"])?;
        let bridge_addr = format!("{}/24", wire.bridge_address());
        ip(&["addr", "add", &bridge_addr, "dev", &wire.bridge])?;
        ip(&["link", "set", &wire.bridge, "up"])?;
        for i in 0..machines {
            let (ns, cable) = (format!("{NS_PREFIX}{pid}-{i}"), format!("rbv{:x}-{i}", pid % 0x10_0000));
            wire.namespaces.push(ns.clone());
            wire.cables.push(cable.clone());
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &cable, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &cable, "master", &wire.bridge, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", wire.machine_address(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(wire)
    }

    /// The namespace machine `i` runs in.
    pub(crate) fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Machine `i`'s address on the wire.
    pub(crate) fn machine_address(&self, i: usize) -> Ipv4Addr {
        self.address(i as u8 + 1)
    }

    /// The bridge's own address: how this process reaches the machines, and
    /// they it.
    pub(crate) fn bridge_address(&self) -> Ipv4Addr {
        self.address(254)
    }

    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], last)
    }

    /// Drops every UDP packet between machines `i` and `j`, so QUIC between
    /// them has no direct path (TCP, and UDP to the others, still pass).
    pub(crate) fn drop_udp_between(&self, i: usize, j: usize) -> anyhow::Result<()> {
        let other = self.machine_address(j).to_string();
        for (chain, way) in [("OUTPUT", "-d"), ("INPUT", "-s")] {
            let rule = ["-A", chain, "-p", "udp", way, &other, "-j", "DROP"];
            let out = command_in(Some(self.namespace(i)), Path::new("iptables"))
                .args(rule)
                .output()
                .context("running iptables (needed for --relay)")?;
            anyhow::ensure!(
                out.status.success(),
                "iptables {}: {}",
                rule.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// `roost relay` on machine `i` of a wire, until dropped.
pub(crate) struct Relay {
    child: std::process::Child,
    /// What the machines name in `[sync] relays`.
    pub(crate) url: String,
}

impl Relay {
    pub(crate) fn start(wire: &Wire, i: usize) -> anyhow::Result<Relay> {
        let addr = format!("{}:3340", wire.machine_address(i));
        let child = command_in(Some(wire.namespace(i)), &std::env::current_exe()?)
            .args(["relay", "--bind", &addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let relay = Relay { child, url: format!("http://{addr}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(200)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "roost relay did not listen on {addr} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(relay)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` run inside `namespace`, or here when there is none.
pub(crate) fn command_in(namespace: Option<&str>, program: &Path) -> Command {
    match namespace {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_everything_in(ns);
            quiet_ip(&["netns", "del", ns]);
        }
        for cable in &self.cables {
            quiet_ip(&["link", "del", cable]);
        }
        quiet_ip(&["link", "del", &self.bridge]);
    }
}

fn bridge_name(pid: u32) -> String {
    format!("rbb{:x}", pid % 0x10_0000)
}

/// Removes the namespaces and bridges of benches that were killed before
/// they could (a namespace's cables go with it).
fn remove_stale() {
    let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    for ns in String::from_utf8_lossy(&listed).lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = ns.strip_prefix(NS_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            kill_everything_in(ns);
            quiet_ip(&["netns", "del", ns]);
            quiet_ip(&["link", "del", &bridge_name(pid)]);
        }
    }
}

/// SIGKILLs what still runs in `namespace`, waiting (bounded) until it is gone.
fn kill_everything_in(namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = Command::new("ip").args(["netns", "pids", namespace]).stderr(Stdio::null()).output();
        let pids = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        if pids.trim().is_empty() {
            return;
        }
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2 is needed for --netns)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {} (--netns needs root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn quiet_ip(args: &[&str]) {
    let _ = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}
