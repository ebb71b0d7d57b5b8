//! `mt audit verify`: through the planner, which recomputes the chain of
//! the log it holds; or offline with `--file`, trusting nothing but the
//! exported file, the anchors and the key.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mentat_bus::anchors::{self, Found};
use mentat_bus::subject;
use mentat_domain::audit::{
    self, AuditKeyReply, AuditVerifyQuery, AuditVerifyReply, LogBreak, LoggedEvent, VerifyingKey,
    MAX_EXPORT_LINE_BYTES,
};
use mentat_domain::Event;
use mentat_store::{Break, Chain};

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt audit verify`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON (the planner's reply, or the same shape for
    /// --file).
    #[arg(long)]
    pub json: bool,
    /// Check this file (from `mt audit export`) instead of asking the
    /// planner, trusting nothing but the file, the anchors and the key.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// With --file: also check against the anchors in this file (one JSON
    /// anchor per line, as the planner's --anchor-file); may be repeated.
    /// The anchors in MENTAT_ANCHORS are read too when NATS answers.
    #[arg(long, value_name = "PATH", requires = "file")]
    pub anchors: Vec<PathBuf>,
    /// With --file: the public key anchors must be signed with (64 hex
    /// characters, from `mt audit key`) [default: asked from the planner].
    #[arg(long, value_name = "HEX", requires = "file", value_parser = audit::parse_key)]
    pub key: Option<VerifyingKey>,
    /// How long to wait for the planner's answer, in seconds (it reads the
    /// whole log).
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// Verify, print the outcome, and fail (exit 1) on a break or a forged
/// anchor.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let reply = match &args.file {
        Some(file) => offline(nats, file, &args).await?,
        None => {
            let bus = client::connect(nats).await?;
            let timeout = Duration::from_secs(args.timeout);
            client::query(
                &bus,
                subject::QUERY_AUDIT_VERIFY,
                &AuditVerifyQuery {},
                timeout,
            )
            .await?
        }
    };
    report(&reply, args.json)
}

/// Print `reply`; the error that ends `mt` when the log or an anchor is bad.
pub fn report(reply: &AuditVerifyReply, json: bool) -> Result<()> {
    if json {
        output::print(output::json_pretty(reply));
    }
    let (forged, outcome) = match reply {
        AuditVerifyReply::Ok {
            head_position,
            head_hash,
            anchors_checked,
            accepted,
            forged,
        } => {
            if !json {
                output::print(format!(
                    "log verified: head position {head_position}, hash {head_hash}\n\
                     anchors matched: {anchors_checked}"
                ));
                for b in accepted {
                    output::print(format!(
                        "accepted break at position {} ({}): {}",
                        b.position, b.kind, b.detail
                    ));
                }
            }
            (forged, Ok(()))
        }
        AuditVerifyReply::Broken { found, forged, .. } => (
            forged,
            Err(Error::AuditFailed(format!(
                "log broken at position {} ({}): {}",
                found.position, found.kind, found.detail
            ))),
        ),
        AuditVerifyReply::Rejected { kind, reason } => {
            return Err(Error::Rejected {
                kind: *kind,
                reason: reason.clone(),
            })
        }
    };
    let Some(first) = forged.first() else {
        return outcome;
    };
    if !json {
        for f in forged {
            eprintln!(
                "mt: forged anchor ({}{}): {}",
                f.source,
                f.position
                    .map(|p| format!(", position {p}"))
                    .unwrap_or_default(),
                f.reason
            );
        }
    }
    outcome.and(Err(Error::AuditFailed(format!(
        "{} forged anchor(s), the first at {}: {}",
        forged.len(),
        first.source,
        first.reason
    ))))
}

/// Check an exported file against the anchors it can read.
async fn offline(nats: &str, file: &Path, args: &Args) -> Result<AuditVerifyReply> {
    // The bus is optional here: for the key when none is given, and for
    // the anchors in MENTAT_ANCHORS.
    let bus = client::connect(nats).await.ok();
    let key = match (&args.key, &bus) {
        (Some(key), _) => Some(*key),
        (None, Some(bus)) => match super::planner_key(bus).await {
            Ok(AuditKeyReply::Ok { key, .. }) => {
                Some(audit::parse_key(&key).map_err(Error::Runtime)?)
            }
            _ => None,
        },
        (None, None) => None,
    };
    let mut found = Found::default();
    match &key {
        Some(key) => {
            for path in &args.anchors {
                anchors::read_file(path, key, &mut found)
                    .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?;
            }
            if let Some(bus) = &bus {
                if let Err(e) = anchors::read_stream(bus, key, &mut found).await {
                    eprintln!("mt: the anchors in MENTAT_ANCHORS were not read: {e}");
                }
            }
        }
        None if !args.anchors.is_empty() => {
            return Err(Error::Usage(
                "--anchors needs the key they are signed with: give --key (from `mt audit key`)"
                    .into(),
            ))
        }
        None => eprintln!(
            "mt: no key (no --key, and no planner answered): no anchor checked, no accepted break honoured"
        ),
    }
    let mut chain = Chain::genesis();
    for anchor in &found.anchors {
        chain.anchor(anchor.position, &anchor.head_hash);
    }
    if let Some(key) = &key {
        for position in accepted_in(file, key)? {
            chain.accept(position);
        }
    }
    let anchors_read = found.anchors.len() as u64;
    let broken = |b: Break, forged| AuditVerifyReply::Broken {
        found: LogBreak {
            position: b.position,
            kind: kind(b.kind),
            detail: b.detail,
        },
        anchors_read,
        forged,
    };
    let mut lines = Lines::open(file)?;
    while let Some((number, line)) = lines.next_line()? {
        let event = match line {
            Ok(event) => event,
            Err(e) => {
                let b = Break {
                    position: chain.next_position(),
                    kind: mentat_store::BreakKind::ContentChanged,
                    detail: format!("line {number} of {} is not an event: {e}", file.display()),
                };
                return Ok(broken(b, found.forged));
            }
        };
        if let Err(b) = chain.push(&super::export::recorded(event)) {
            return Ok(broken(b, found.forged));
        }
    }
    // An export ends where it was taken; anchors signed since reach past it.
    match chain.finish_prefix() {
        Ok(v) => Ok(AuditVerifyReply::Ok {
            head_position: v.head_position,
            head_hash: v.head_hash,
            anchors_checked: v.anchors_checked as u64,
            accepted: v
                .accepted
                .into_iter()
                .map(|b| LogBreak {
                    position: b.position,
                    kind: kind(b.kind),
                    detail: b.detail,
                })
                .collect(),
            forged: found.forged,
        }),
        Err(b) => Ok(broken(b, found.forged)),
    }
}

/// Positions of the breaks accepted in the file (`LogBreakAccepted`)
/// with a signature of `key`.
fn accepted_in(file: &Path, key: &VerifyingKey) -> Result<Vec<i64>> {
    let mut accepted = Vec::new();
    let mut lines = Lines::open(file)?;
    while let Some((_, line)) = lines.next_line()? {
        let Ok(event) = line else { continue };
        if event.event_type != "LogBreakAccepted" {
            continue;
        }
        if let Ok(Event::LogBreakAccepted {
            position,
            kind,
            actor,
            reason,
            key: signer,
            signature,
            ..
        }) = serde_json::from_str(&event.payload)
        {
            let text = audit::accepted_break_text(position, kind, &actor, &reason);
            if signer == audit::key_hex(key)
                && audit::check_signature(key, &text, &signature).is_ok()
            {
                accepted.push(position);
            }
        }
    }
    Ok(accepted)
}

/// The store's kind of break, on the wire.
fn kind(kind: mentat_store::BreakKind) -> audit::BreakKind {
    use mentat_store::BreakKind as K;
    match kind {
        K::ContentChanged => audit::BreakKind::ContentChanged,
        K::LinkBroken => audit::BreakKind::LinkBroken,
        K::PositionMissing => audit::BreakKind::PositionMissing,
        K::EventInserted => audit::BreakKind::EventInserted,
        K::AnchorMismatch => audit::BreakKind::AnchorMismatch,
    }
}

/// The events of an exported file, a line at a time, each at most
/// [`MAX_EXPORT_LINE_BYTES`]; blank lines are skipped.
pub(crate) struct Lines {
    reader: std::io::BufReader<std::fs::File>,
    number: usize,
    path: PathBuf,
}

impl Lines {
    pub(crate) fn open(path: &Path) -> Result<Lines> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?;
        Ok(Lines {
            reader: std::io::BufReader::new(file),
            number: 0,
            path: path.to_owned(),
        })
    }

    /// The next line's number and event (or why it is not one); `None` at
    /// the end of the file.
    #[allow(clippy::type_complexity)]
    pub(crate) fn next_line(
        &mut self,
    ) -> Result<Option<(usize, std::result::Result<LoggedEvent, String>)>> {
        let io = |e: std::io::Error| Error::Runtime(format!("{}: {e}", self.path.display()));
        loop {
            self.number += 1;
            let mut line = Vec::new();
            let read = Read::by_ref(&mut self.reader)
                .take(MAX_EXPORT_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io)?;
            if read == 0 {
                return Ok(None);
            }
            if line.len() > MAX_EXPORT_LINE_BYTES {
                let mut rest = Vec::new();
                self.reader.read_until(b'\n', &mut rest).map_err(io)?;
                let too_long = format!("longer than {MAX_EXPORT_LINE_BYTES} bytes");
                return Ok(Some((self.number, Err(too_long))));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event = serde_json::from_slice(&line).map_err(|e| e.to_string());
            return Ok(Some((self.number, event)));
        }
    }
}
