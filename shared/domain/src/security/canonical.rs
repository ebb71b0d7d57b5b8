//! The canonical content of a command: what its signature covers, the
//! same bytes whatever order or encoding the sender wrote its fields in.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// The canonical content of a command as sent (its JSON or MessagePack
/// decoded to a value): JSON of every top-level field but `signature`,
/// object keys sorted by their bytes at every level, no whitespace, strings
/// escaped as JSON does. Two senders of the same fields get the same bytes
/// whatever order or encoding they wrote them in.
pub fn canonical(content: &serde_json::Value) -> String {
    let mut out = String::new();
    match content {
        serde_json::Value::Object(map) => {
            let fields = map.iter().filter(|(k, _)| k.as_str() != "signature");
            write_object(&mut out, fields);
        }
        other => write_canonical(&mut out, other),
    }
    out
}

fn write_object<'a>(
    out: &mut String,
    fields: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
) {
    let mut fields: Vec<_> = fields.collect();
    fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, k);
        out.push(':');
        write_canonical(out, v);
    }
    out.push('}');
}

fn write_canonical(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map.iter()),
    }
}

fn write_string(out: &mut String, s: &str) {
    // serde_json's escaping of a string cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// SHA-256 of [`canonical`]`(content)`, hex.
pub fn content_sha256(content: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(canonical(content).as_bytes()))
}
