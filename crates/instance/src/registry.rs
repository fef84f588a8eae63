//! Registry entries for certificates, and `instances.json`, the registry's
//! mirror that the CLI can read before the database opens.

use roost_identity::{Certificate, hex};
use roost_store::{InstanceEntry, Standing, Store, registry::merge_addresses};

use crate::{Instance, Result, files};

/// A registry entry describing the machine `cert` certifies, reachable at
/// `addresses` and then at the URLs its certificate names.
pub(crate) fn entry_for(cert: &Certificate, addresses: &[String]) -> InstanceEntry {
    let claims = &cert.claims;
    InstanceEntry {
        id: claims.instance_id.clone(),
        name: claims.name.clone(),
        role: claims.role,
        addresses: merge_addresses(addresses, &claims.gateway_urls),
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
        store.register_instance(&entry_for(&self.certificate, &addresses))?;
        store.note_self_report(&self.id, &addresses, crate::VERSION)?;
        self.write_registry_file(store)
    }

    /// Adds or refreshes a machine certified by this chain, reachable at
    /// `addresses` first, then rewrites `instances.json`.
    pub fn register(&self, store: &Store, cert: &Certificate, addresses: &[String]) -> Result<()> {
        cert.verify(&self.identity_key())?;
        store.register_instance(&entry_for(cert, addresses))?;
        self.write_registry_file(store)
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
