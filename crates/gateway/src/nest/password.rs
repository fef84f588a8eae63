//! The Nest's password: one Argon2id PHC string in `<home>/nest.password`,
//! set with `roost nest password` and read again at every login attempt so
//! that setting it while the gateway runs takes effect at once.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// The file, inside the instance home, holding the password hash.
pub const PASSWORD_FILE: &str = "nest.password";
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD: usize = 8;

/// Hashes `password` and stores it crash-safely, owner-only.
pub fn set_password(home: &Path, password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD {
        bail!("the password must have at least {MIN_PASSWORD} characters");
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string();
    let path = home.join(PASSWORD_FILE);
    roost_instance::replace(&path, format!("{hash}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// What a login attempt's password is, against the stored hash.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    NotSet,
    Wrong,
    Right,
}

/// Why the stored password could not be checked against.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid password hash ({source}); set it again", path.display())]
    NotAHash { path: PathBuf, source: argon2::password_hash::Error },
}

/// Checks `password` against the stored hash (slow on purpose: run it off
/// the async threads).
pub(crate) fn check(home: &Path, password: &str) -> Result<Verdict, PasswordError> {
    let path = home.join(PASSWORD_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::NotSet),
        Err(source) => return Err(PasswordError::Unreadable { path, source }),
    };
    match Argon2::default().verify_password(password.as_bytes(), stored.trim()) {
        Ok(()) => Ok(Verdict::Right),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(Verdict::Wrong),
        Err(source) => Err(PasswordError::NotAHash { path, source }),
    }
}

/// Whether a password has been set.
pub(crate) fn is_set(home: &Path) -> bool {
    home.join(PASSWORD_FILE).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_check() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(check(home.path(), "anything").unwrap(), Verdict::NotSet);
        assert!(set_password(home.path(), "short").is_err());
        set_password(home.path(), "long enough").unwrap();
        assert_eq!(check(home.path(), "long enough").unwrap(), Verdict::Right);
        assert_eq!(check(home.path(), "long enougH").unwrap(), Verdict::Wrong);
        let text = std::fs::read_to_string(home.path().join(PASSWORD_FILE)).unwrap();
        assert!(text.starts_with("$argon2id$"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join(PASSWORD_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
