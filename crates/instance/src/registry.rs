//! Registry entries for certificates, and `instances.json`, the registry's
//! mirror that the CLI can read before the database opens.

use roost_identity::{Certificate, Revocation, RevocationClaims, hex};
use roost_store::{InstanceEntry, Standing, Store, registry::merge_addresses};

use crate::addresses::is_loopback_url;
use crate::{Instance, InstanceError, Result, files, unix_now};

/// A registry entry describing the machine `cert` certifies, reachable at
/// `addresses` and then at the URLs its certificate names. A loopback URL
/// there means that machine's own host: it is kept only for a machine on
/// this host (`same_host`), which another machine would otherwise dial
/// when it meant the certified one.
pub(crate) fn entry_for(cert: &Certificate, addresses: &[String], same_host: bool) -> InstanceEntry {
    let claims = &cert.claims;
    let named: Vec<String> =
        claims.gateway_urls.iter().filter(|url| same_host || !is_loopback_url(url)).cloned().collect();
    InstanceEntry {
        id: claims.instance_id.clone(),
        name: claims.name.clone(),
        role: claims.role,
        addresses: merge_addresses(addresses, &named),
        certificate: cert.to_text(),
        signing_key: hex(&claims.signing_key),
        encryption_key: hex(&claims.x25519_key),
        version: None,
        last_seen: None,
        status: Standing::Active,
        created_at: String::new(),
    }
}

impl Instance {
    /// Records this machine in its own registry, then rewrites `instances.json`.
    pub fn register_self(&self, store: &Store) -> Result<()> {
        let addresses = self.advertised_urls();
        store.register_instance(&entry_for(&self.certificate, &addresses, true))?;
        store.note_self_report(&self.id, &addresses, crate::VERSION)?;
        self.write_registry_file(store)
    }

    /// Adds or refreshes a machine certified by this chain, reachable at
    /// `addresses` first, then rewrites `instances.json`. A loopback address
    /// among them says the machine shares this host.
    pub fn register(&self, store: &Store, cert: &Certificate, addresses: &[String]) -> Result<()> {
        cert.verify(&self.identity_key())?;
        let same_host = addresses.iter().any(|a| is_loopback_url(a));
        store.register_instance(&entry_for(cert, addresses, same_host))?;
        self.write_registry_file(store)
    }

    /// Revokes a machine of the chain (by id or name) with a revocation the
    /// identity signs, which replication then passes to every machine; needs
    /// the seed. Rewrites `instances.json`.
    /// Revokes `key` (an id or a name) and moves the chain to a new identity
    /// it never sees, since it still holds the seed (`roost instance revoke`,
    /// and the Nest's Machines page). Returns the machine revoked and the
    /// Roost ID the chain had before.
    pub fn revoke_and_rotate(&mut self, store: &Store, key: &str) -> Result<(InstanceEntry, String)> {
        let revoked = self.revoke(store, key)?;
        let before = self.roost_id().to_string();
        self.rotate(store, &revoked.id)?;
        Ok((revoked, before))
    }

    /// Registers the machine whose certificate `text` is, reached at `url`,
    /// if the certificate is from this chain's identity (`roost instance
    /// register URL`, and the Nest's Machines page).
    pub fn register_reached(&self, store: &Store, text: &str, url: &str) -> Result<Certificate> {
        let cert = Certificate::from_text(text)
            .map_err(|e| InstanceError::Refused(format!("{url} sent no valid certificate: {e}")))?;
        cert.verify(&self.identity_key()).map_err(|e| InstanceError::Refused(format!("refusing {url}: {e}")))?;
        self.register(store, &cert, &[url.to_string()])?;
        Ok(cert)
    }

    pub fn revoke(&self, store: &Store, key: &str) -> Result<InstanceEntry> {
        let identity = self.seed.as_ref().ok_or(InstanceError::NoSeed)?.identity_key();
        let revoked = store.revoke_instance(key, |target, revoked_after| {
            let claims = RevocationClaims {
                instance_id: target.id.clone(),
                machine_key: roost_core::hex::decode_array(&target.signing_key).unwrap_or_default(),
                revoked_after,
                issued_at: unix_now(),
            };
            Revocation::issue(claims, &identity).expect("registered machines have UUID ids").to_text()
        })?;
        self.write_registry_file(store)?;
        Ok(revoked)
    }

    /// Takes a revocation a peer passed on, if the identity signed it (this
    /// one or one the chain had before a rotation): the machine it names is
    /// refused from now on. The revoked machine's id when it was new here.
    pub fn take_revocation(&self, store: &Store, text: &str) -> Result<Option<String>> {
        let revocation = Revocation::from_text(text)?;
        if !self.identity_keys().iter().any(|identity| revocation.verify(identity).is_ok()) {
            // Refused: say why against the current identity.
            revocation.verify(&self.identity_key())?;
        }
        let claims = &revocation.claims;
        let new = store.take_revocation(
            &claims.instance_id,
            &hex(&claims.machine_key),
            &revocation.to_text(),
            claims.revoked_after,
        )?;
        if new {
            self.write_registry_file(store)?;
        }
        Ok(new.then(|| claims.instance_id.clone()))
    }

    /// Writes `instances.json` atomically from the database's registry.
    pub fn write_registry_file(&self, store: &Store) -> Result<()> {
        let entries = store.instances()?;
        let json = serde_json::to_vec_pretty(&entries).expect("registry entries serialise");
        files::replace(&self.home.join("instances.json"), &json)
    }

    /// Reads `instances.json` without opening the database.
    pub fn read_registry_file(&self) -> Result<Vec<InstanceEntry>> {
        let path = self.home.join("instances.json");
        let text = files::read(&path)?;
        serde_json::from_str(&text).map_err(|e| crate::InstanceError::Corrupt { path, reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use roost_identity::cert::MachineClaims;
    use roost_identity::{MasterSeed, Role};

    use super::*;

    fn certified(urls: &[&str]) -> Certificate {
        let claims = MachineClaims {
            instance_id: "01a2407a-46ce-766c-bca2-b5bd5c66845f".into(),
            name: "home".into(),
            role: Role::Satellite,
            signing_key: [1; 32],
            x25519_key: [2; 32],
            gateway_urls: urls.iter().map(|u| u.to_string()).collect(),
            issued_at: 1,
        };
        Certificate::issue(claims, &MasterSeed([3; 32]).identity_key()).unwrap()
    }

    #[test]
    fn a_certificates_loopback_url_is_kept_only_for_a_machine_on_this_host() {
        let cert = certified(&["http://127.0.0.1:7151", "http://home.lan:7151"]);
        let far = entry_for(&cert, &["http://10.0.0.2:7151".into()], false);
        assert_eq!(far.addresses, ["http://10.0.0.2:7151", "http://home.lan:7151"]);
        let near = entry_for(&cert, &["http://127.0.0.1:7152".into()], true);
        assert!(near.addresses.contains(&"http://127.0.0.1:7151".to_string()), "{:?}", near.addresses);
    }
}
