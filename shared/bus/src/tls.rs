//! TLS to NATS with a CA of Mentat's own (`mt up --tls`): [`init`] makes
//! the CA and a certificate for the NATS servers signed by it, and the
//! nats-server configuration that serves clients, and the routes between
//! the nodes of a cluster, over TLS. Every component verifies the server
//! against the CA (`--nats-ca FILE`, see [`crate::access::Access`]).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The CA's certificate: what every component is given (`--nats-ca`).
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The NATS servers' certificate.
pub const SERVER_CERT: &str = "server.pem";
/// The NATS servers' private key.
pub const SERVER_KEY: &str = "server-key.pem";
/// The nats-server configuration for clients over TLS.
pub const SERVER_CONFIG: &str = "nats-tls.conf";
/// The same, with the routes of a cluster over TLS too.
pub const CLUSTER_CONFIG: &str = "nats-tls-cluster.conf";

/// Make sure `dir` holds a CA and a server certificate for `names` (host
/// names and addresses the servers are reached at; `localhost`,
/// `127.0.0.1` and `::1` always), kept when they are there already, and
/// write the nats-server configurations. Returns the CA's certificate.
pub fn init(dir: &Path, names: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed(dir, e))?;
    let ca = dir.join(CA_CERT);
    if !(ca.is_file() && dir.join(SERVER_CERT).is_file() && dir.join(SERVER_KEY).is_file()) {
        generate(dir, names)?;
    }
    let tls = |verify_peers: bool| {
        format!(
            "{{\n    cert_file: {:?}\n    key_file: {:?}\n    ca_file: {:?}\n    timeout: 2{}\n  }}",
            dir.join(SERVER_CERT).display().to_string(),
            dir.join(SERVER_KEY).display().to_string(),
            ca.display().to_string(),
            if verify_peers { "\n    verify: true" } else { "" }
        )
    };
    let clients = format!(
        "# Written by Mentat (mt up --tls): clients reach NATS over TLS only.\ntls {}\n",
        tls(false)
    );
    crate::write_private(&dir.join(SERVER_CONFIG), &clients)?;
    // Routes: each node proves itself to the others with the same certificate.
    let cluster = format!("{clients}cluster {{\n  tls {}\n}}\n", tls(true));
    crate::write_private(&dir.join(CLUSTER_CONFIG), &cluster)?;
    Ok(ca)
}

fn generate(dir: &Path, names: &[String]) -> Result<()> {
    let bad = |e: rcgen::Error| Error::Credentials {
        path: dir.to_owned(),
        detail: format!("cannot make the TLS certificates: {e}"),
    };
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Mentat NATS CA");
    let ca_key = rcgen::KeyPair::generate().map_err(bad)?;
    let ca = ca_params.self_signed(&ca_key).map_err(bad)?;
    let mut sans: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    sans.extend(
        names
            .iter()
            .filter(|n| !sans.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut params = rcgen::CertificateParams::new(sans).map_err(bad)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Mentat NATS server");
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(bad)?;
    crate::write_private(&dir.join(CA_KEY), &ca_key.serialize_pem())?;
    crate::write_private(&dir.join(SERVER_KEY), &key.serialize_pem())?;
    crate::write_private(&dir.join(SERVER_CERT), &cert.pem())?;
    crate::write_private(&dir.join(CA_CERT), &ca.pem())
}

fn failed(path: &Path, e: std::io::Error) -> Error {
    Error::Credentials {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_ca_and_a_server_certificate_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = dir.path().join("tls");
        let ca = init(&tls, &["nats.example".into()]).expect("init");
        let first = std::fs::read_to_string(&ca).expect("ca");
        assert!(first.starts_with("-----BEGIN CERTIFICATE-----"), "{first}");
        for file in [
            CA_KEY,
            SERVER_KEY,
            SERVER_CERT,
            SERVER_CONFIG,
            CLUSTER_CONFIG,
        ] {
            assert!(tls.join(file).is_file(), "{file}");
        }
        init(&tls, &[]).expect("again");
        assert_eq!(std::fs::read_to_string(&ca).expect("ca"), first, "kept");
        let config = std::fs::read_to_string(tls.join(CLUSTER_CONFIG)).expect("config");
        assert!(
            config.contains("cluster {") && config.contains("verify: true"),
            "{config}"
        );
    }
}
