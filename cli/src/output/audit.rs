//! The audits that tell the log's story, as text: `mt audit why` (one
//! deployment) and `mt audit report` (Markdown or CSV).

use mentat_domain::command::Outcome;
use mentat_domain::report::{Figures, Report};
use mentat_domain::story::Story;

use super::{details, duration, signed_by, table, utc};

/// `mt audit why`: the command, every step with its numbers, the end.
pub fn story_text(s: &Story) -> String {
    let from = s.previous_image.as_deref().unwrap_or("nothing");
    let mut out = format!(
        "deployment {} of {}: {from} -> {} ({}{})\n",
        s.deployment_id,
        s.service,
        s.image,
        s.strategy,
        if s.rollback { ", a rollback" } else { "" }
    );
    out.push_str(&format!(
        "started {} UTC by {}{}, reason: {}\n",
        utc(s.started_at_ms),
        s.actor.as_deref().unwrap_or("(no actor)"),
        s.signed
            .as_ref()
            .map(|signed| format!(" ({})", signed_by(signed).trim()))
            .unwrap_or_default(),
        s.reason.as_deref().unwrap_or("(none given)")
    ));
    let rows: Vec<Vec<String>> = s
        .steps
        .iter()
        .map(|step| {
            let mut detail = details(&step.event);
            if let Some(actor) = &step.actor {
                detail.push_str(&format!(" actor={actor:?}"));
            }
            if let Some(signed) = &step.signed {
                detail.push_str(&signed_by(signed));
            }
            if let Some(reason) = &step.reason {
                detail.push_str(&format!(" reason={reason:?}"));
            }
            vec![
                step.position.to_string(),
                utc(step.at_ms),
                step.role.as_str().to_owned(),
                step.event.type_name().to_owned(),
                detail.trim().to_owned(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(
            "  ",
            &["POSITION", "TIME (UTC)", "ROLE", "TYPE", "DETAILS"],
            &rows,
        ));
        out.push('\n');
    }
    out.push_str(&match (s.outcome, s.ended_at_ms) {
        (outcome, Some(end)) => format!(
            "ended {} UTC after {}: {}{}",
            utc(end),
            duration(end - s.started_at_ms),
            outcome_name(outcome),
            s.failure
                .as_deref()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        ),
        (outcome, None) => format!("not ended when the log ends: {}", outcome_name(outcome)),
    });
    out
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::InProgress => "in progress",
        Outcome::Reverting => "reverting",
        Outcome::Completed => "completed",
        Outcome::Reverted => "reverted",
        Outcome::Failed => "failed",
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}%"))
}

fn ms(value: Option<i64>) -> String {
    value.map_or("-".into(), duration)
}

fn figure_row(f: &Figures) -> Vec<String> {
    vec![
        f.service.clone(),
        f.deployments.to_string(),
        format!("{:.2}", f.per_day),
        format!(
            "{}/{}/{}/{}",
            f.completed, f.reverted, f.failed, f.in_progress
        ),
        percent(f.change_failure_rate_percent),
        ms(f.time_to_restore_ms),
        ms(f.median_duration_ms),
    ]
}

const FIGURES: [&str; 7] = [
    "service",
    "deployments",
    "per day",
    "completed/reverted/failed/in flight",
    "change failure rate",
    "time to restore (median)",
    "median duration",
];

const ACTIONS: [&str; 7] = [
    "position",
    "time (UTC)",
    "actor",
    "service",
    "what",
    "reason",
    "result",
];

fn action_rows(r: &Report) -> Vec<Vec<String>> {
    r.actions
        .iter()
        .map(|a| {
            vec![
                a.position.to_string(),
                utc(a.at_ms),
                a.actor.clone(),
                a.service.clone(),
                a.what.clone(),
                a.reason.clone().unwrap_or_default(),
                a.result
                    .map_or(String::new(), |o| outcome_name(o).to_owned()),
            ]
        })
        .collect()
}

/// `mt audit report --format md`.
pub fn report_md(r: &Report) -> String {
    let md_table = |header: &[&str], rows: &[Vec<String>]| {
        let mut t = format!(
            "| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            t.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        t
    };
    let figures: Vec<Vec<String>> = r.services.iter().map(figure_row).collect();
    format!(
        "# Audit report, {} to {} UTC\n\n## Per service\n\n{}\n## Who did what\n\n{}",
        utc(r.since_ms),
        utc(r.until_ms),
        md_table(&FIGURES, &figures),
        md_table(&ACTIONS, &action_rows(r))
    )
}

/// `mt audit report --format csv`: the figures, a blank line, the actions;
/// each with its header.
pub fn report_csv(r: &Report) -> String {
    let cell = |c: &str| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_owned()
        }
    };
    let csv = |header: &[&str], rows: &[Vec<String>]| {
        let mut t = header.join(",") + "\n";
        for row in rows {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            t.push_str(&(cells.join(",") + "\n"));
        }
        t
    };
    let figures: Vec<Vec<String>> = r
        .services
        .iter()
        .map(|f| {
            vec![
                f.service.clone(),
                f.deployments.to_string(),
                format!("{:.4}", f.per_day),
                f.completed.to_string(),
                f.reverted.to_string(),
                f.failed.to_string(),
                f.in_progress.to_string(),
                f.change_failure_rate_percent
                    .map_or(String::new(), |v| format!("{v:.2}")),
                f.time_to_restore_ms
                    .map_or(String::new(), |v| v.to_string()),
                f.median_duration_ms
                    .map_or(String::new(), |v| v.to_string()),
            ]
        })
        .collect();
    let header = [
        "service",
        "deployments",
        "per_day",
        "completed",
        "reverted",
        "failed",
        "in_progress",
        "change_failure_rate_percent",
        "time_to_restore_ms",
        "median_duration_ms",
    ];
    let actions = [
        "position", "at_utc", "actor", "service", "what", "reason", "result",
    ];
    format!(
        "{}\n{}",
        csv(&header, &figures),
        csv(&actions, &action_rows(r))
    )
}
