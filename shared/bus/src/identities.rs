//! The identities of a Mentat cluster on NATS, and the least each may do.
//!
//! One nkey user per component: the planner, one executor per host, the
//! router, the health-watcher, the operator (`mt`) and a read-only viewer.
//! [`init`] writes each one's seed to `<dir>/<name>.nk` (mode 0600, kept
//! when it exists) and a nats-server configuration, `<dir>/nats-auth.conf`,
//! whose `authorization` block lists every identity found in `<dir>` with
//! its publish and subscribe allow lists ([`Role::permissions`]). The
//! server denies everything else, so the subject a message arrives on says
//! who may have sent it: only the planner publishes the log's events
//! (`mentat.evt.>`), only the executor of host `h` publishes
//! `mentat.fact.host.h.>` and `mentat.host.heartbeat.h`, only routers
//! publish traffic statistics.
//!
//! To rotate an identity, delete its file and run [`init`] again (`mt
//! security init` or `mt up`), then restart nats-server and that component.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{streams, subject, Error, Result};

/// File name of the nats-server configuration [`init`] writes.
pub const SERVER_CONFIG: &str = "nats-auth.conf";
/// File name suffix of an identity's seed.
pub const SEED_SUFFIX: &str = ".nk";

/// What a component is, which decides what it may do on the bus.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The planner: speaks for the log.
    Planner,
    /// The executor of one host.
    Executor(String),
    /// A router, any router id: what one router on one machine (`mt up`)
    /// or a test harness uses.
    Router,
    /// The router whose id is this (`mt node`'s, the host id): it may
    /// publish statistics, drains and heartbeats under its own id only.
    RouterOf(String),
    /// The health-watcher.
    HealthWatcher,
    /// The notifier: webhooks on the log's events.
    Notifier,
    /// An operator's `mt`: commands and queries.
    Operator,
    /// A viewer's `mt`: queries and events only.
    Viewer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Planner => f.write_str("planner"),
            Role::Executor(host) => write!(f, "executor-{host}"),
            Role::Router => f.write_str("router"),
            Role::RouterOf(id) => write!(f, "router-{id}"),
            Role::HealthWatcher => f.write_str("health-watcher"),
            Role::Notifier => f.write_str("notifier"),
            Role::Operator => f.write_str("operator"),
            Role::Viewer => f.write_str("viewer"),
        }
    }
}

/// What a role may publish and subscribe to; the server refuses the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish on.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// It may answer the requests it receives (once each).
    pub responds: bool,
}

/// JetStream API subjects that look a stream up and create it when it is
/// missing (what every component does at connect, see [`streams::ensure`]);
/// changing or deleting a stream is the planner's alone.
fn ensures(streams: &[&str]) -> Vec<String> {
    streams
        .iter()
        .flat_map(|s| {
            [
                format!("$JS.API.STREAM.INFO.{s}"),
                format!("$JS.API.STREAM.CREATE.{s}"),
            ]
        })
        .collect()
}

/// Reading `stream` through ephemeral (ordered) consumers.
fn replays(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
    ]
}

/// Reading `stream` through the durable consumer `name`, acknowledging
/// what it takes (no other consumer's messages).
fn durable(stream: &str, name: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{name}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{name}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
        format!("$JS.ACK.{stream}.{name}.>"),
    ]
}

/// Where the replies to an identity's requests (and its consumers' pulls)
/// arrive: an inbox of its own, named by its public nkey, so that no
/// identity reads another's replies (a status, a history).
pub fn inbox_prefix(public_key: &str) -> String {
    format!("_INBOX.{public_key}")
}
/// The three streams every component ensures at connect.
const COMMON_STREAMS: [&str; 3] = [streams::COMMANDS, streams::FACTS, streams::EVENTS];

impl Role {
    /// Every component of a cluster whose executors run on `hosts`.
    pub fn all(hosts: &[String]) -> Vec<Role> {
        let mut roles = vec![
            Role::Planner,
            Role::Router,
            Role::HealthWatcher,
            Role::Notifier,
            Role::Operator,
            Role::Viewer,
        ];
        roles.extend(hosts.iter().cloned().map(Role::Executor));
        roles.extend(hosts.iter().cloned().map(Role::RouterOf));
        roles
    }

