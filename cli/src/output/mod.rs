//! Everything `mt` prints: tables, times, replies and event lines. Pure
//! functions from data to text, so they are tested without a bus.

mod audit;
mod events;
mod progress;
mod ps;
pub mod rollout;
mod tables;

pub use audit::{report_csv, report_md, story_text};
pub use events::details;
pub use progress::{next_steps, progress, Known, Waiting};
pub use ps::{ps_rows, ps_table};
pub use tables::{events_table, history_table, status_report};

use mentat_domain::Reply;
use serde::Serialize;

/// Print `text` and a newline on stdout, its control characters escaped
/// ([`terminal_safe`]). When stdout is a closed pipe
/// (`mt history web | head -1`), exit quietly instead of panicking.
pub fn print(text: impl std::fmt::Display) {
    use std::io::Write;
    let text = text.to_string();
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{}", terminal_safe(&text)).and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `text` with every control character but newline and tab written as a
/// visible escape (`\u{1b}`): images, actors, reasons and replica output
/// come from outside, and a terminal must not take an escape sequence in
/// one of them as an order (to move the cursor, rewrite a line, set the
/// window title). C0 controls, DEL and the C1 range are escaped.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// JSON text with DEL and the C1 controls, which serde_json leaves as they
/// are, written as `\u00XX` escapes: the same JSON value, and nothing a
/// terminal obeys.
fn json_safe(json: String) -> String {
    if !json.chars().any(|c| c.is_control() && c != '\n') {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02} {}", clock(ms))
}

/// `ms` since the Unix epoch as `HH:MM:SS` in UTC.
pub fn clock(ms: i64) -> String {
    let day = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// `12.3s`, `4m 05s`, `2h 05m`: a duration in milliseconds for a person.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}.{}s", ms % 1000 / 100),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs / 60 % 60),
    }
}

/// `42s`, `5m`, `3h`, `2d`: how long something has run, in its largest unit.
pub fn uptime(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Year, month and day of a day count since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub use mentat_domain::short_id;

/// A command's reply for a person.
pub fn reply(reply: &Reply) -> String {
    match reply {
        Reply::Accepted {
            deployment_id: Some(id),
            message,
        } => format!("accepted: {message} (deployment {id})"),
        Reply::Accepted {
            deployment_id: None,
            message,
        } => format!("accepted: {message}"),
        Reply::Rejected { kind, reason } => format!("rejected ({kind}): {reason}"),
    }
}

/// `value` as one line of JSON (`--json`).
pub fn json<T: Serialize>(value: &T) -> String {
    json_safe(serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

/// `value` as indented JSON (`--json` for a whole document).
pub fn json_pretty<T: Serialize>(value: &T) -> String {
    json_safe(
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
    )
}

/// ` signed_by=ROLE:KEY` (the key's first 16 hex characters): the proof a
/// signed command's events carry, as tables show it.
pub fn signed_by(signed: &mentat_domain::security::SignedBy) -> String {
    let key = signed.key.get(..16).unwrap_or(&signed.key);
    format!(" signed_by={}:{key}", signed.role)
}

/// `-` for a missing value.
fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// Columns padded to their widest cell, two spaces apart; every line starts
/// with `indent`, the last column is not padded.
pub fn table(indent: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = indent.to_owned();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_readable_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_714_564_803_000), "2024-05-01 12:00:03");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(4_102_444_799_999), "2099-12-31 23:59:59");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_500_000), "2h 05m");
        assert_eq!(uptime(59_999), "59s");
        assert_eq!(uptime(300_000), "5m");
        assert_eq!(uptime(2 * 86_400_000 + 5), "2d");
        assert_eq!(uptime(-5), "0s");
        assert_eq!(utc(-86_400_000), "1969-12-31 00:00:00");
        assert_eq!(clock(1_714_564_803_999), "12:00:03");
    }

    #[test]
    fn control_characters_from_outside_are_shown_escaped() {
        let image = "v2\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m";
        assert_eq!(
            terminal_safe(image),
            "v2\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{d}\\u{9b}31m"
        );
        assert_eq!(terminal_safe("a\tb\nc"), "a\tb\nc");
        assert!(matches!(
            terminal_safe("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
        // JSON stays JSON, meaning the same string, with nothing raw in it.
        let text = json(&serde_json::json!({ "image": image }));
        assert!(!text.chars().any(char::is_control), "{text}");
        assert_eq!(terminal_safe(&text), text);
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back["image"], image);
        let pretty = json_pretty(&serde_json::json!({ "image": image }));
        let back: serde_json::Value = serde_json::from_str(&pretty).expect("valid JSON");
        assert_eq!(back["image"], image);
    }

    #[test]
    fn short_ids_keep_the_random_end() {
        assert_eq!(short_id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"), "2e3f4a5b");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["bbbb".to_owned(), "v".to_owned(), String::new()],
        ];
        let text = table("  ", &["K", "VALUE", "LAST"], &rows);
        assert_eq!(
            text,
            "  K     VALUE       LAST\n  a     long value  x\n  bbbb  v"
        );
    }

    #[test]
    fn replies_read_as_sentences() {
        let accepted = Reply::Accepted {
            deployment_id: Some("d-1".into()),
            message: "deploying web v2".into(),
        };
        assert_eq!(
            reply(&accepted),
            "accepted: deploying web v2 (deployment d-1)"
        );
        assert_eq!(
            reply(&Reply::rejected(
                mentat_domain::command::RejectKind::UnknownService,
                "unknown service"
            )),
            "rejected (unknown_service): unknown service"
        );
        assert!(json(&accepted).contains("\"status\":\"accepted\""));
    }
}
