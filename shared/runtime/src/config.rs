//! The service file (`mentat.yaml`): a top-level `services:` map whose keys
//! are service names and whose values are [`ServiceSpec`]s without their
//! `name` (the key is the name).
//!
//! ```yaml
//! services:
//!   web:
//!     replicas: 3
//!     run:
//!       command: ["mentat-demo-app"]   # {image} and {port} are substituted
//!       env: { APP_VERSION: "{image}" }
//!     health: { path: /health, interval_ms: 500, healthy_after: 2, unhealthy_after: 3 }
//!     deploy:
//!       strategy: rolling              # rolling | blue-green | canary
//!       max_unavailable: 1
//!       health_timeout_secs: 10
//!       auto_revert: true
//!       canary_percent: 10
//!       standby_secs: 600
//! ```
//!
//! A top-level `cluster:` block is optional (see [`mentat_domain::cluster`]):
//!
//! ```yaml
//! cluster:
//!   suspect_after_secs: 3
//!   lost_after_secs: 30
//! ```
//!
//! A top-level `security:` block is optional too (see
//! [`mentat_domain::security`]): the operators whose Ed25519 keys sign
//! commands, their roles, and whether every command must be signed.
//!
//! ```yaml
//! security:
//!   require_signed_commands: true
//!   operators:
//!     - { name: ana, key: 3f0c…, role: admin }
//! ```
//!
//! `health` and `deploy` and every field in them are optional, with the
//! defaults of [`mentat_domain::spec`]. Every problem is reported, not just
//! the first, each with the file, the line and the dotted path of the field:
//! `mentat.yaml:12: services.web.deploy.max_unavailable: 4 is larger than replicas (3)`.
//! A file with any problem yields no service at all.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use mentat_domain::cluster::ClusterSpec;
use mentat_domain::environment::EnvironmentOverride;
use mentat_domain::notify::Webhook;
use mentat_domain::security::SecuritySpec;
use mentat_domain::spec::{
    AuditSpec, DeploySpec, FieldError, HealthSpec, RouteSpec, RunSpec, ServiceSpec,
};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

/// Fields of one service entry, in the order they are documented.
const SERVICE_FIELDS: [&str; 8] = [
    "replicas",
    "run",
    "health",
    "deploy",
    "route",
    "audit",
    "labels",
    "environments",
];

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the field (or of its nearest parent), when known.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `services.web.deploy.max_unavailable`;
    /// empty for a syntax error.
    pub path: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// Why a config file was not accepted.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file, as named by the caller.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid service file.
    Invalid {
        /// The file, as named by the caller.
        file: String,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found (empty when the file could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

impl fmt::Display for ConfigError {
    /// One problem per line: `file:line: path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => write!(f, "{file}: cannot read: {source}"),
            ConfigError::Invalid { file, problems } => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    f.write_str(file)?;
                    if let Some(line) = p.line {
                        write!(f, ":{line}")?;
                    }
                    if !p.path.is_empty() {
                        write!(f, ": {}", p.path)?;
                    }
                    write!(f, ": {}", p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}

/// Everything a service file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFile {
    /// The services, in the order of the file.
    pub services: Vec<ServiceSpec>,
    /// The `cluster:` block, when the file has one (defaults filled in).
    pub cluster: Option<ClusterSpec>,
    /// The `security:` block, when the file has one.
    pub security: Option<SecuritySpec>,
    /// The `notify:` block (webhooks), when the file has one.
    pub notify: Option<Vec<Webhook>>,
    /// The `environments:` block, when the file has one (see
    /// [`mentat_domain::environment`]).
    pub environments: Option<mentat_domain::environment::Environments>,
}

/// Read and validate a service file's services. Errors name the file as
/// `path` shows it.
pub fn load(path: &Path) -> Result<Vec<ServiceSpec>, ConfigError> {
    load_file(path).map(|f| f.services)
}

/// Read and validate a whole service file, its cluster block included.
pub fn load_file(path: &Path) -> Result<ServiceFile, ConfigError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_file(&text, &file),
        Err(source) => Err(ConfigError::Read { file, source }),
    }
}

/// Parse and validate the text of a service file; `file` names it in errors.
/// Services come back in the order of the file.
pub fn parse(text: &str, file: &str) -> Result<Vec<ServiceSpec>, ConfigError> {
    parse_file(text, file).map(|f| f.services)
}

