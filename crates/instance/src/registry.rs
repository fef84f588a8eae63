//! Registry entries for certificates, and `instances.json`, the registry's
//! mirror that the CLI can read before the database opens.

use roost_identity::{Certificate, hex};
use roost_store::{InstanceEntry, Store};

use crate::{Instance, Result, files};

/// A registry entry describing the machine `cert` certifies.
pub(crate) fn entry_for(cert: &Certificate, gateway_url: Option<String>, status: &str) -> InstanceEntry {
    let claims = &cert.claims;
    InstanceEntry {
        id: claims.instance_id.clone(),
        name: claims.name.clone(),
        role: claims.role.as_str().to_string(),
        gateway_url: gateway_url.or_else(|| claims.gateway_urls.first().cloned()),
        certificate: cert.to_text(),
        signing_key: hex(&claims.signing_key),
        encryption_key: hex(&claims.x25519_key),
        last_seen: None,
        status: status.to_string(),
        created_at: String::new(),
    }
}

impl Instance {
    /// Records this machine in its own registry, then rewrites `instances.json`.
    pub fn register_self(&self, store: &Store) -> Result<()> {
        store.register_instance(&entry_for(&self.certificate, None, "online"))?;
        self.write_registry_file(store)
    }

    /// Adds or refreshes a machine, then rewrites `instances.json`.
    pub fn register(&self, store: &Store, cert: &Certificate, gateway_url: Option<String>) -> Result<()> {
        cert.verify(&self.identity_key())?;
        store.register_instance(&entry_for(cert, gateway_url, "unknown"))?;
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
