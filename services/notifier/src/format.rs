//! The body a webhook gets: Slack-compatible JSON (`text` and `blocks`) or
//! the event envelope as JSON. Pure.

use mentat_domain::event::{Event, EventEnvelope};
use mentat_domain::notify::WebhookFormat;
use mentat_domain::short_id;
use serde_json::json;

/// The body of `envelope` in `format`.
pub fn body(envelope: &EventEnvelope, format: WebhookFormat) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Envelope => json!(envelope),
        WebhookFormat::Slack => {
            let text = text(envelope);
            json!({
                "text": text,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                        "{} · stream {} · position {} · event {}",
                        envelope.event.type_name(), envelope.stream, envelope.position, envelope.id
                    )}]}
                ]
            })
        }
    };
    value.to_string().into_bytes()
}

/// One line for people about the event.
pub fn text(envelope: &EventEnvelope) -> String {
    let stream = &envelope.stream;
    let rollout = |id: &str| format!("Rollout {}", short_id(id));
    match &envelope.event {
        Event::RolloutStarted {
            rollout_id,
            image,
            selector,
            targets,
            waves,
            ..
        } => format!(
            "{} of {image} started: {} target(s) of {selector} in {} wave(s)",
            rollout(rollout_id),
            targets.len(),
            waves.len()
        ),
        Event::RolloutWaveStarted {
            rollout_id,
            wave,
            members,
        } => format!(
            "{}: wave {wave} started ({})",
            rollout(rollout_id),
            members.join(", ")
        ),
        Event::RolloutWaveCompleted { rollout_id, wave } => {
            format!("{}: wave {wave} completed", rollout(rollout_id))
        }
        Event::RolloutPaused {
            rollout_id,
            wave,
            failed,
            ..
        } => {
            let why = if failed.is_empty() {
                "by an operator".to_owned()
            } else {
                mentat_domain::rollout::state::failures_text(failed)
            };
            format!("{} paused at wave {wave}: {why}", rollout(rollout_id))
        }
        Event::RolloutResumed {
            rollout_id,
            retry_failed,
            ..
        } => format!(
            "{} resumed{}",
            rollout(rollout_id),
            if *retry_failed {
                ", failed targets deployed again"
            } else {
                ""
            }
        ),
        Event::RolloutCancelled { rollout_id } => format!("{} cancelled", rollout(rollout_id)),
        Event::RolloutRollbackStarted {
            rollout_id,
            targets,
        } => format!(
            "{}: rolling back {} target(s)",
            rollout(rollout_id),
            targets.len()
        ),
        Event::RolloutRollbackCompleted {
            rollout_id,
            reverted,
            failed,
        } => format!(
            "{}: rollback completed, {reverted} target(s) reverted, {} failed",
            rollout(rollout_id),
            failed.len()
        ),
        Event::RolloutCompleted { rollout_id, .. } => format!("{} completed", rollout(rollout_id)),
        Event::DeploymentStarted {
            deployment_id,
            service,
            image,
            strategy,
            ..
        } => format!(
            "{service}: deployment {} of {image} started ({strategy})",
            short_id(deployment_id)
        ),
        Event::DeploymentCompleted { deployment_id, .. } => {
            format!("{stream}: deployment {} completed", short_id(deployment_id))
        }
        Event::DeploymentReverted {
            deployment_id,
            reason,
            ..
        } => format!(
            "{stream}: deployment {} reverted: {reason}",
            short_id(deployment_id)
        ),
        Event::DeploymentFailed {
            deployment_id,
            reason,
            ..
        } => format!(
            "{stream}: deployment {} failed: {reason}",
            short_id(deployment_id)
        ),
        Event::ThresholdBreached {
            service,
            version,
            judgement,
            ..
        } => format!("{service}: {version} breached a threshold: {judgement}"),
        other => format!("{stream}: {}", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mentat_domain::event::Meta;

    fn envelope(event: Event) -> EventEnvelope {
        EventEnvelope {
            id: "0190-event".into(),
            position: 7,
            stream: "_rollouts".into(),
            version: 3,
            schema_version: 1,
            recorded_at_ms: 1,
            meta: Meta::default(),
            event,
        }
    }

    #[test]
    fn slack_bodies_carry_text_and_blocks_envelopes_the_event() {
        let e = envelope(Event::RolloutWaveStarted {
            rollout_id: "01a25309-b614-736e-a089-b849042530f3".into(),
            wave: 2,
            members: vec!["s02".into(), "s03".into()],
        });
        let slack: serde_json::Value =
            serde_json::from_slice(&body(&e, WebhookFormat::Slack)).expect("JSON");
        // The random end of the id: its start is a timestamp, the same for
        // a rollout and the deployments it starts.
        assert_eq!(slack["text"], "Rollout 042530f3: wave 2 started (s02, s03)");
        assert_eq!(slack["blocks"][0]["text"]["text"], slack["text"]);
        let raw = body(&e, WebhookFormat::Envelope);
        let back: EventEnvelope = serde_json::from_slice(&raw).expect("an envelope");
        assert_eq!(back, e);
    }
}