/// Parse and validate the text of a whole service file.
pub fn parse_file(text: &str, file: &str) -> Result<ServiceFile, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let root: Value = match serde_yaml::from_str(text) {
        Ok(root) => root,
        Err(e) => return Err(invalid(vec![syntax_problem(&e)])),
    };
    let mut checker = Checker {
        text,
        problems: Vec::new(),
    };
    let services = checker.root(&root);
    let cluster = checker.block(&root, "cluster", ClusterSpec::validate);
    let security = checker.block(&root, "security", SecuritySpec::validate);
    let notify = checker.notify(&root);
    let environments = checker.block(&root, "environments", |envs| {
        field_errors(mentat_domain::environment::validate(envs))
    });
    if checker.problems.is_empty() {
        // Each environment's definition of each service is checked too.
        let expanded = mentat_domain::environment::expand(&services, environments.as_ref());
        // The first problem of each, under the environment's overrides
        // (`services.web.environments.staging.replicas`): the others follow
        // from it (a `max_unavailable` over the replicas).
        let problems = match expanded {
            Ok(all) => all
                .iter()
                .filter_map(|s| s.validate().into_iter().next())
                .collect(),
            Err(problems) => field_errors(problems),
        };
        for e in problems {
            let path = match e.path.split_once('@') {
                Some((service, rest)) => match rest.split_once('.') {
                    Some((env, field)) => format!("{service}.environments.{env}.{field}"),
                    None => e.path.clone(),
                },
                None => e.path.clone(),
            };
            let path: Vec<&str> = path.split('.').collect();
            checker.report(&path, e.message);
        }
    }
    if checker.problems.is_empty() {
        Ok(ServiceFile {
            services,
            cluster,
            security,
            notify,
            environments,
        })
    } else {
        let mut problems = checker.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        Err(invalid(problems))
    }
}

/// `path: message` lines as field errors.
fn field_errors(lines: Vec<String>) -> Vec<FieldError> {
    lines
        .into_iter()
        .map(|line| match line.split_once(": ") {
            Some((path, message)) => FieldError {
                path: path.to_owned(),
                message: message.to_owned(),
            },
            None => FieldError {
                path: String::new(),
                message: line,
            },
        })
        .collect()
}

fn syntax_problem(e: &serde_yaml::Error) -> Problem {
    let text = e.to_string();
    // serde_yaml appends " at line L column C"; the line goes in front instead.
    let message = match text.rfind(" at line ") {
        Some(i) if e.location().is_some() => text[..i].to_owned(),
        _ => text,
    };
    Problem {
        line: e.location().map(|l| l.line()),
        path: String::new(),
        message: format!("invalid YAML: {message}"),
    }
}

