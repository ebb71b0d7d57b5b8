//! Which host name (or replica) a request is for, from its Host.
//!
//! `web.localhost:8080` is host name `web`; `web-3.web.localhost` is
//! replica `web-3` behind host name `web`. The port, letter case and a
//! trailing dot are ignored. Replica ids may contain dots: the host name is
//! the label just before the domain. A host name is a service's name unless
//! its route block says otherwise.

use std::borrow::Cow;

/// Where a request should go. Borrows from the Host in the common case
/// (already lower case, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// Any replica behind a host name, by weight.
    Service(Cow<'a, str>),
    /// One replica, whatever its weight.
    Replica {
        /// Host name.
        service: String,
        /// Replica id.
        replica: String,
    },
    /// The Host is not under the router's domain; carries the host name.
    Unknown(String),
}

/// Read `host` (a Host header value) against `domain` (lower case, no dots
/// around it, as [`crate::Config::validate`] leaves it).
pub fn target<'a>(host: &'a str, domain: &str) -> Target<'a> {
    let host = host.trim();
    if let Some(t) = fast_target(host, domain) {
        return t;
    }
    let name = strip_port(host.trim())
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let Some(prefix) = name
        .strip_suffix(domain)
        .and_then(|p| p.strip_suffix('.'))
        .filter(|p| !p.is_empty())
    else {
        return Target::Unknown(name);
    };
    match prefix.rsplit_once('.') {
        None => Target::Service(Cow::Owned(prefix.to_owned())),
        Some((replica, service)) if !replica.is_empty() && !service.is_empty() => Target::Replica {
            service: service.to_owned(),
            replica: replica.to_owned(),
        },
        Some(_) => Target::Unknown(name.clone()),
    }
}

/// The common case without allocating: already lower case, no trailing dot.
fn fast_target<'a>(host: &'a str, domain: &str) -> Option<Target<'a>> {
    let name = strip_port(host);
    if name.ends_with('.') || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let prefix = name.strip_suffix(domain)?.strip_suffix('.')?;
    if prefix.is_empty() || prefix.contains('.') {
        return None;
    }
    Some(Target::Service(Cow::Borrowed(prefix)))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal is never under a domain; keep it whole.
        return host;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(s: &str) -> Target<'_> {
        Target::Service(s.into())
    }

    #[test]
    fn service_names_with_or_without_port() {
        assert_eq!(target("web.localhost", "localhost"), service("web"));
        assert_eq!(target("web.localhost:8080", "localhost"), service("web"));
        assert_eq!(target("WEB.Localhost.", "localhost"), service("web"));
        assert_eq!(
            target("api.apps.example.com", "apps.example.com"),
            service("api")
        );
    }

    #[test]
    fn replica_addressing() {
        assert_eq!(
            target("web-3.web.localhost:80", "localhost"),
            Target::Replica {
                service: "web".into(),
                replica: "web-3".into()
            }
        );
        assert_eq!(
            target("v1.2.web.localhost", "localhost"),
            Target::Replica {
                service: "web".into(),
                replica: "v1.2".into()
            }
        );
    }

    #[test]
    fn other_hosts_are_unknown() {
        for host in [
            "localhost",
            "127.0.0.1:8080",
            "[::1]:8080",
            "web.example.com",
            "notlocalhost",
            "",
            ".web.localhost",
        ] {
            assert!(
                matches!(target(host, "localhost"), Target::Unknown(_)),
                "{host}"
            );
        }
    }
}
