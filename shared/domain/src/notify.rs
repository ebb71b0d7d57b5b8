//! The notify block of the service file: webhooks the notifier POSTs the
//! transitions of rollouts and deployments to.
//!
//! ```yaml
//! notify:
//!   - name: ops                      # 1-63 of a-z, 0-9 and -, unique
//!     url: http://hooks.internal:8080/mentat
//!     format: slack                  # slack (text + blocks) | envelope (the event envelope)
//!     secret_file: /etc/mentat/hook.secret   # optional: X-Mentat-Signature: sha256=<HMAC>
//!     events: [RolloutPaused, DeploymentReverted]   # optional: every notifiable event when empty
//! ```
//!
//! Applied with `mt apply` and recorded as `NotifyDefined`; the notifier
//! reads it from the events it consumes, so a webhook applies to the
//! events recorded after it. The secret stays in its file, on the
//! notifier's machine: the log holds only the path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{shown, too_long, MAX_SOURCE_BYTES};
use crate::spec::{is_valid_name, FieldError};

/// Most webhooks of one notify block.
pub const MAX_WEBHOOKS: usize = 16;
/// Longest webhook URL.
pub const MAX_URL_BYTES: usize = 2048;

/// The events a webhook can be told about, in the order of their life.
pub const NOTIFIABLE: [&str; 14] = [
    "RolloutStarted",
    "RolloutWaveStarted",
    "RolloutWaveCompleted",
    "RolloutPaused",
    "RolloutResumed",
    "RolloutCancelled",
    "RolloutRollbackStarted",
    "RolloutRollbackCompleted",
    "RolloutCompleted",
    "DeploymentStarted",
    "DeploymentCompleted",
    "DeploymentReverted",
    "DeploymentFailed",
    "ThresholdBreached",
];

/// How a webhook's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Slack-compatible JSON: `text` and `blocks`.
    Slack,
    /// The event envelope as JSON (`schemas/event-envelope.json`).
    Envelope,
}

/// One webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Its name, in outcomes and `mt` output.
    pub name: String,
    /// `http://host[:port]/path`.
    pub url: String,
    /// Body format.
    pub format: WebhookFormat,
    /// A file holding the HMAC secret, read by the notifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// The event types it gets (from [`NOTIFIABLE`]); all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

impl Webhook {
    /// True when this webhook is told about events of type `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        NOTIFIABLE.contains(&event_type)
            && (self.events.is_empty() || self.events.iter().any(|e| e == event_type))
    }
}

/// Every impossible value of a notify block, each with its field's path.
pub fn validate(webhooks: &[Webhook]) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut err = |path: String, message: String| out.push(FieldError { path, message });
    if webhooks.len() > MAX_WEBHOOKS {
        err(
            "notify".into(),
            format!("{} webhooks, at most {MAX_WEBHOOKS}", webhooks.len()),
        );
        return out;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in webhooks.iter().enumerate() {
        let at = |field: &str| format!("notify[{i}].{field}");
        if !is_valid_name(&w.name) {
            err(
                at("name"),
                format!(
                    "`{}` must be 1-63 characters of a-z, 0-9 and -, starting with a letter",
                    shown(&w.name)
                ),
            );
        } else if !seen.insert(w.name.as_str()) {
            err(at("name"), format!("`{}` is used twice", w.name));
        }
        if let Some(problem) = too_long(&w.url, MAX_URL_BYTES) {
            err(at("url"), problem);
        } else if let Err(problem) = parse_url(&w.url) {
            err(at("url"), problem);
        }
        if let Some(problem) = w.secret_file.as_deref().and_then(|f| {
            too_long(f, MAX_SOURCE_BYTES)
                .or_else(|| f.is_empty().then(|| "must not be empty".into()))
        }) {
            err(at("secret_file"), problem);
        }
        if w.events.len() > NOTIFIABLE.len() {
            err(
                at("events"),
                format!("{} entries, at most {}", w.events.len(), NOTIFIABLE.len()),
            );
            continue;
        }
        for (j, e) in w.events.iter().enumerate() {
            if !NOTIFIABLE.contains(&e.as_str()) {
                err(
                    format!("notify[{i}].events[{j}]"),
                    format!(
                        "`{}` is not notifiable; one of {}",
                        shown(e),
                        NOTIFIABLE.join(", ")
                    ),
                );
            }
        }
    }
    out
}

/// A webhook URL in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// Port (80 when not given).
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

/// `http://host[:port][/path]`, or why not. Only plain HTTP: a receiver
/// behind TLS is reached through a local proxy.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("must start with http:// (https: through a local TLS proxy)".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("must not carry credentials (use secret_file)".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("port `{p}` is not a port"))?,
        ),
        None => (authority, 80),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if !host_ok || port == 0 {
        return Err(format!("`{}` names no host", shown(authority)));
    }
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the path must not hold spaces or control characters".into());
    }
    Ok(Url {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, url: &str, events: &[&str]) -> Webhook {
        Webhook {
            name: name.into(),
            url: url.into(),
            format: WebhookFormat::Slack,
            secret_file: None,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn urls_are_plain_http_with_a_host() {
        let u = parse_url("http://127.0.0.1:9000/hook?x=1").expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9000, "/hook?x=1")
        );
        assert_eq!(parse_url("http://hooks").expect("valid").path, "/");
        for bad in [
            "https://x/",
            "http://",
            "http://a:b/",
            "http://u:p@x/",
            "http://x/ y",
            "ftp://x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let hooks = vec![
            hook("ops", "http://x/", &["RolloutPaused"]),
            hook("ops", "https://x/", &["Nope"]),
        ];
        let paths: Vec<String> = validate(&hooks).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            ["notify[1].name", "notify[1].url", "notify[1].events[0]"]
        );
        assert!(validate(&hooks[..1]).is_empty());
        let many: Vec<Webhook> = (0..=MAX_WEBHOOKS)
            .map(|i| hook(&format!("h{i}"), "http://x/", &[]))
            .collect();
        assert_eq!(validate(&many).len(), 1);
    }

    #[test]
    fn a_webhook_wants_its_events_or_all_notifiable_ones() {
        assert!(hook("a", "http://x/", &[]).wants("RolloutPaused"));
        assert!(!hook("a", "http://x/", &[]).wants("ReplicaStarted"));
        let only = hook("a", "http://x/", &["DeploymentFailed"]);
        assert!(only.wants("DeploymentFailed") && !only.wants("RolloutPaused"));
    }
}
