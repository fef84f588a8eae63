//! A throwaway single-member etcd for tests (feature `testing`).
//!
//! [`EtcdServer::start`] runs the `etcd` on PATH (`scripts/install-test-deps`
//! installs it) with a temporary data directory and client and peer URLs on
//! free loopback ports, and waits until it reports healthy. Dropping it kills
//! the process and removes the directory. etcd cannot bind port 0, so ports
//! are found by binding and releasing them; if another process takes one in
//! between, etcd exits and the start is retried on new ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

/// How long etcd may take to become healthy.
const START_WAIT: Duration = Duration::from_secs(20);
/// Starts retried when a port was taken between choosing and binding it.
const ATTEMPTS: usize = 5;

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running etcd, killed and deleted on drop.
pub struct EtcdServer {
    child: Child,
    client: SocketAddr,
    _dir: TempDir,
}

enum Failure {
    PortTaken,
    Other(String),
}

impl EtcdServer {
    /// Starts etcd and waits (at most 20 s) until it answers `/health`.
    ///
    /// # Panics
    ///
    /// When etcd is not on PATH, exits, or does not become healthy in time;
    /// the message carries its log.
    pub fn start() -> EtcdServer {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match EtcdServer::try_start() {
                Ok(server) => return server,
                Err(Failure::PortTaken) if attempt < ATTEMPTS => {}
                Err(Failure::PortTaken) => panic!("etcd found its ports taken {ATTEMPTS} times in a row"),
                Err(Failure::Other(why)) => panic!("{why}"),
            }
        }
    }

    /// `http://127.0.0.1:PORT`, the URL clients use.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Stops the process (SIGSTOP): connections are still accepted by the
    /// kernel, but nothing answers until [`EtcdServer::resume`].
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal).expect("signalling etcd");
    }

    fn try_start() -> Result<EtcdServer, Failure> {
        let dir = tempfile::tempdir().map_err(|e| Failure::Other(format!("creating etcd's directory: {e}")))?;
        let (client, peer) = two_free_ports();
        let name = format!("roost-test-{}-{}", std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed));
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Failure::Other(format!("creating etcd's log: {e}")))?;
        let stderr = log.try_clone().map_err(|e| Failure::Other(format!("opening etcd's log: {e}")))?;
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                Failure::Other(format!("starting etcd: {e} (is it installed? scripts/install-test-deps installs it)"))
            })?;
        let mut server = EtcdServer { child, client, _dir: dir };
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = log();
                if log.contains("address already in use") {
                    return Err(Failure::PortTaken);
                }
                return Err(Failure::Other(format!("etcd exited ({status}) before it was healthy: {log}")));
            }
            if healthy(server.client) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(Failure::Other(format!("etcd was not healthy within {START_WAIT:?}: {}", log())));
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct loopback ports that were free a moment ago.
fn two_free_ports() -> (SocketAddr, SocketAddr) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let (a, b) = (bind(), bind());
    (a.local_addr().expect("a bound address"), b.local_addr().expect("a bound address"))
}

/// Whether etcd at `addr` answers `GET /health` with `"health":"true"`.
fn healthy(addr: SocketAddr) -> bool {
    let wait = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, wait) else {
        return false;
    };
    let mut answer = String::new();
    stream.set_read_timeout(Some(wait)).is_ok()
        && stream.set_write_timeout(Some(wait)).is_ok()
        && stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains(r#""health":"true""#)
}
