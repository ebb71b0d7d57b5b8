//! The flags every component takes to prove who it is to NATS.

use std::path::PathBuf;

/// `--nats-creds FILE` (`MENTAT_NATS_CREDS`), `--nats-ca FILE`
/// (`MENTAT_NATS_CA`) and `--insecure`, flattened
/// into each binary's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct NatsAccess {
    /// This component's NATS credentials: an nkey seed file (`mt security
    /// init` and `mt up` write one per component) or a NATS `.creds` file.
    #[arg(long = "nats-creds", value_name = "FILE", env = "MENTAT_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// The CA certificate NATS's must be signed by: TLS is then required
    /// (`mt up --tls` writes it to `<data-dir>/tls/ca.pem`).
    #[arg(long = "nats-ca", value_name = "FILE", env = "MENTAT_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Talk to NATS without credentials even when it is beyond this
    /// machine. Anyone who reaches such a server commands the cluster.
    #[arg(long)]
    pub insecure: bool,
}

impl NatsAccess {
    /// How to reach NATS at `urls` with these flags: the credentials read,
    /// the CA required when given; an error naming the file, or the
    /// non-loopback server that would be reached without credentials.
    pub fn access(&self, urls: &str) -> mentat_bus::Result<mentat_bus::access::Access> {
        mentat_bus::access::Access::new(urls, self.nats_creds.as_deref(), self.insecure)?
            .with_ca(self.nats_ca.as_deref())
    }
}
