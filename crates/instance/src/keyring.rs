//! The OS keyring as the home of the local key (the key that seals the
//! machine keys and, without a passphrase, the seed): the Secret Service on
//! Linux (`secret-tool`, from libsecret), the login Keychain on macOS
//! (`security`).
//!
//! Through the platform's own tool rather than a D-Bus client compiled in:
//! the keyring is read once per process, and the gateway's resident memory
//! stays what it was. Every call is bounded, since start-up waits on it.
//!
//! `keys/seed.kek.keyring` marks a home whose key is in the keyring; the key
//! is stored under the instance id, so two homes never share an entry.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{InstanceError, Result, files, unhex};

/// Marks a home whose local key lives in the OS keyring.
pub(crate) const MARKER: &str = "keys/seed.kek.keyring";
/// The longest a keyring call may take.
const WAIT: Duration = Duration::from_secs(10);

/// Whether the local key of `home` lives in the keyring.
pub(crate) fn holds_key(home: &Path) -> bool {
    home.join(MARKER).exists()
}

fn unavailable(reason: String) -> InstanceError {
    InstanceError::Keyring(reason)
}

/// Keys this process has read, by instance id: opening an instance needs
/// the key more than once, and the keyring is asked only the first time.
static READ: Mutex<BTreeMap<String, [u8; 32]>> = Mutex::new(BTreeMap::new());

fn read_keys() -> MutexGuard<'static, BTreeMap<String, [u8; 32]>> {
    READ.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The local key of instance `id`, from the keyring.
pub(crate) fn read(id: &str) -> Result<[u8; 32]> {
    if let Some(key) = read_keys().get(id) {
        return Ok(*key);
    }
    let key = lookup(id)?;
    read_keys().insert(id.to_string(), key);
    Ok(key)
}

/// Asks the keyring for the key of instance `id`.
fn lookup(id: &str) -> Result<[u8; 32]> {
    let text = run(&lookup_command(id), None)?;
    unhex(text.trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| unavailable(format!("the keyring holds no Roost key for instance {id}")))
}

/// Stores `key` for instance `id`, then asks for it back.
pub(crate) fn store(id: &str, key: &[u8; 32]) -> Result<()> {
    run(&store_command(id, key), Some(&roost_core::hex::encode(key)))?;
    if lookup(id)? != *key {
        return Err(unavailable("the keyring did not give back the key it was given".into()));
    }
    Ok(())
}

/// Removes the key of instance `id` from the keyring.
pub(crate) fn clear(id: &str) -> Result<()> {
    read_keys().remove(id);
    run(&clear_command(id), None).map(drop)
}

/// Marks `home` as keeping its key in the keyring (`on`), or not.
pub(crate) fn mark(home: &Path, on: bool) -> Result<()> {
    let path = home.join(MARKER);
    if on { files::replace(&path, b"the local key is in the OS keyring\n") } else { files::remove_if_present(&path) }
}

#[cfg(not(target_os = "macos"))]
fn lookup_command(id: &str) -> Vec<String> {
    strings(&["secret-tool", "lookup", "service", "roost", "instance", id])
}

#[cfg(not(target_os = "macos"))]
fn store_command(id: &str, _key: &[u8; 32]) -> Vec<String> {
    let label = format!("Roost local key of instance {id}");
    strings(&["secret-tool", "store", "--label", &label, "service", "roost", "instance", id])
}

#[cfg(not(target_os = "macos"))]
fn clear_command(id: &str) -> Vec<String> {
    strings(&["secret-tool", "clear", "service", "roost", "instance", id])
}

#[cfg(target_os = "macos")]
fn lookup_command(id: &str) -> Vec<String> {
    strings(&["security", "find-generic-password", "-s", "roost", "-a", id, "-w"])
}

/// `security` takes the secret as an argument only; it is this machine's
/// own process list that sees it, for the moment the call lasts.
#[cfg(target_os = "macos")]
fn store_command(id: &str, key: &[u8; 32]) -> Vec<String> {
    let hex = roost_core::hex::encode(key);
    strings(&["security", "add-generic-password", "-U", "-s", "roost", "-a", id, "-w", &hex])
}

#[cfg(target_os = "macos")]
fn clear_command(id: &str) -> Vec<String> {
    strings(&["security", "delete-generic-password", "-s", "roost", "-a", id])
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Runs `command` with `input` on its standard input, within [`WAIT`];
/// its standard output, or why it failed.
fn run(command: &[String], input: Option<&str>) -> Result<String> {
    let program = &command[0];
    let mut child = Command::new(program)
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| unavailable(format!("cannot run {program} ({e}); is the keyring's tool installed?")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).map_err(|e| unavailable(format!("{program}: {e}")))?;
    }
    drop(stdin);
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(unavailable(format!(
                    "{program} did not answer within {WAIT:?}; is the keyring unlocked in this session?"
                )));
            }
            Err(e) => return Err(unavailable(format!("{program}: {e}"))),
        }
    }
    let output = child.wait_with_output().map_err(|e| unavailable(format!("{program}: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let said = if said.is_empty() { "no such entry, or no keyring running in this session".into() } else { said };
        return Err(unavailable(format!("{program} failed: {said}")));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