    /// The name of its file and of its user: `planner`, `executor-<host>`, ….
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The role a file name stands for (`executor-web1.nk` → the executor
    /// of `web1`).
    pub fn of_name(name: &str) -> Option<Role> {
        Some(match name {
            "planner" => Role::Planner,
            "router" => Role::Router,
            "health-watcher" => Role::HealthWatcher,
            "notifier" => Role::Notifier,
            "operator" => Role::Operator,
            "viewer" => Role::Viewer,
            other => {
                let (make, id): (fn(String) -> Role, _) = match (
                    other.strip_prefix("executor-"),
                    other.strip_prefix("router-"),
                ) {
                    (Some(host), _) => (Role::Executor, host),
                    (_, Some(router)) => (Role::RouterOf, router),
                    _ => return None,
                };
                if !mentat_domain::limits::is_valid_host_id(id) {
                    return None;
                }
                make(id.to_owned())
            }
        })
    }

    /// The durable consumers it reads through, as (stream, name): no other
    /// identity may pull from them (see [`server_config_with`]).
    pub fn durables(&self) -> Vec<(&'static str, String)> {
        match self {
            Role::Planner => vec![
                (streams::COMMANDS, "planner-commands".into()),
                (streams::FACTS, "planner-facts".into()),
            ],
            Role::Executor(host) => vec![(streams::EVENTS, format!("executor-{host}"))],
            Role::Notifier => vec![(streams::EVENTS, "notifier".into())],
            _ => Vec::new(),
        }
    }

    /// The least it needs, as the identity whose public nkey is
    /// `public_key`.
    pub fn permissions(&self, public_key: &str) -> Permissions {
        let mut publish: Vec<String> = ensures(&COMMON_STREAMS);
        let mut subscribe = vec![format!("{}.>", inbox_prefix(public_key))];
        let mut responds = false;
        match self {
            Role::Planner => {
                // It owns the streams, its consumers and the log's copy.
                publish = vec![
                    "$JS.API.>".into(),
                    "$JS.ACK.>".into(),
                    subject::EVT_ALL.into(),
                    subject::ANCHORS.into(),
                    subject::PLANNER_HEARTBEAT_ALL.into(),
                ];
                subscribe.extend(
                    [
                        subject::CMD_ALL,
                        "mentat.query.>",
                        subject::AUDIT_ANCHOR,
                        subject::HEARTBEAT_ALL,
                        subject::ROUTER_HEARTBEAT_ALL,
                        subject::PLANNER_HEARTBEAT_ALL,
                    ]
                    .map(String::from),
                );
                responds = true;
            }
            Role::Executor(host) => {
                publish.push(subject::heartbeat(host));
                publish.push(format!("{}.{host}.>", subject::HOST_FACTS_PREFIX));
                for (stream, name) in self.durables() {
                    publish.extend(durable(stream, &name));
                }
                subscribe.push(subject::heartbeat(host));
            }
            Role::Router | Role::RouterOf(_) => {
                let own = match self {
                    Role::RouterOf(id) => [
                        subject::stats(id),
                        format!("{}.{id}.>", subject::ROUTER_FACTS_PREFIX),
                        subject::router_heartbeat(id),
                    ],
                    _ => [
                        subject::STATS_ALL.to_owned(),
                        format!("{}.>", subject::ROUTER_FACTS_PREFIX),
                        subject::ROUTER_HEARTBEAT_ALL.to_owned(),
                    ],
                };
                publish.extend(
                    own.into_iter()
                        .chain(ensures(&[streams::STATS]))
                        .chain(replays(streams::EVENTS)),
                );
                // Every router's heartbeat: one whose id is taken refuses to start.
                subscribe.push(subject::ROUTER_HEARTBEAT_ALL.into());
            }
            Role::HealthWatcher => {
                publish.push(format!("{}.>", subject::HEALTH_FACTS_PREFIX));
                publish.extend(ensures(&[streams::STATS]));
                for stream in [streams::FACTS, streams::EVENTS, streams::STATS] {
                    publish.extend(replays(stream));
                }
            }
            Role::Notifier => {
                // Its outcomes; the events through its durable consumer;
                // the notify blocks and its past outcomes, replayed at start.
                publish.push(format!("{}.>", subject::NOTIFIER_FACTS_PREFIX));
                for (stream, name) in self.durables() {
                    publish.extend(durable(stream, &name));
                }
                publish.extend(replays(streams::EVENTS));
                publish.extend(replays(streams::FACTS));
            }
            Role::Operator | Role::Viewer => {
                publish.push(format!("{}.>", subject::QUERY_PREFIX));
                if *self == Role::Operator {
                    publish.push(subject::CMD_ALL.into());
                    publish.push(subject::AUDIT_ANCHOR.into());
                }
                for stream in [streams::EVENTS, streams::ANCHORS] {
                    publish.extend(replays(stream));
                }
                subscribe.push(subject::EVT_ALL.into());
            }
        }
        publish.sort();
        publish.dedup();
        Permissions {
            publish,
            subscribe,
            responds,
        }
    }
}

/// One identity: its role and its nkey pair.
#[derive(Clone)]
pub struct Identity {
    /// What it is.
    pub role: Role,
    /// Its public nkey (`U…`), what the server knows it by.
    pub public_key: String,
    /// Where its seed is kept.
    pub path: PathBuf,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("role", &self.role)
            .field("public_key", &self.public_key)
            .field("path", &self.path)
            .finish()
    }
}

