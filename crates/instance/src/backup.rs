//! `roost backup` and `roost restore`: one file holding an instance.
//!
//! The file is a magic line and then named parts, each a one-byte name
//! length, the name, an eight-byte big-endian length and the bytes, ending
//! with an empty name. The parts: the database as of one commit
//! (`Store::back_up_to`), the instance files that say who this machine is
//! and whom it knows, and its secrets (machine keys and, when this machine
//! holds it, the chain's seed) sealed under a passphrase with Argon2id and
//! AES-256-GCM: at rest each machine seals them with a key file of its own,
//! which a backup must not carry beside them. A seed already sealed with a
//! passphrase of its own (`roost identity protect`) is carried as it is.
//!
//! What is left out: the lease's votes (`lease.json`; a restored machine
//! starts its votes afresh, like a machine just joined), its role history,
//! a pairing code on offer, locks, the socket. A restored database is
//! marked so that the machine takes back the entries it wrote after the
//! backup before it writes again (`roost_store`'s `restore`).

use std::io::Read;
use std::path::Path;

use roost_identity::MasterSeed;
use roost_identity::seal::{
    KdfParams, open_backup_secrets, seal_backup_secrets, seal_machine_keys_at_rest, seal_seed_at_rest,
};

use crate::{Instance, InstanceError, Result, files, identity};

const MAGIC: &[u8] = b"roost-backup/1\n";

/// The instance files a backup carries as they are.
const PLAIN: [&str; 7] =
    ["config.toml", "instance-id", "certificate", "founder", "instances.json", "rotations", "nest.password"];
const SECRETS: &str = "secrets";
/// A seed sealed with its own passphrase, carried as it is.
const PROTECTED_SEED: &str = "keys/seed.sealed";
const DATABASE: &str = "roost.db";

/// What a backup holds, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub files: Vec<String>,
    pub database_bytes: u64,
    /// Whether the chain's seed is in it (sealed).
    pub seed: bool,
}

