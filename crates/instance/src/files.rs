//! Crash-safe, owner-only file creation.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

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
}