/// Walks the parsed document, collecting every problem with its line.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, path: &[&str], message: impl Into<String>) {
        self.problems.push(Problem {
            line: locate(self.text, path),
            path: path.join("."),
            message: message.into(),
        });
    }

    fn root(&mut self, root: &Value) -> Vec<ServiceSpec> {
        let empty = Mapping::new();
        let map = match root {
            Value::Mapping(map) => map,
            Value::Null => &empty,
            other => {
                self.report(
                    &[],
                    format!("expected a map with `services:`, found {}", kind(other)),
                );
                return Vec::new();
            }
        };
        for key in map.keys() {
            if !matches!(
                key.as_str(),
                Some("services" | "cluster" | "security" | "notify" | "environments")
            ) {
                let key = key_text(key);
                self.report(
                    &[&key],
                    format!("unknown field `{key}`, expected `services`, `cluster`, `security`, `notify` or `environments`"),
                );
            }
        }
        let services = match map.get("services") {
            Some(Value::Mapping(services)) if !services.is_empty() => services,
            None => {
                self.report(&[], "no `services:` map: declare at least one service");
                return Vec::new();
            }
            Some(Value::Mapping(_) | Value::Null) => {
                self.report(&["services"], "is empty: declare at least one service");
                return Vec::new();
            }
            Some(other) => {
                let found = kind(other);
                self.report(
                    &["services"],
                    format!("expected a map of service name to definition, found {found}"),
                );
                return Vec::new();
            }
        };
        services
            .iter()
            .filter_map(|(name, body)| self.service(name, body))
            .collect()
    }

    /// A top-level block (`cluster:`, `security:`), checked field by field
    /// and then by `validate`; `None` when the file has none (or it is
    /// invalid: the problems say why).
    fn block<T: DeserializeOwned>(
        &mut self,
        root: &Value,
        name: &str,
        validate: impl Fn(&T) -> Vec<FieldError>,
    ) -> Option<T> {
        let Value::Mapping(map) = root else {
            return None;
        };
        map.get(name)?;
        let before = self.problems.len();
        let block = self.section::<T>(map, &[], name, None)?;
        if self.problems.len() > before {
            return None;
        }
        for e in validate(&block) {
            let path: Vec<&str> = e.path.split('.').collect();
            self.report(&path, e.message);
        }
        (self.problems.len() == before).then_some(block)
    }

    /// The `notify:` block (a list of webhooks), checked webhook by
    /// webhook; `None` when the file has none (or it is invalid).
    fn notify(&mut self, root: &Value) -> Option<Vec<Webhook>> {
        let Value::Mapping(map) = root else {
            return None;
        };
        let value = map.get("notify")?;
        let Value::Sequence(items) = value else {
            self.report(
                &["notify"],
                format!("expected a list of webhooks, found {}", kind(value)),
            );
            return None;
        };
        let before = self.problems.len();
        let mut webhooks = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match serde_yaml::from_value::<Webhook>(item.clone()) {
                Ok(w) => webhooks.push(w),
                Err(e) => self.report(&["notify", &format!("[{i}]")], e.to_string()),
            }
        }
        for e in mentat_domain::notify::validate(&webhooks) {
            self.report(&["notify"], e.to_string());
        }
        (self.problems.len() == before).then_some(webhooks)
    }

    fn service(&mut self, key: &Value, body: &Value) -> Option<ServiceSpec> {
        let Some(name) = key.as_str() else {
            let found = key_text(key);
            self.report(
                &["services"],
                format!("service name `{found}` must be a string"),
            );
            return None;
        };
        let base = ["services", name];
        let Value::Mapping(map) = body else {
            let found = kind(body);
            self.report(
                &base,
                format!("expected a map with replicas and run, found {found}"),
            );
            return None;
        };
        let before = self.problems.len();
        for key in map.keys() {
            let key = key_text(key);
            if !SERVICE_FIELDS.contains(&key.as_str()) {
                let message = if key == "name" {
                    "the service name is the key of its entry; remove `name`".to_owned()
                } else {
                    format!("unknown field `{key}`, expected one of replicas, run, health, deploy, route, audit, labels, environments")
                };
                self.report(&["services", name, &key], message);
            }
        }
        let replicas = self.replicas(map, &base);
        let mut filler = Mapping::new();
        filler.insert("command".into(), Value::Sequence(vec!["x".into()]));
        let run = self.section::<RunSpec>(map, &base, "run", Some(&filler));
        let health = self.section::<HealthSpec>(map, &base, "health", None);
        let deploy = self.section::<DeploySpec>(map, &base, "deploy", None);
        let route = self.section::<RouteSpec>(map, &base, "route", None);
        let audit = self.section::<AuditSpec>(map, &base, "audit", None);
        let labels = self.section::<BTreeMap<String, String>>(map, &base, "labels", None);
        let environments =
            self.section::<BTreeMap<String, EnvironmentOverride>>(map, &base, "environments", None);
        let spec = ServiceSpec {
            name: name.to_owned(),
            replicas: replicas?,
            run: run?,
            health: health?,
            deploy: deploy?,
            route: route?,
            audit: audit?,
            labels: labels?,
            environments: environments?,
        };
        self.validate(&spec, map, before);
        (self.problems.len() == before).then_some(spec)
    }

    /// Report the impossible values of `spec`, whose entry is `map`. A
    /// value the file does not write (a default) is reported only when it
    /// is the service's only kind of problem: `replicas: 0` makes the
    /// default `max_unavailable` too large, but the fix is to `replicas`.
    fn validate(&mut self, spec: &ServiceSpec, map: &Mapping, before: usize) {
        let prefix = format!("services.{}", spec.name);
        let errors: Vec<(Vec<String>, bool, String)> = spec
            .validate()
            .into_iter()
            .map(|e| {
                let rest: Vec<String> = e
                    .path
                    .strip_prefix(&prefix)
                    .unwrap_or_default()
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let is_written = written(map, &rest);
                (rest, is_written, e.message)
            })
            .collect();
        let others = self.problems.len() > before || errors.iter().any(|(_, w, _)| *w);
        for (rest, is_written, message) in errors {
            let mut path = vec!["services", spec.name.as_str()];
            path.extend(rest.iter().map(String::as_str));
            let joined = path.join(".");
            let repeated = self.problems[before..].iter().any(|p| p.path == joined);
            if !repeated && (is_written || !others) {
                self.report(&path, message);
            }
        }
    }

    fn replicas(&mut self, map: &Mapping, base: &[&str]) -> Option<u32> {
        let Some(value) = map.get("replicas") else {
            self.report(base, "missing field `replicas`");
            return None;
        };
        match serde_yaml::from_value::<u32>(value.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                self.report(&[base, &["replicas"]].concat(), e.to_string());
                None
            }
        }
    }

    /// Deserialize the `field` map of `parent`, checking each of its keys on
    /// its own so that every bad key is reported. `required` holds values for
    /// the required fields of `T`, used while checking the other keys; a
    /// section without required fields may be left out.
    fn section<T: DeserializeOwned>(
        &mut self,
        parent: &Mapping,
        base: &[&str],
        field: &str,
        required: Option<&Mapping>,
    ) -> Option<T> {
        let path = [base, &[field]].concat();
        let map = match (parent.get(field), required) {
            (Some(Value::Mapping(map)), _) => map.clone(),
            (None | Some(Value::Null), None) => Mapping::new(),
            (None, Some(_)) => {
                self.report(base, format!("missing field `{field}`"));
                return None;
            }
            (Some(other), _) => {
                self.report(&path, format!("expected a map, found {}", kind(other)));
                return None;
            }
        };
        // Each key alone, so that every bad one is reported; the good ones
        // are kept so that the values they hold are still validated.
        let mut good = Mapping::new();
        let mut bad_required = false;
        for (key, value) in &map {
            let mut single = required.cloned().unwrap_or_default();
            single.insert(key.clone(), value.clone());
            match serde_yaml::from_value::<T>(Value::Mapping(single)) {
                Ok(_) => {
                    good.insert(key.clone(), value.clone());
                }
                Err(e) => {
                    bad_required |= required.is_some_and(|r| r.contains_key(key));
                    let key = key_text(key);
                    self.report(&[path.as_slice(), &[key.as_str()]].concat(), e.to_string());
                }
            }
        }
        if bad_required {
            return None;
        }
        match serde_yaml::from_value::<T>(Value::Mapping(good)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.report(&path, e.to_string());
                None
            }
        }
    }
}

