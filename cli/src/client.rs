//! The CLI's side of the bus: connecting, and sending commands and queries
//! so that "nobody answered" is told apart from every other failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use mentat_bus::access::{Access, Credentials};
use mentat_bus::codec::Encoding;
use mentat_bus::identities::{self, Role};
use mentat_bus::{subject, Bus, Replicas};
use mentat_domain::audit::SigningKey;
use mentat_domain::command::{HistoryQuery, HistoryReply, StatusQuery, StatusReply};
use mentat_domain::security;
use mentat_domain::Reply;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// How long `mt` keeps trying to connect to NATS.
pub const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long `mt` waits for the planner to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `mt` waits for the planner to answer a query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `mt up` keeps the identities, under its data directory.
pub const IDENTITIES_DIR: &str = "identities";
/// The data directory `mt up` uses by default, where `mt` looks for the
/// operator's credentials when none are given.
pub const DEFAULT_DATA_DIR: &str = ".mentat";

/// The credentials and CA every connection of this `mt` uses, chosen once
/// at start from its flags ([`choose_credentials`]).
static IDENTITY: OnceLock<Identity> = OnceLock::new();

/// How `mt` proves who it is and checks whom it talks to.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Its credentials, if any.
    pub credentials: Option<Credentials>,
    /// The CA NATS's certificate must be signed by, if TLS.
    pub ca: Option<PathBuf>,
}

/// Where `mt up --tls` keeps the CA and certificates, under its data directory.
pub const TLS_DIR: &str = "tls";

/// The CA certificate `mt up --tls` made in `data_dir`.
pub fn ca_cert(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR).join(mentat_bus::tls::CA_CERT)
}

/// The operator's credentials file in `data_dir`.
pub fn operator_creds(data_dir: &Path) -> PathBuf {
    identities::seed_path(&data_dir.join(IDENTITIES_DIR), &Role::Operator)
}

/// Decide how this `mt` proves who it is to the NATS at `urls`: the file
/// given (`--nats-creds`, `MENTAT_NATS_CREDS`), else the operator's in
/// `./.mentat` when `mt up` made one there, else none, which is refused
/// for a server beyond this machine unless `insecure`; and the CA given
/// (`--nats-ca`, `MENTAT_NATS_CA`), else `./.mentat/tls/ca.pem` when `mt up
/// --tls` made it.
pub fn choose_credentials(
    urls: &str,
    given: Option<&Path>,
    ca: Option<&Path>,
    insecure: bool,
) -> Result<()> {
    let here = Path::new(DEFAULT_DATA_DIR);
    let found = operator_creds(here);
    let path = given.or_else(|| found.is_file().then_some(found.as_path()));
    let found_ca = ca_cert(here);
    let ca = ca.or_else(|| found_ca.is_file().then_some(found_ca.as_path()));
    let access = Access::new(urls, path, insecure)?.with_ca(ca)?;
    let _ = IDENTITY.set(Identity {
        credentials: access.credentials,
        ca: access.ca,
    });
    Ok(())
}

/// Connect to the bus as `mt`, as [`choose_credentials`] chose.
pub async fn connect(url: &str) -> Result<Bus> {
    connect_as(url, IDENTITY.get().cloned().unwrap_or_default()).await
}

/// Connect to the bus as `mt` with `identity`.
pub async fn connect_as(url: &str, identity: Identity) -> Result<Bus> {
    let access = Access {
        urls: url.to_owned(),
        credentials: identity.credentials,
        ca: identity.ca,
    };
    Bus::connect_with(&access, "mt", CONNECT_WAIT, Replicas::Auto)
        .await
        .map_err(|e| match e {
            mentat_bus::Error::ServerTooOld { .. } => Error::Runtime(format!(
                "{e}\nupgrade it, or have `mt up` start its own on a free port: \
                 `export MENTAT_NATS_URL=nats://127.0.0.1:4322` before `mt up` and every \
                 other command; {}",
                crate::supervisor::NATS_HOW_TO_GET
            )),
            e @ mentat_bus::Error::Refused { .. } => Error::Runtime(e.to_string()),
            e
            @ (mentat_bus::Error::Unauthorised { .. } | mentat_bus::Error::Credentials { .. }) => {
                e.into()
            }
            e => Error::Unreachable {
                url: mentat_bus::client::redact(url),
                detail: e.to_string(),
            },
        })
}

