//! How a component proves who it is to NATS: an identity's credentials
//! file (`--nats-creds FILE`, `MENTAT_NATS_CREDS`), and the rule that
//! nothing talks to a NATS server beyond this machine without credentials
//! unless told `--insecure`.
//!
//! A credentials file is either an nkey seed (what [`crate::identities`]
//! writes, one line `SU…`) or a NATS `.creds` file (a user JWT and its
//! seed, as `nsc` makes them).

use std::io::Read;
use std::path::{Path, PathBuf};

use async_nats::ServerAddr;

use crate::client::{redact, server_addrs, UrlAuth};
use crate::{Error, Result};

/// Largest credentials file read (a `.creds` file is a few KiB).
pub const MAX_CREDS_BYTES: u64 = 64 * 1024;

/// The secret of one identity, read from its file.
#[derive(Clone)]
pub struct Credentials {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    secret: Secret,
}

#[derive(Clone)]
enum Secret {
    /// An nkey user seed; the public key is what the server knows.
    Seed { seed: String, public: String },
    /// A `.creds` file: user JWT and seed.
    Creds(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("path", &self.path)
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl Credentials {
    /// Read the credentials in `path` (at most [`MAX_CREDS_BYTES`]). The
    /// error ([`Error::Credentials`]) names the file and what is wrong,
    /// never its content.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |detail: String| Error::Credentials {
            path: path.to_owned(),
            detail,
        };
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_CREDS_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| bad(e.to_string()))?;
        if text.len() as u64 > MAX_CREDS_BYTES {
            return Err(bad(format!("larger than {MAX_CREDS_BYTES} bytes")));
        }
        Self::parse(path, &text).map_err(bad)
    }

    fn parse(path: &Path, text: &str) -> std::result::Result<Self, String> {
        let secret = if text.contains("BEGIN NATS USER JWT") {
            // Checked by async-nats when it connects.
            async_nats::ConnectOptions::credentials(async_nats::ConnectOptions::new(), text)
                .map_err(|e| format!("not a NATS credentials file: {e}"))?;
            Secret::Creds(text.to_owned())
        } else {
            let seed = text.trim();
            let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| {
                "neither an nkey seed (a line `SU…`) nor a NATS .creds file".to_owned()
            })?;
            if pair.key_pair_type() != nkeys::KeyPairType::User {
                return Err("the nkey seed is not a user's (it must start with `SU`)".into());
            }
            Secret::Seed {
                seed: seed.to_owned(),
                public: pair.public_key(),
            }
        };
        Ok(Credentials {
            path: path.to_owned(),
            secret,
        })
    }

    /// The public nkey the server knows this identity by (`U…`); `None`
    /// for a `.creds` file, whose JWT names it.
    pub fn public_key(&self) -> Option<&str> {
        match &self.secret {
            Secret::Seed { public, .. } => Some(public),
            Secret::Creds(_) => None,
        }
    }

    pub(crate) fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions> {
        match &self.secret {
            Secret::Seed { seed, public } => Ok(options
                .nkey(seed.clone())
                .custom_inbox_prefix(crate::identities::inbox_prefix(public))),
            Secret::Creds(text) => options.credentials(text).map_err(|e| Error::Credentials {
                path: self.path.clone(),
                detail: e.to_string(),
            }),
        }
    }
}

/// How a component reaches NATS: its URLs, its credentials if any, and
/// whether it was told it may go without them (`--insecure`).
#[derive(Debug, Clone)]
pub struct Access {
    /// The server URLs, comma-separated.
    pub urls: String,
    /// The identity's credentials.
    pub credentials: Option<Credentials>,
    /// The CA the server's certificate must be signed by (`--nats-ca`):
    /// TLS is then required.
    pub ca: Option<PathBuf>,
}

impl Access {
    /// `urls` with no credentials: for tests and a server on this machine.
    pub fn open(urls: &str) -> Self {
        Access {
            urls: urls.to_owned(),
            credentials: None,
            ca: None,
        }
    }

    /// Require TLS, the server's certificate signed by the CA in `ca`.
    pub fn with_ca(self, ca: Option<&Path>) -> Result<Self> {
        if let Some(ca) = ca.filter(|ca| !ca.is_file()) {
            return Err(Error::Credentials {
                path: ca.to_owned(),
                detail: "no CA certificate there".into(),
            });
        }
        Ok(Access {
            ca: ca.map(Path::to_owned),
            ..self
        })
    }

    /// What a component was given: `urls`, a credentials file, and
    /// `--insecure`. Refused ([`Error::Insecure`]) when nothing proves who
    /// it is (no file, no user or token in the URLs) and a server of the
    /// list is not on this machine, unless `insecure`.
    pub fn new(urls: &str, creds: Option<&Path>, insecure: bool) -> Result<Self> {
        let credentials = creds.map(Credentials::read).transpose()?;
        let addrs = server_addrs(urls)?;
        if credentials.is_none()
            && UrlAuth::of(&addrs)? == UrlAuth::None
            && !insecure
            && !addrs.iter().all(is_loopback)
        {
            return Err(Error::Insecure { url: redact(urls) });
        }
        Ok(Access {
            urls: urls.to_owned(),
            credentials,
            ca: None,
        })
    }
}

/// True when `addr` names this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(addr: &ServerAddr) -> bool {
    let host = addr.host().trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_seed_file_is_read_and_anything_else_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = nkeys::KeyPair::new_user();
        let seed = pair.seed().expect("seed");
        let good = write(dir.path(), "op.nk", &format!("{seed}\n"));
        let creds = Credentials::read(&good).expect("a seed file");
        assert_eq!(creds.public_key(), Some(pair.public_key().as_str()));
        assert!(!format!("{creds:?}").contains(&seed), "{creds:?}");

        let account = nkeys::KeyPair::new_account().seed().expect("seed");
        for (name, text) in [
            ("junk", "hello"),
            ("account", account.as_str()),
            ("empty", ""),
        ] {
            let path = write(dir.path(), name, text);
            match Credentials::read(&path) {
                Err(Error::Credentials { path: p, detail }) => {
                    assert_eq!(p, path);
                    assert!(!detail.contains(&account), "{detail}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(
            Credentials::read(&dir.path().join("missing")),
            Err(Error::Credentials { .. })
        ));
        let huge = write(dir.path(), "huge", &"x".repeat(70_000));
        assert!(matches!(
            Credentials::read(&huge),
            Err(Error::Credentials { .. })
        ));
    }

    #[test]
    fn without_credentials_only_this_machine_is_talked_to_unless_insecure() {
        for local in [
            "nats://127.0.0.1:4222",
            "nats://localhost:4222,nats://127.0.0.2:4223",
            "nats://[::1]:4222",
        ] {
            assert!(Access::new(local, None, false).is_ok(), "{local}");
        }
        for remote in [
            "nats://10.0.0.5:4222",
            "nats://127.0.0.1:4222,nats://nats.example:4222",
        ] {
            assert!(
                matches!(
                    Access::new(remote, None, false),
                    Err(Error::Insecure { .. })
                ),
                "{remote}"
            );
            assert!(Access::new(remote, None, true).is_ok(), "{remote}");
        }
        // A user and password in the URL prove who it is.
        assert!(Access::new("nats://u:p@10.0.0.5:4222", None, false).is_ok());
    }
}
