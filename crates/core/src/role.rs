//! What a machine is to its chain, as its certificate says.

use serde::{Deserialize, Serialize};

/// A machine's role: the home machine (where the chain usually lives) or a
/// satellite. The registry, the certificate and every answer that names a
/// machine carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Home,
    Satellite,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Home => "home",
            Role::Satellite => "satellite",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "home" => Some(Role::Home),
            "satellite" => Some(Role::Satellite),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
