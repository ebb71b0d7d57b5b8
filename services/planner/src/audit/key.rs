//! The planner's Ed25519 key: generated on first start, kept in a file only
//! its owner may read (see [`mentat_runtime::keyfile`]), and used to sign
//! anchors and accepted breaks.

use std::path::Path;

use mentat_domain::audit::SigningKey;

use crate::error::{Error, Result};

/// The key in the file at `path`, or a new one written there (mode 0600)
/// when there is none. Refuses a key file that others may read or write,
/// as ssh does.
pub fn load_or_create(path: &Path) -> Result<SigningKey> {
    let existed = path.exists();
    let key = mentat_runtime::keyfile::load_or_create(path).map_err(Error::Fatal)?;
    if !existed {
        tracing::info!(path = %path.display(), "generated the planner's signing key");
    }
    Ok(key)
}