/// Writes a backup of `instance` to `file` (which must not exist) while
/// `roost serve` may go on running, its secrets sealed under `passphrase`.
pub fn back_up(instance: &Instance, file: &Path, passphrase: &str) -> Result<Contents> {
    let home = &instance.home;
    // The copy is made in the home, which only its user can enter, and
    // removed however this ends.
    struct Removed<'a>(&'a Path);
    impl Drop for Removed<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let copy = home.join(format!(".backup-{:016x}.db", rand::random::<u64>()));
    let _removed = Removed(&copy);
    instance.open_store()?.back_up_to(&copy)?;
    let database = std::fs::read(&copy).map_err(|source| InstanceError::Io { path: copy.clone(), source })?;

    let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
    for name in PLAIN {
        match std::fs::read(home.join(name)) {
            Ok(bytes) => parts.push((name.to_string(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(InstanceError::Io { path: home.join(name), source }),
        }
    }
    let mut secrets = instance.machine_key.to_bytes().to_vec();
    secrets.extend_from_slice(&instance.x25519_key.to_bytes());
    let sealed_seed = std::fs::read(home.join(PROTECTED_SEED)).ok();
    let protected = sealed_seed.as_deref().filter(|s| roost_identity::seal::needs_passphrase(s));
    match (&instance.seed, protected) {
        (_, Some(protected)) => parts.push((PROTECTED_SEED.to_string(), protected.to_vec())),
        (Some(seed), None) => secrets.extend_from_slice(&seed.0),
        (None, None) => {}
    }
    let seed = secrets.len() == 96 || protected.is_some();
    let sealed = seal_backup_secrets(&secrets, passphrase, KdfParams::DEFAULT, rand::random(), rand::random())?;
    parts.push((SECRETS.to_string(), sealed));
    let contents = Contents {
        files: parts.iter().map(|(name, _)| name.clone()).collect(),
        database_bytes: database.len() as u64,
        seed,
    };
    parts.push((DATABASE.to_string(), database));

    let mut bytes = MAGIC.to_vec();
    for (name, body) in &parts {
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
        bytes.extend_from_slice(body);
    }
    bytes.push(0);
    files::write_new(file, &bytes)?;
    Ok(contents)
}

/// Brings the instance in `file` back in `home` (which must hold no
/// instance), opening its secrets with `passphrase`. Its database is marked
/// restored; `roost serve` then takes back from the peers what it wrote
/// after the backup before it writes again.
pub fn restore(file: &Path, home: &Path, passphrase: &str) -> Result<Instance> {
    if home.join("config.toml").exists() {
        let existing = Instance::open(home)?;
        return Err(InstanceError::Exists { home: home.to_path_buf(), name: existing.config.name });
    }
    let corrupt = |reason: &str| InstanceError::Corrupt { path: file.to_path_buf(), reason: reason.to_string() };
    let mut reader =
        std::fs::File::open(file).map_err(|source| InstanceError::Io { path: file.to_path_buf(), source })?;
    let parts = read_parts(&mut reader).map_err(|why| corrupt(&format!("not a Roost backup ({why})")))?;
    let part = |name: &str| parts.iter().find(|(n, _)| n == name).map(|(_, body)| body.as_slice());
    let sealed = part(SECRETS).ok_or_else(|| corrupt("it holds no secrets part"))?;
    let database = part(DATABASE).ok_or_else(|| corrupt("it holds no database"))?;
    let secrets = open_backup_secrets(sealed, passphrase)?;
    if secrets.len() != 64 && secrets.len() != 96 {
        return Err(corrupt("its secrets are not a machine's keys"));
    }

    files::create_private_dir(home)?;
    files::create_private_dir(&home.join("keys"))?;
    let kek = identity::local_kek(home)?;
    let signing: [u8; 32] = secrets[..32].try_into().expect("32 bytes");
    let x25519: [u8; 32] = secrets[32..64].try_into().expect("32 bytes");
    files::write_new(
        &home.join("keys/machine.sealed"),
        &seal_machine_keys_at_rest(&signing, &x25519, &kek, &rand::random()),
    )?;
    if let Ok(seed) = <[u8; 32]>::try_from(&secrets[64..]) {
        files::write_new(&home.join(PROTECTED_SEED), &seal_seed_at_rest(&MasterSeed(seed), &kek, &rand::random()))?;
    } else if let Some(protected) = part(PROTECTED_SEED) {
        files::write_new(&home.join(PROTECTED_SEED), protected)?;
    }
    for name in PLAIN {
        if let Some(body) = part(name) {
            files::write_new(&home.join(name), body)?;
        }
    }
    files::write_new(&home.join(DATABASE), database)?;
    let instance = Instance::open(home)?;
    instance.open_store()?.mark_restored()?;
    Ok(instance)
}

/// The parts of a backup, every name one it may hold, in a bounded read.
fn read_parts(reader: &mut impl Read) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
    let mut magic = vec![0; MAGIC.len()];
    reader.read_exact(&mut magic).map_err(|_| "it is too short")?;
    if magic != MAGIC {
        return Err("it does not start as one".into());
    }
    let mut parts = Vec::new();
    loop {
        let mut length = [0u8; 1];
        reader.read_exact(&mut length).map_err(|_| "it ends early")?;
        if length[0] == 0 {
            return Ok(parts);
        }
        let mut name = vec![0; length[0] as usize];
        reader.read_exact(&mut name).map_err(|_| "it ends early")?;
        let name = String::from_utf8(name).map_err(|_| "a part's name is not text")?;
        let known = PLAIN.contains(&name.as_str()) || [SECRETS, PROTECTED_SEED, DATABASE].contains(&name.as_str());
        if !known || parts.iter().any(|(n, _)| *n == name) {
            return Err(format!("it holds an unexpected part {name:?}"));
        }
        let mut size = [0u8; 8];
        reader.read_exact(&mut size).map_err(|_| "it ends early")?;
        let size = u64::from_be_bytes(size);
        let mut body = Vec::new();
        reader.take(size).read_to_end(&mut body).map_err(|e| e.to_string())?;
        if body.len() as u64 != size {
            return Err("it ends early".into());
        }
        parts.push((name, body));
    }
}
