//! Telling a service manager how `roost serve` is doing: systemd's
//! `sd_notify` protocol, datagrams to the socket `$NOTIFY_SOCKET` names.
//! `READY=1` once the gateway listens, `WATCHDOG=1` at half the interval
//! `$WATCHDOG_USEC` asks for while the database answers and the lease loop
//! turns, `STOPPING=1` on the way out. Without `$NOTIFY_SOCKET` (not started
//! by systemd, or on macOS under launchd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use roost_machine::Machine;
use roost_store::Store;

/// How long the watchdog's database check may take before the beat is skipped.
const PING_WAIT: Duration = Duration::from_secs(2);

pub struct Notifier {
    socket: UnixDatagram,
    target: SocketAddr,
}

impl Notifier {
    /// The service manager's socket, if this process was started by one.
    pub fn from_env() -> Option<Arc<Notifier>> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_str()?;
        let target = match name.strip_prefix('@') {
            Some(abstract_name) => abstract_address(abstract_name)?,
            None => SocketAddr::from_pathname(name).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Arc::new(Notifier { socket, target }))
    }

    /// Sends `state` (`READY=1`, …); a manager that does not listen loses nothing.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.target) {
            tracing::debug!(error = %e, state, "the service manager did not take a notification");
        }
    }

    /// Beats the watchdog while this machine is well, if the manager asked
    /// for one (and for this process).
    pub fn keep_watchdog(self: &Arc<Notifier>, store: Arc<Store>, machine: Option<Arc<Machine>>) {
        let Some(every) = watchdog_interval() else { return };
        let notifier = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let store = store.clone();
                let database = roost_tasks::blocking("the watchdog's database check", PING_WAIT, move || store.ping());
                let database_ok = matches!(database.await, Ok(Ok(())));
                let lease_ok = machine.as_ref().is_none_or(|m| m.awake().status().ok);
                if database_ok && lease_ok {
                    notifier.send("WATCHDOG=1");
                } else {
                    tracing::warn!(database_ok, lease_ok, "not well: the watchdog is not told this time");
                }
            }
        });
    }
}

/// Half of `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset or this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
    (for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &str) -> Option<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

/// Abstract socket names exist on Linux only.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_: &str) -> Option<SocketAddr> {
    None
}