/// True when the file writes the field at `path` inside `map`.
fn written(map: &Mapping, path: &[String]) -> bool {
    let mut current = map;
    for (i, segment) in path.iter().enumerate() {
        match current.get(segment.as_str()) {
            None => return false,
            Some(Value::Mapping(inner)) => current = inner,
            Some(_) => return i + 1 == path.len(),
        }
    }
    true
}

/// A key as text, for messages and paths.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| kind(other).to_owned()),
    }
}

/// What kind of YAML value this is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The 1-based line of the key at `path` in block-style YAML, or of the
/// nearest parent found when the key itself is not on a line of its own (a
/// flow map such as `health: { path: /x }`, or a missing field). `None`
/// when not even the first key is found.
pub fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut start, mut end) = (0, lines.len());
    let mut found = None;
    for segment in path {
        let Some(indent) = (start..end).find_map(|i| key_of(lines[i]).map(|(n, _)| n)) else {
            break;
        };
        let hit = (start..end).find(|&i| key_of(lines[i]) == Some((indent, segment)));
        let Some(i) = hit else { break };
        found = Some(i + 1);
        start = i + 1;
        end = (start..end)
            .find(|&j| dedented(lines[j], indent))
            .unwrap_or(end);
    }
    found
}

/// True for a content line (not blank, not a comment) indented no deeper
/// than `indent`: it ends the block of a key at `indent`.
fn dedented(line: &str, indent: usize) -> bool {
    let content = line.trim_start_matches(' ');
    !content.is_empty() && !content.starts_with('#') && line.len() - content.len() <= indent
}

/// The indentation and key of a `key: value` or `key:` line.
fn key_of(line: &str) -> Option<(usize, &str)> {
    let content = line.trim_start_matches(' ');
    let indent = line.len() - content.len();
    let key = match content.chars().next()? {
        q @ ('"' | '\'') => {
            let close = content[1..].find(q)? + 1;
            content[close + 1..]
                .trim_start()
                .starts_with(':')
                .then(|| &content[1..close])?
        }
        '#' | '-' | '{' | '[' => return None,
        _ => {
            let colon = content
                .match_indices(':')
                .find(|(i, _)| matches!(content.as_bytes().get(i + 1), None | Some(b' ' | b'\t')))?
                .0;
            content[..colon].trim_end()
        }
    };
    Some((indent, key))
}

#[cfg(test)]
mod tests;
