//! `mt audit state (--at TIME | --position N) [SERVICE] [--json]`: what
//! `mt status` would have shown then. The planner folds its log up to that
//! point and answers with the function that answers `mt status`, so
//! `--json` prints what `mt status --json` printed then, byte for byte,
//! but for what only heartbeats tell (planners standing by, whether a
//! router was heard): not in the log, so absent.

use mentat_bus::subject;
use mentat_domain::audit::{AuditStateQuery, AuditStateReply};
use mentat_domain::command::StatusReply;

use crate::client;
use crate::error::{Error, Result};
use crate::output;

/// `mt audit state`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("point").required(true).args(["at", "position"])))]
pub struct Args {
    /// Only this service [default: every service].
    pub service: Option<String>,
    /// The state after the last event recorded at or before this time (UTC):
    /// `2026-12-07T16:20:01Z`, `2026-12-07 16:20:01.250`, or ms since the
    /// Unix epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,
    /// The state after the event at this position.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub position: Option<i64>,
    /// Print the state as `mt status --json` prints it.
    #[arg(long)]
    pub json: bool,
}

/// Ask the planner, page after page, and print the state.
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let bus = client::connect(nats).await?;
    let mut query = AuditStateQuery {
        position: args.position,
        at_ms: args.at,
        service: args.service,
        after: None,
        limit: None,
    };
    let mut all = Vec::new();
    loop {
        let reply = client::query(&bus, subject::QUERY_AUDIT_STATE, &query, STATE_TIMEOUT).await?;
        let AuditStateReply::Ok {
            position,
            recorded_at_ms,
            services,
            hosts,
            next,
            planners,
            routers,
            host_states,
            held,
        } = reply
        else {
            return Err(rejected(reply));
        };
        all.extend(services);
        match next {
            Some(n) if n > query.after.unwrap_or(0) => query.after = Some(n),
            Some(n) => {
                return Err(Error::Runtime(format!(
                    "the planner's next page ({n}) does not move past the last one"
                )))
            }
            None => {
                let status = StatusReply::Ok {
                    services: all,
                    hosts,
                    log_unavailable_since_ms: None,
                    next: None,
                    planners,
                    routers,
                    host_states,
                    held,
                };
                print(&status, position, recorded_at_ms, args.json);
                return Ok(());
            }
        }
    }
}

/// The error for a reply that is not `Ok`.
fn rejected(reply: AuditStateReply) -> Error {
    match reply {
        AuditStateReply::Rejected { kind, reason } => Error::Rejected { kind, reason },
        AuditStateReply::Ok { .. } => {
            Error::Runtime("the planner's answer was not a refusal".into())
        }
    }
}

/// How long one page may take: the planner folds the log up to the point.
const STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn print(status: &StatusReply, position: i64, recorded_at_ms: Option<i64>, json: bool) {
    if json {
        output::print(output::json_pretty(status));
        return;
    }
    let StatusReply::Ok {
        services,
        hosts,
        planners,
        routers,
        ..
    } = status
    else {
        return;
    };
    let when = recorded_at_ms.map_or(String::new(), |t| {
        format!(", recorded {} UTC", output::utc(t))
    });
    output::print(format!("as of position {position}{when}:"));
    output::print(output::status_report(
        services,
        hosts,
        None,
        planners.as_ref(),
        routers,
    ));
}

/// A UTC time as ms since the Unix epoch: `YYYY-MM-DD[T ]HH:MM:SS[.mmm][Z]`,
/// or the number of ms itself.
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return if ms >= 0 {
            Ok(ms)
        } else {
            Err("a time in ms must not be negative".into())
        };
    }
    let bad = || format!("`{text}` is not a UTC time like 2026-12-07T16:20:01Z");
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = text.split_once(['T', ' ']).ok_or_else(bad)?;
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, day] = d.as_slice() else {
        return Err(bad());
    };
    let (time, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<&str> = time.split(':').collect();
    let [h, mi, s] = t.as_slice() else {
        return Err(bad());
    };
    let (y, mo, day, h, mi, s) = (num(y)?, num(mo)?, num(day)?, num(h)?, num(mi)?, num(s)?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..61).contains(&s)
        || frac.is_empty()
        || frac.len() > 3
    {
        return Err(bad());
    }
    let ms = num(frac)? * 10_i64.pow(3 - frac.len() as u32);
    let days = days_from_civil(y, mo, day);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_read_as_utc_and_print_back_the_same() {
        let ms = parse_time("2026-12-07T16:20:01.25Z").expect("a time");
        assert_eq!(crate::output::utc(ms), "2026-12-07 16:20:01");
        assert_eq!(ms % 1000, 250);
        assert_eq!(parse_time("1970-01-01 00:00:00"), Ok(0));
        assert_eq!(parse_time("2000-03-01 00:00:00"), Ok(951_868_800_000));
        assert_eq!(parse_time("1234"), Ok(1234));
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-07",
            "-5",
            "2026-12-07T16:20:01.1234",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
