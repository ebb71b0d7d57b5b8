//! The planner's Ed25519 key: generated on first start, kept in a file only
//! its owner may read, and used to sign anchors and accepted breaks.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use mentat_domain::audit::SigningKey;
use rand::RngCore;

use crate::error::{Error, Result};

/// The key in the file at `path`, or a new one written there (mode 0600)
/// when there is none. Refuses a key file that others may read or write,
/// as ssh does.
pub fn load_or_create(path: &Path) -> Result<SigningKey> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Fatal(format!(
                    "the key file {} has mode {mode:o}: others may read it; \
                     `chmod 600 {}` and start again",
                    path.display(),
                    path.display()
                )));
            }
            read(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(Error::fatal(&format!("reading {}", path.display()), e)),
    }
}

fn read(path: &Path) -> Result<SigningKey> {
    let bad = |detail: &str| Error::Fatal(format!("the key file {}: {detail}", path.display()));
    // 64 hex characters and a newline; anything much longer is not a key.
    let meta = std::fs::metadata(path).map_err(|e| bad(&e.to_string()))?;
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

fn create(path: &Path) -> Result<SigningKey> {
    let fail =
        |e: std::io::Error| Error::fatal(&format!("creating the key file {}", path.display()), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
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
        // Another planner of this data directory got there first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return read(path),
        Err(e) => return Err(fail(e)),
    };
    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    tracing::info!(path = %path.display(), "generated the planner's signing key");
    Ok(SigningKey::from_bytes(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub/anchor.key");
        let key = load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).expect("read");
        assert_eq!(again.to_bytes(), key.to_bytes());
    }

    #[test]
    fn a_key_others_may_read_or_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("anchor.key");
        load_or_create(&path).expect("created");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(load_or_create(&path), Err(Error::Fatal(e)) if e.contains("644")));
        std::fs::write(&path, "nope").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(load_or_create(&path), Err(Error::Fatal(_))));
    }
}