/// The file of `role`'s seed in `dir`.
pub fn seed_path(dir: &Path, role: &Role) -> PathBuf {
    dir.join(format!("{role}{SEED_SUFFIX}"))
}

/// Make sure `dir` holds an identity for each of `roles` (a new seed for
/// those missing, written 0600; `dir` is created 0700), then write the
/// nats-server configuration for every identity in `dir`. Returns every
/// identity in `dir`, by role.
pub fn init(dir: &Path, roles: &[Role]) -> Result<Vec<Identity>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |path: &Path, e: std::io::Error| Error::Credentials {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))?;
    for role in roles {
        let path = seed_path(dir, role);
        if path.exists() {
            continue;
        }
        let seed = nkeys::KeyPair::new_user()
            .seed()
            .map_err(|e| Error::Encode(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        file.write_all(seed.as_bytes()).map_err(|e| io(&path, e))?;
    }
    let identities = read_dir(dir)?;
    crate::write_private(&dir.join(SERVER_CONFIG), &server_config(&identities))?;
    Ok(identities)
}

/// Every identity whose seed is in `dir` (files `<role>.nk`), by role.
pub fn read_dir(dir: &Path) -> Result<Vec<Identity>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Credentials {
        path: dir.to_owned(),
        detail: e.to_string(),
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(role) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SEED_SUFFIX))
            .and_then(Role::of_name)
        else {
            continue;
        };
        let creds = crate::access::Credentials::read(&path)?;
        let public_key =
            creds
                .public_key()
                .map(str::to_owned)
                .ok_or_else(|| Error::Credentials {
                    path: path.clone(),
                    detail: "not an nkey seed".into(),
                })?;
        found.push(Identity {
            role,
            public_key,
            path,
        });
    }
    found.sort_by(|a, b| a.role.cmp(&b.role));
    Ok(found)
}

/// The `authorization` block for `identities`, for nats-server's `-c`.
pub fn server_config(identities: &[Identity]) -> String {
    server_config_with(identities, &[])
}

