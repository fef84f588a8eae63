//! Crash-safe, owner-only file creation, and making an instance directory
//! owner-only again when it is not.
//!
//! Everything in a home is the person's: memories, keys, the lease's votes.
//! Files are created 0600 and directories 0700 whatever the umask (and the
//! `roost` binary also sets its umask to 0077 at start, for files that
//! libraries such as SQLite create on their own).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{InstanceError, Result};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError + '_ {
    move |source| InstanceError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io(path))
}

pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io(path))
}

/// Writes `bytes` to `path` (mode 0600) only if `path` does not exist yet:
/// the content is written and synced under a temporary name, then hard-linked
/// into place, which fails atomically if another writer got there first. A
/// reader therefore never sees a partly written file.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    place(path, bytes, |tmp, path| fs::hard_link(tmp, path))
}

/// Removes `path`; one already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Atomically replaces `path` (mode 0600) with `bytes`: readers see the old
/// file or the new one, never a mix, and a crash leaves one of the two.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    place(path, bytes, |tmp, path| fs::rename(tmp, path))
}

/// Writes and syncs a temporary file beside `path`, moves it into place with
/// `put`, then syncs the directory so the new name is durable.
fn place(path: &Path, bytes: &[u8], put: fn(&Path, &Path) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        put(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(io(path))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Opens `path` for reading and writing, creating it owner-only (0600) if
/// absent and keeping its content: for lock files.
pub(crate) fn open_lock(path: &Path) -> Result<fs::File> {
    OpenOptions::new().create(true).truncate(false).read(true).write(true).mode(0o600).open(path).map_err(io(path))
}

/// Takes a lock on `path` (created as by [`open_lock`]), shared or
/// exclusive, waiting at most `within` for another process to release it:
/// a reader on the boot path never hangs behind a stuck writer. Released when
/// the returned file is dropped.
pub(crate) fn lock_within(path: &Path, exclusive: bool, within: std::time::Duration) -> Result<fs::File> {
    let file = open_lock(path)?;
    let deadline = std::time::Instant::now() + within;
    loop {
        let attempt = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match attempt {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io(path)(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("another roost process held it for over {} s; try again in a moment", within.as_secs()),
                )));
            }
            Err(fs::TryLockError::Error(source)) => return Err(io(path)(source)),
        }
    }
}

/// From now on, files and directories this process creates are owner-only
/// unless it asks otherwise: sets the umask to 0077. The `roost` binary calls
/// it first thing, before anything opens a file.
pub fn private_by_default() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Makes everything in `home` owner-only: each directory (`home` included)
/// that group or others could reach becomes 0700, each other file 0600.
/// Symbolic links inside are left alone, and entries that vanish meanwhile (a
/// running gateway's temporary files) are skipped. Returns the paths it
/// changed, relative to `home` (empty for `home` itself).
pub fn make_private(home: &Path) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let meta = fs::metadata(home).map_err(io(home))?;
    tighten(home, &meta, Path::new(""), &mut changed)?;
    Ok(changed)
}

fn tighten(path: &Path, meta: &fs::Metadata, relative: &Path, changed: &mut Vec<PathBuf>) -> Result<()> {
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let private = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o077 != 0 {
        match fs::set_permissions(path, fs::Permissions::from_mode(private)) {
            Ok(()) => changed.push(relative.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(InstanceError::NotPrivate { path: path.to_path_buf(), source }),
        }
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(InstanceError::Io { path: path.to_path_buf(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(io(path))?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(InstanceError::Io { path: entry.path(), source }),
        };
        tighten(&entry.path(), &meta, &relative.join(entry.file_name()), changed)?;
    }
    Ok(())
}

/// Like [`write_new`], but an existing file is kept as it is.
pub(crate) fn write_new_or_keep(path: &Path, bytes: &[u8]) -> Result<()> {
    match write_new(path, bytes) {
        Err(InstanceError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_new_never_overwrites_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new(&path, b"first").unwrap();
        assert!(write_new(&path, b"second").is_err());
        write_new_or_keep(&path, b"third").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary files left behind");
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn make_private_tightens_what_others_can_reach_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        fs::create_dir_all(home.join("keys")).unwrap();
        fs::write(home.join("roost.db"), b"").unwrap();
        fs::write(home.join("keys/machine.key"), b"").unwrap();
        fs::write(home.join("already"), b"").unwrap();
        fs::write(dir.path().join("outside"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), home.join("link")).unwrap();
        for (path, m) in [
            (home.clone(), 0o755),
            (home.join("keys"), 0o750),
            (home.join("roost.db"), 0o644),
            (home.join("keys/machine.key"), 0o604),
            (home.join("already"), 0o600),
            (dir.path().join("outside"), 0o644),
        ] {
            fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
        }

        let mut changed = make_private(&home).unwrap();
        changed.sort();
        let expected: Vec<PathBuf> = ["", "keys", "keys/machine.key", "roost.db"].iter().map(PathBuf::from).collect();
        assert_eq!(changed, expected);
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&home.join("keys")), 0o700);
        assert_eq!(mode(&home.join("roost.db")), 0o600);
        assert_eq!(mode(&home.join("keys/machine.key")), 0o600);
        assert_eq!(mode(&dir.path().join("outside")), 0o644, "a link is not followed out of the home");
        assert!(make_private(&home).unwrap().is_empty(), "a private home is left as it is");
    }
}
