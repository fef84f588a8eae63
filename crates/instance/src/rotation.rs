//! The chain's identities over time: rotating to a new one when a machine is
//! revoked, taking a rotation a peer passed on, and the lineage file that
//! remembers every earlier identity.
//!
//! `<home>/rotations` holds the rotations this chain went through, oldest
//! first, one per line. Each starts at the identity the previous one ended
//! at; the last ends at the identity of this machine's certificate, or
//! starts there: a machine that rotated the chain as it left keeps the
//! rotation to pass on, and one that crashed between recording a rotation
//! and adopting it takes it again when a peer passes it on.

use std::path::Path;

use roost_identity::rotation::{Recipient, RotationClaims};
use roost_identity::{IdentityError, MasterSeed, RoostId, Rotation};
use roost_store::Store;

use crate::{Instance, InstanceError, Result, files, unix_now};

const LINEAGE: &str = "rotations";

/// What taking a rotation changed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The chain's new Roost ID.
    pub roost_id: RoostId,
    /// Machines it did not keep, revoked here under the new identity.
    pub left_behind: Vec<String>,
}

/// Reads the lineage that starts or ends at `current`, the identity key of
/// this machine's certificate. One that does not reach it (a join another
/// chain interrupted before it wrote its own) counts as none.
pub(crate) fn read_lineage(home: &Path, current: &[u8; 32]) -> Result<Vec<Rotation>> {
    let path = home.join(LINEAGE);
    let texts = recorded_rotations(home)?;
    let lineage = parse_lineage(&texts).map_err(|reason| InstanceError::Corrupt { path, reason })?;
    match lineage.last() {
        Some(last) if last.new_identity != *current && last.old_identity != *current => Ok(Vec::new()),
        _ => Ok(lineage),
    }
}

/// Parses rotations, oldest first: each signed by the identity it leaves,
/// each starting where the one before it ended.
fn parse_lineage(texts: &[String]) -> Result<Vec<Rotation>, String> {
    let mut lineage: Vec<Rotation> = Vec::new();
    for text in texts {
        let rotation = Rotation::from_text(text).map_err(|e| e.to_string())?;
        if lineage.last().is_some_and(|previous| previous.new_identity != rotation.old_identity) {
            return Err("a rotation does not start where the one before it ended".into());
        }
        let old = ed25519_dalek::VerifyingKey::from_bytes(&rotation.old_identity).map_err(|e| e.to_string())?;
        rotation.verify(&old).map_err(|e| e.to_string())?;
        lineage.push(rotation);
    }
    Ok(lineage)
}

/// Rotations checked to lead to an identity, with their text form.
pub(crate) struct Lineage {
    texts: Vec<String>,
    rotations: Vec<Rotation>,
}

impl Lineage {
    /// Checks that `texts` (oldest first) lead to `identity`, the key of
    /// the identity a machine is about to take; nothing is written yet.
    pub(crate) fn leading_to(texts: &[String], identity: &[u8; 32]) -> Result<Lineage> {
        let invalid = |why: String| IdentityError::Invalid(format!("the chain's rotations: {why}"));
        let rotations = parse_lineage(texts).map_err(invalid)?;
        if rotations.last().is_some_and(|last| last.new_identity != *identity) {
            return Err(invalid("they do not lead to the chain's identity".into()).into());
        }
        Ok(Lineage { texts: texts.to_vec(), rotations })
    }
}

/// The rotations recorded in `home`, text form, oldest first: what
/// replication passes on (read afresh, so one recorded by a command while
/// `serve` runs goes out too).
pub fn recorded_rotations(home: &Path) -> Result<Vec<String>> {
    let path = home.join(LINEAGE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(InstanceError::Io { path, source }),
    }
}

/// Writes the lineage file, one rotation per line; none removes it.
fn write_lineage(home: &Path, texts: &[String]) -> Result<()> {
    let path = home.join(LINEAGE);
    if texts.is_empty() {
        files::remove_if_present(&path)
    } else {
        files::replace(&path, (texts.join("\n") + "\n").as_bytes())
    }
}

impl Instance {
    /// The Roost ID the chain was created with: the lease keeps its votes
    /// and its etcd key under it, so they outlive rotations.
    pub fn chain_key(&self) -> RoostId {
        self.lineage.first().and_then(Rotation::old_roost_id).unwrap_or_else(|| self.roost_id())
    }

    /// The rotations that led to this machine's identity, oldest first.
    fn adopted(&self) -> &[Rotation] {
        let current = self.certificate.identity_key;
        match self.lineage.last() {
            Some(last) if last.new_identity != current => &self.lineage[..self.lineage.len() - 1],
            _ => &self.lineage,
        }
    }