/// [`server_config`] with users held to nothing (public nkeys in
/// `unrestricted`): an administrator's tool, a test harness that plays
/// every part.
pub fn server_config_with(identities: &[Identity], unrestricted: &[&str]) -> String {
    let list = |subjects: &[String]| {
        let quoted: Vec<String> = subjects.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    // Pulling from a consumer is publishing on its MSG.NEXT subject; the
    // replays a component may make need `MSG.NEXT.<stream>.*` (their
    // names are the server's), so the durables of the others are denied
    // by name.
    let mut durables: Vec<(&str, String)> = Role::Planner.durables();
    durables.extend(identities.iter().flat_map(|i| i.role.durables()));
    durables.sort();
    durables.dedup();
    let mut out = String::from(
        "# Written by Mentat (mt security init): one nkey user per component,\n\
         # each allowed the least it needs. Anything else is refused.\n\
         authorization {\n  users = [\n",
    );
    for identity in identities {
        let p = identity.role.permissions(&identity.public_key);
        let own = identity.role.durables();
        let deny: Vec<String> = match identity.role {
            // It owns the streams and every consumer on them.
            Role::Planner => Vec::new(),
            _ => durables
                .iter()
                .filter(|d| !own.contains(d))
                .map(|(stream, name)| format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"))
                .collect(),
        };
        let deny = if deny.is_empty() {
            String::new()
        } else {
            format!(", deny: {}", list(&deny))
        };
        out.push_str(&format!(
            "    # {}\n    {{ nkey: {}, permissions: {{\n      publish: {{ allow: {}{deny} }}\n      subscribe: {{ allow: {} }}\n",
            identity.role,
            identity.public_key,
            list(&p.publish),
            list(&p.subscribe)
        ));
        if p.responds {
            out.push_str("      allow_responses: true\n");
        }
        out.push_str("    } }\n");
    }
    for key in unrestricted {
        out.push_str(&format!("    # unrestricted\n    {{ nkey: {key} }}\n"));
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_bad_hosts_are_not_identities() {
        for role in [
            Role::Planner,
            Role::Executor("web-1".into()),
            Role::Router,
            Role::HealthWatcher,
            Role::Notifier,
            Role::Operator,
            Role::Viewer,
        ] {
            assert_eq!(Role::of_name(&role.name()), Some(role.clone()), "{role}");
        }
        for bad in [
            "executor-",
            "executor-Web",
            "executor-a.b",
            "executor-*",
            "admin",
        ] {
            assert_eq!(Role::of_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_planner_publishes_events_and_an_executor_only_its_own_facts() {
        let may_publish = |role: &Role, subject: &str| {
            role.permissions("UKEY")
                .publish
                .iter()
                .any(|allowed| matches(allowed, subject))
        };
        let evt = "mentat.evt.web.ReplicaStartRequested";
        assert!(may_publish(&Role::Planner, evt));
        let h1 = Role::Executor("h1".into());
        for role in [
            h1.clone(),
            Role::Router,
            Role::HealthWatcher,
            Role::Notifier,
            Role::Operator,
            Role::Viewer,
        ] {
            assert!(!may_publish(&role, evt), "{role}");
        }
        assert!(may_publish(
            &Role::Notifier,
            "mentat.fact.notifier.web.WebhookDelivered"
        ));
        assert!(!may_publish(
            &Role::Notifier,
            "mentat.fact.health.web.ThresholdBreached"
        ));
        assert!(may_publish(&h1, "mentat.fact.host.h1.web.ReplicaStarted"));
        assert!(!may_publish(&h1, "mentat.fact.host.h2.web.ReplicaStarted"));
        assert!(!may_publish(&h1, "mentat.stats.r1"));
        assert!(may_publish(&Role::Router, "mentat.stats.r1"));
        assert!(!may_publish(&Role::Router, "mentat.cmd.deploy"));
        assert!(may_publish(&Role::Operator, "mentat.cmd.deploy"));
        assert!(!may_publish(&Role::Viewer, "mentat.cmd.deploy"));
        assert!(may_publish(&Role::Viewer, "mentat.query.status"));
    }

    /// NATS subject matching: `*` one token, `>` the rest.
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut p = pattern.split('.');
        let mut s = subject.split('.');
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn init_writes_private_seeds_keeps_them_and_lists_every_identity() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let sec = dir.path().join("nats-identities");
        let first = init(&sec, &[Role::Planner, Role::Operator]).expect("init");
        assert_eq!(first.len(), 2);
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&sec), 0o700);
        assert_eq!(mode(&seed_path(&sec, &Role::Planner)), 0o600);
        assert_eq!(mode(&sec.join(SERVER_CONFIG)), 0o600);
        // Again with one more: the first two are kept, the config lists three.
        let again = init(&sec, &[Role::Planner, Role::Executor("h1".into())]).expect("init");
        assert_eq!(again.len(), 3);
        let planner = |ids: &[Identity]| {
            ids.iter()
                .find(|i| i.role == Role::Planner)
                .map(|i| i.public_key.clone())
        };
        assert_eq!(planner(&first), planner(&again));
        let config = std::fs::read_to_string(sec.join(SERVER_CONFIG)).expect("config");
        for identity in &again {
            assert!(config.contains(&identity.public_key), "{config}");
        }
        for identity in &again {
            let seed = std::fs::read_to_string(&identity.path).expect("seed");
            assert!(
                !config.contains(seed.trim()),
                "no seed in the server's configuration"
            );
        }
    }
}
