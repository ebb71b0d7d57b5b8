//! `mt audit report --since DURATION [--actor A] [--service S] [--format
//! md|csv|json]`: who did what, when, why and with what result, and the
//! delivery figures per service, computed by the domain ([`report`]).

use std::path::PathBuf;

use mentat_domain::report::{self, Window};

use crate::error::Result;
use crate::output;

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown tables.
    Md,
    /// CSV: the figures, a blank line, the actions.
    Csv,
    /// JSON.
    Json,
}

/// `mt audit report`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How far back: `90s`, `30m`, `24h`, `7d`, `4w`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: i64,
    /// Only this actor's actions, and the deployments they started.
    #[arg(long, value_name = "A")]
    pub actor: Option<String>,
    /// Only this service.
    #[arg(long, value_name = "S")]
    pub service: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
    /// Read this export (`mt audit export`) instead of asking the planner.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// The longest `--since`: 100 years.
const MAX_SINCE_MS: i64 = 100 * 365 * 86_400_000;

/// `24h` as milliseconds: digits and one unit of s, m, h, d or w.
pub fn parse_duration(text: &str) -> std::result::Result<i64, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("a duration needs a unit: s, m, h, d or w (`24h`)")?;
    let (digits, unit) = text.split_at(unit_at);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => return Err(format!("unknown unit `{other}`: use s, m, h, d or w")),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| (1..=MAX_SINCE_MS).contains(ms))
        .ok_or_else(|| format!("`{text}` must be more than 0 and at most 100 years"))
}

/// Read the log, compute the report, print it.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let events = super::read::events(nats, args.file.as_deref()).await?;
    let now = mentat_bus::now_ms();
    let window = Window {
        since_ms: now - args.since,
        until_ms: now,
        actor: args.actor,
        service: args.service,
    };
    let made = report::report(&events, &window);
    output::print(match args.format {
        Format::Md => output::report_md(&made),
        Format::Csv => output::report_csv(&made),
        Format::Json => output::json_pretty(&made),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_take_one_unit() {
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("24h"), Ok(86_400_000));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400_000));
        for bad in ["24", "h", "0h", "5y", "-1h", "99999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
