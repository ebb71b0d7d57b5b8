//! `mt rollout status` and `mt rollout history` as text.

use mentat_domain::rollout::{RolloutStatus, RolloutSummary};

use super::{clock, duration, short_id, table, utc};

/// The last rollout: a head, then each wave with its targets.
pub fn status(r: &RolloutStatus, now_ms: i64) -> String {
    let s = &r.summary;
    let mut out = vec![format!(
        "rollout {}  image {}  {}  ({})",
        s.rollout_id,
        s.image,
        s.state.as_str(),
        s.selector
    )];
    out.push(format!(
        "  started {} by {}{}",
        utc(s.started_at_ms),
        s.actor.as_deref().unwrap_or("-"),
        s.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    ));
    out.push(format!(
        "  waves {}/{} completed, {} of {} target(s) on the image, {} failed{}",
        s.waves_completed,
        s.waves,
        s.took_image,
        s.targets,
        s.failed,
        s.reverted
            .map(|n| format!(", {n} reverted by rollback-all"))
            .unwrap_or_default()
    ));
    if let Some(until) = r.bake_until_ms {
        out.push(format!(
            "  wave {} bakes until {} ({} left)",
            r.wave,
            clock(until),
            duration((until - now_ms).max(0))
        ));
    }
    if let Some(why) = &r.paused {
        out.push(format!("  paused: {why}"));
    }
    if r.webhooks_delivered + r.webhooks_failed > 0 {
        out.push(format!(
            "  webhooks: {} delivered, {} failed{}",
            r.webhooks_delivered,
            r.webhooks_failed,
            r.webhook_error
                .as_deref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        ));
    }
    let legal = if r.legal.is_empty() {
        "none: wait for the rollback to finish".to_owned()
    } else {
        r.legal.join(", ")
    };
    out.push(format!("  legal now: {legal}"));
    for w in &r.waves {
        out.push(format!("\nwave {} ({}%): {}", w.wave, w.percent, w.state));
        let rows: Vec<Vec<String>> = w
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.service.clone(),
                    t.state.as_str().to_owned(),
                    t.previous_image.clone().unwrap_or_else(|| "-".into()),
                    t.deployment_id
                        .as_deref()
                        .map(short_id)
                        .unwrap_or("-")
                        .to_owned(),
                    t.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push(table(
            "  ",
            &["TARGET", "STATE", "PREVIOUS", "DEPLOYMENT", "WHY"],
            &rows,
        ));
    }
    out.join("\n")
}

/// Past rollouts, newest first.
pub fn history(rollouts: &[RolloutSummary]) -> String {
    if rollouts.is_empty() {
        return "no rollout yet".to_owned();
    }
    let rows: Vec<Vec<String>> = rollouts
        .iter()
        .map(|s| {
            vec![
                s.rollout_id.clone(),
                s.image.clone(),
                s.state.as_str().to_owned(),
                s.selector.clone(),
                format!("{}/{}", s.waves_completed, s.waves),
                format!("{}/{}", s.took_image, s.targets),
                s.failed.to_string(),
                s.reverted
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                utc(s.started_at_ms),
                s.actor.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        "",
        &[
            "ROLLOUT", "IMAGE", "STATE", "TARGETS", "WAVES", "ON IMAGE", "FAILED", "REVERTED",
            "STARTED", "ACTOR",
        ],
        &rows,
    )
}