    /// The chain's earlier Roost IDs, oldest first, each with when it was
    /// left (unix seconds).
    pub fn earlier_ids(&self) -> Vec<(RoostId, i64)> {
        self.adopted().iter().filter_map(|r| Some((r.old_roost_id()?, r.issued_at))).collect()
    }

    /// The identity keys whose revocations still count: this one and every
    /// earlier one.
    pub fn identity_keys(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        let earlier =
            self.adopted().iter().filter_map(|r| ed25519_dalek::VerifyingKey::from_bytes(&r.old_identity).ok());
        std::iter::once(self.identity_key()).chain(earlier).collect()
    }

    /// The rotations that led to this machine's identity, text form, oldest
    /// first, for a machine joining through this one.
    pub fn lineage_texts(&self) -> Vec<String> {
        self.adopted().iter().map(Rotation::to_text).collect()
    }

    /// Moves the chain to a new identity, handing its seed to every machine
    /// registered and not revoked but `leaving`, then adopts it here unless
    /// this machine is the one leaving. Needs the seed. Returns the
    /// rotation, which replication passes to every machine.
    pub fn rotate(&mut self, store: &Store, leaving: &str) -> Result<Rotation> {
        let old = self.seed.clone().ok_or(InstanceError::NoSeed)?;
        let new = MasterSeed(rand::random());
        let mut recipients = Vec::new();
        for entry in store.instances()?.into_iter().filter(|e| !e.is_revoked() && e.id != leaving) {
            let Some(x25519_key) = crate::parse_key_hex(&entry.encryption_key) else { continue };
            recipients.push(Recipient { instance_id: entry.id, x25519_key });
        }
        let claims = RotationClaims { issuer: &self.id, issued_at: unix_now(), recipients: &recipients };
        let rotation = Rotation::issue(&old, &new, claims, rand::random())?;
        self.record(&rotation)?;
        if rotation.keeps(&self.id) {
            self.adopt_rotation(store, &rotation, new)?;
        }
        Ok(rotation)
    }

    /// Takes a rotation a peer passed on: if the chain's identity signed it
    /// and it keeps this machine, adopts the new identity, here and on disk
    /// (the running services pick it up on reload). What changed, when it
    /// was new here.
    pub fn take_rotation(&mut self, store: &Store, text: &str) -> Result<Option<Adopted>> {
        let rotation = Rotation::from_text(text)?;
        let current = self.identity_key().to_bytes();
        if rotation.new_identity == current || self.adopted().iter().any(|r| r.new_identity == rotation.new_identity) {
            return Ok(None);
        }
        if rotation.old_identity != current {
            return Err(IdentityError::Invalid("a rotation of another identity than this machine's".into()).into());
        }
        rotation.verify(&self.identity_key())?;
        let seed = rotation.open_seed(&self.id, &self.x25519_key)?;
        self.record(&rotation)?;
        let left_behind = self.adopt_rotation(store, &rotation, seed)?;
        Ok(Some(Adopted { roost_id: self.roost_id(), left_behind }))
    }

    /// Replaces the lineage with `lineage`, the rotations that led to the
    /// identity this machine just took (a join grant carries them).
    pub(crate) fn take_lineage(&mut self, lineage: Lineage) -> Result<()> {
        write_lineage(&self.home, &lineage.texts)?;
        self.lineage = lineage.rotations;
        Ok(())
    }

    /// Appends `rotation` to the lineage file, once.
    fn record(&self, rotation: &Rotation) -> Result<()> {
        let mut texts = recorded_rotations(&self.home)?;
        let text = rotation.to_text();
        if !texts.contains(&text) {
            texts.push(text);
            write_lineage(&self.home, &texts)?;
        }
        Ok(())
    }

    /// Takes `seed` (the rotation's new identity) and a certificate from it
    /// with this machine's claims, then revokes, under the new identity,
    /// every registered machine the rotation does not keep: whatever the old
    /// seed certified in the meantime stays out. Returns the names of the
    /// machines left behind.
    fn adopt_rotation(&mut self, store: &Store, rotation: &Rotation, seed: MasterSeed) -> Result<Vec<String>> {
        let mut claims = self.certificate.claims.clone();
        claims.issued_at = unix_now().max(claims.issued_at + 1);
        let certificate = roost_identity::Certificate::issue(claims, &seed.identity_key())?;
        let role = certificate.claims.role;
        self.adopt_identity(seed, Some(certificate), role)?;
        if self.lineage.last() != Some(rotation) {
            self.lineage.push(rotation.clone());
        }
        self.register_self(store)?;
        let left_behind: Vec<String> = store
            .instances()?
            .into_iter()
            .filter(|e| !e.is_revoked() && e.id != self.id && !rotation.keeps(&e.id))
            .map(|e| e.id)
            .collect();
        left_behind.iter().map(|id| Ok(self.revoke(store, id)?.name)).collect()
    }
}
