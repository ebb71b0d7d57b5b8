//! A release's content hash, and the field-by-field difference of two.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::release::Snapshot;
use crate::spec::ServiceSpec;

/// Hex SHA-256 of the services (ordered by name) and images: two releases
/// with the same content have the same hash, whatever their tags.
pub fn hash(services: &[ServiceSpec], images: &BTreeMap<String, String>) -> String {
    let mut sorted: Vec<&ServiceSpec> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    // Serialising plain data with sorted maps cannot fail.
    let bytes = serde_json::to_vec(&(sorted, images)).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// One field that differs between two releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// `images.web`, `services.web@staging.replicas`, ...
    pub path: String,
    /// The value in the first release (absent: the field is not there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// The value in the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Every field that differs from `a` to `b`, images first, in path order.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<Change> {
    let mut before = BTreeMap::new();
    let mut after = BTreeMap::new();
    flatten_into(&mut before, a);
    flatten_into(&mut after, b);
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| Change {
            path: p.clone(),
            before: before.get(p).cloned(),
            after: after.get(p).cloned(),
        })
        .collect()
}

fn flatten_into(out: &mut BTreeMap<String, String>, s: &Snapshot) {
    for (service, image) in &s.images {
        out.insert(format!("images.{service}"), image.clone());
    }
    for spec in &s.services {
        let value = serde_json::to_value(spec).unwrap_or(Value::Null);
        flatten(out, &format!("services.{}", spec.name), &value);
    }
}

fn flatten(out: &mut BTreeMap<String, String>, path: &str, value: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if path.starts_with("services.") && !path[9..].contains('.') && k == "name" {
                    continue;
                }
                flatten(out, &format!("{path}.{k}"), v);
            }
        }
        Value::String(s) => {
            out.insert(path.to_owned(), s.clone());
        }
        other => {
            out.insert(path.to_owned(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::spec;

    fn snapshot(image: &str, replicas: u32) -> Snapshot {
        let mut web = spec();
        web.replicas = replicas;
        let services = vec![web];
        let images = BTreeMap::from([("web".to_owned(), image.to_owned())]);
        Snapshot {
            tag: image.into(),
            description: None,
            hash: hash(&services, &images),
            services,
            images,
            derived_from: None,
            at_ms: 0,
        }
    }

    #[test]
    fn the_hash_is_of_the_content_alone() {
        let a = snapshot("v1", 3);
        let mut b = snapshot("v1", 3);
        b.tag = "other".into();
        assert_eq!(hash(&a.services, &a.images), hash(&b.services, &b.images));
        assert_ne!(a.hash, snapshot("v2", 3).hash);
        assert_ne!(a.hash, snapshot("v1", 4).hash);
        assert_eq!(a.hash.len(), 64);
    }

    #[test]
    fn a_diff_names_each_field_images_included() {
        let changes = diff(&snapshot("v1", 3), &snapshot("v2", 2));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["images.web", "services.web.replicas"]);
        assert_eq!(changes[0].before.as_deref(), Some("v1"));
        assert_eq!(changes[0].after.as_deref(), Some("v2"));
        assert_eq!(changes[1].after.as_deref(), Some("2"));
        assert!(diff(&snapshot("v1", 3), &snapshot("v1", 3)).is_empty());
    }
}