/// The operator's key that signs every command this run of `mt` sends
/// (`--key-file`, or `MENTAT_KEY`), read once at start.
static SIGNER: OnceLock<SigningKey> = OnceLock::new();

/// Sign every command with the secret key in the file at `path`; an
/// unreadable key, or one others may read, is a usage error.
pub fn sign_with(path: &Path) -> Result<()> {
    let key = mentat_runtime::keyfile::read(path).map_err(Error::Usage)?;
    let _ = SIGNER.set(key);
    Ok(())
}

/// Send the command `cmd` on `mentat.cmd.<verb>` and wait for its reply;
/// signed first when `mt` was given a key ([`sign_with`]).
pub async fn command<C: Serialize>(bus: &Bus, verb: &str, cmd: &C) -> Result<Reply> {
    let subject = subject::command(verb);
    match SIGNER.get() {
        Some(key) => {
            let signed = signed(key, verb, cmd, mentat_bus::now_ms())?;
            request(bus, &subject, &signed, COMMAND_TIMEOUT, true).await
        }
        None => request(bus, &subject, cmd, COMMAND_TIMEOUT, true).await,
    }
}

/// `cmd` with a `command_id` (a new one when it has none) and its
/// `signature` made with `key` at `at_ms`, as the value to send.
fn signed<C: Serialize>(
    key: &SigningKey,
    verb: &str,
    cmd: &C,
    at_ms: i64,
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(cmd)
        .map_err(|e| Error::Runtime(format!("encoding the command: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(Error::Runtime("a command is an object".into()));
    };
    fields
        .entry("command_id")
        .or_insert_with(|| mentat_bus::new_id().into());
    let signature = security::sign(key, verb, &value, at_ms)
        .ok_or_else(|| Error::Runtime("a command to sign needs a command id".into()))?;
    let signature = serde_json::to_value(signature)
        .map_err(|e| Error::Runtime(format!("encoding the signature: {e}")))?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("signature".into(), signature);
    }
    Ok(value)
}

/// Ask `mentat.query.status`, page after page, and return every service
/// in one reply.
pub async fn status(bus: &Bus, service: Option<String>) -> Result<StatusReply> {
    let mut query = StatusQuery {
        service,
        after: None,
        limit: None,
    };
    let mut all = Vec::new();
    loop {
        let reply = request(bus, subject::QUERY_STATUS, &query, QUERY_TIMEOUT, false).await?;
        let StatusReply::Ok {
            services,
            hosts,
            log_unavailable_since_ms,
            next,
            planners,
            routers,
            host_states,
            held,
        } = reply
        else {
            return Ok(reply);
        };
        all.extend(services);
        match moved_on(query.after, next)? {
            Some(after) => query.after = Some(after),
            None => {
                return Ok(StatusReply::Ok {
                    services: all,
                    hosts,
                    log_unavailable_since_ms,
                    next: None,
                    planners,
                    routers,
                    host_states,
                    held,
                })
            }
        }
    }
}

/// Ask `mentat.query.history`, page after page (each within `timeout`),
/// and return the whole history in one reply.
pub async fn history(
    bus: &Bus,
    service: &str,
    events: bool,
    timeout: Duration,
) -> Result<HistoryReply> {
    let mut query = HistoryQuery {
        service: service.to_owned(),
        events,
        after: None,
        limit: None,
    };
    let (mut all_deployments, mut all_events) = (Vec::new(), Vec::new());
    loop {
        let reply = request(bus, subject::QUERY_HISTORY, &query, timeout, false).await?;
        let HistoryReply::Ok {
            deployments,
            events,
            next,
        } = reply
        else {
            return Ok(reply);
        };
        all_deployments.extend(deployments);
        all_events.extend(events);
        match moved_on(query.after, next)? {
            Some(after) => query.after = Some(after),
            None => {
                return Ok(HistoryReply::Ok {
                    deployments: all_deployments,
                    events: all_events,
                    next: None,
                })
            }
        }
    }
}

/// The cursor of the next page, or why paging cannot go on (a planner
/// that answered with a cursor that does not move forward).
fn moved_on(after: Option<u64>, next: Option<u64>) -> Result<Option<u64>> {
    match next {
        Some(n) if n <= after.unwrap_or(0) => Err(Error::Runtime(format!(
            "the planner's next page ({n}) does not move past the last one ({})",
            after.unwrap_or(0)
        ))),
        next => Ok(next),
    }
}

/// Ask `subject` (a query, not kept in JetStream) and wait `timeout` for
/// the reply.
pub async fn query<Q: Serialize, R: DeserializeOwned>(
    bus: &Bus,
    subject: &str,
    query: &Q,
    timeout: Duration,
) -> Result<R> {
    request(bus, subject, query, timeout, false).await
}

/// [`Bus::request`] in MessagePack, where a request nobody answers (in
/// time, or at all) becomes [`Error::PlannerSilent`].
async fn request<Q: Serialize, R: DeserializeOwned>(
    bus: &Bus,
    subject: &str,
    query: &Q,
    timeout: Duration,
    queued: bool,
) -> Result<R> {
    let silent = |no_responders| Error::PlannerSilent {
        subject: subject.to_owned(),
        secs: timeout.as_secs(),
        no_responders,
        queued,
    };
    bus.request(subject, query, Encoding::MsgPack, timeout)
        .await
        .map_err(|e| match e {
            mentat_bus::Error::Timeout { .. } => silent(false),
            mentat_bus::Error::NoResponders { .. } => silent(true),
            other => other.into(),
        })
}

/// Who is asking: `$MENTAT_ACTOR`, else `$USER`, else `mt`.
pub fn default_actor() -> String {
    ["MENTAT_ACTOR", "USER"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "mt".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::command::{Command, Stop};
    use mentat_domain::security::{Operator, Role, SecuritySpec};

    #[test]
    fn a_signed_command_gets_an_id_and_a_signature_the_planner_accepts() {
        // Given a key listed as an admin
        let key = SigningKey::from_bytes(&[5; 32]);
        let security = SecuritySpec {
            require_signed_commands: true,
            operators: vec![Operator {
                name: "ana".into(),
                key: mentat_domain::audit::key_hex(&key.verifying_key()),
                role: Role::Admin,
            }],
        };
        let cmd = Stop {
            command_id: None,
            signature: None,
            service: "web".into(),
            instance: "web-1".into(),
            actor: Some("someone".into()),
            reason: None,
        };
        // When mt signs it, and it travels as MessagePack
        let value = signed(&key, "stop", &cmd, 1_000).expect("signed");
        let packed = rmp_serde::to_vec_named(&value).expect("packs");
        let arrived: serde_json::Value = rmp_serde::from_slice(&packed).expect("unpacks");
        let decoded: Stop = rmp_serde::from_slice(&packed).expect("a Stop");
        // Then it has a command id, and the planner's check proves ana
        assert!(decoded.command_id.is_some());
        let digest = security::content_sha256(&arrived);
        let trust = security::Trust {
            current: Some(&security),
            admin_keys: &[],
        };
        let proven = security::authorise(trust, &Command::Stop(decoded), &digest, 2_000)
            .expect("authorised");
        assert_eq!(proven.map(|s| s.operator), Some("ana".to_owned()));
    }
}
