//! Ed25519 secret keys in files: 64 hex characters and a newline, created
//! with mode 0600 and refused when others may read or write them, as ssh
//! does. The planner's anchor key and the operators' command keys
//! (`mt key new`) are both kept this way.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use mentat_domain::audit::SigningKey;
use rand::RngCore;

/// The key in the file at `path`, or a new one written there when there is
/// none (another process creating it at the same time is read back).
pub fn load_or_create(path: &Path) -> Result<SigningKey, String> {
    match std::fs::metadata(path) {
        Ok(_) => read(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create(path) {
            Err(Created::Exists) => read(path),
            Err(Created::Failed(e)) => Err(e),
            Ok(key) => Ok(key),
        },
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// The key in the file at `path`. Refuses a file others may read or
/// write, and anything that is not a key.
pub fn read(path: &Path) -> Result<SigningKey, String> {
    let bad = |detail: &str| format!("the key file {}: {detail}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| bad(&e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "the key file {} has mode {mode:o}: others may read it; `chmod 600 {}` and try again",
            path.display(),
            path.display()
        ));
    }
    // 64 hex characters and a newline; anything much longer is not a key.
    if meta.len() > 1024 {
        return Err(bad("longer than a key"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("not an Ed25519 secret key (64 hex characters)"))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Why [`create`] wrote no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The file is there already: it is never overwritten.
    Exists,
    /// The directory or the file could not be written.
    Failed(String),
}

/// A new key, written to `path` (mode 0600, its directory created when
/// missing, 0700). Never overwrites a file.
pub fn create(path: &Path) -> Result<SigningKey, Created> {
    let fail = |e: std::io::Error| {
        Created::Failed(format!("creating the key file {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(fail)?;
        }
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Created::Exists),
        Err(e) => return Err(fail(e)),
    };
    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    Ok(SigningKey::from_bytes(&secret))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/anchor.key");
        let key = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sub = std::fs::metadata(dir.path().join("sub")).unwrap();
        assert_eq!(sub.permissions().mode() & 0o777, 0o700);
        let again = load_or_create(&path).unwrap();
        assert_eq!(again.to_bytes(), key.to_bytes());
        assert_eq!(read(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(matches!(create(&path), Err(Created::Exists)));
    }

    #[test]
    fn a_key_others_may_read_or_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.key");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path).unwrap_err().contains("644"));
        std::fs::write(&path, "nope").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&path)
            .unwrap_err()
            .contains("not an Ed25519 secret key"));
        assert!(read(&dir.path().join("none")).is_err());
    }
}
