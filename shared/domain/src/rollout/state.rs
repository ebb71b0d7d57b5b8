//! The rollouts folded from the log (stream `_rollouts`): the last one in
//! detail, the ones before it in summary. Like the rest of the world,
//! `apply` records what an event says and decides nothing.

use std::collections::BTreeMap;

use crate::event::{Event, Meta};
use crate::rollout::{FailedTarget, RolloutState, RolloutWave};

/// One target of a rollout, as the log says so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its image when the rollout started.
    pub previous_image: Option<String>,
    /// Its wave, from 1.
    pub wave: u32,
    /// The rollout's last deployment of it to the new image.
    pub deployment_id: Option<String>,
    /// Set once a `RolloutPaused` named it failed, with the reason; cleared
    /// by a resume that retries it.
    pub failure: Option<String>,
    /// The operator's deployment that took it out of the rollout.
    pub overridden: Option<String>,
    /// The deployment that takes it back (`rollback_all`).
    pub rollback_id: Option<String>,
}

/// A rollout, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Rollout id.
    pub id: String,
    /// Image rolled out.
    pub image: String,
    /// How the targets were chosen.
    pub selector: String,
    /// The waves, in order.
    pub waves: Vec<RolloutWave>,
    /// Every target by service.
    pub targets: BTreeMap<String, Target>,
    /// How long each wave bakes.
    pub wave_bake_secs: u64,
    /// Where it stands.
    pub state: RolloutState,
    /// The wave in progress, from 1 (0 before the first).
    pub wave: u32,
    /// Waves completed.
    pub waves_completed: u32,
    /// End of the current wave's bake, once it bakes.
    pub bake_until_ms: Option<i64>,
    /// Since when it is paused, and why (the failures, or the operator's reason).
    pub paused: Option<(i64, String)>,
    /// When it started or was last resumed (ms since epoch): a breach
    /// recorded before then was seen by whoever resumed it.
    pub watching_since_ms: i64,
    /// The targets `rollback_all` takes back.
    pub rollback: Vec<String>,
    /// How many `rollback_all` took back, once it completed.
    pub reverted: Option<u32>,
    /// Who started it, and why.
    pub actor: Option<String>,
    /// Why it was started.
    pub reason: Option<String>,
    /// When it started and ended (ms since epoch).
    pub started_at_ms: i64,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
    /// Webhooks that took one of its events (`WebhookDelivered`).
    pub webhooks_delivered: u32,
    /// Webhooks that did not (`WebhookFailed`), with the last of them.
    pub webhooks_failed: u32,
    /// The last failure: webhook, event type and error.
    pub webhook_error: Option<String>,
}

impl Rollout {
    /// The services of wave `n` (from 1).
    pub fn members(&self, n: u32) -> &[String] {
        n.checked_sub(1)
            .and_then(|i| self.waves.get(i as usize))
            .map_or(&[], |w| w.members.as_slice())
    }

    /// The commands legal in its state, as `mt rollout` names them.
    pub fn legal(&self) -> &'static [&'static str] {
        legal(Some(self.state))
    }
}

/// The commands legal in a state (`None`: no rollout ever), as `mt
/// rollout` names them.
pub fn legal(state: Option<RolloutState>) -> &'static [&'static str] {
    match state {
        None
        | Some(RolloutState::Completed | RolloutState::Cancelled | RolloutState::RolledBack) => {
            &["start"]
        }
        Some(RolloutState::InProgress) => &["pause", "cancel"],
        Some(RolloutState::Paused) => &["resume", "cancel", "rollback-all"],
        Some(RolloutState::RollingBack) => &[],
    }
}

/// Every rollout of the log: the last in detail, the others before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollouts {
    /// The last rollout started, whatever its state.
    pub last: Option<Rollout>,
    /// The rollouts before it, oldest first, as they ended.
    pub past: Vec<Rollout>,
}

impl Rollouts {
    /// The rollout in flight, if one is.
    pub fn active(&self) -> Option<&Rollout> {
        self.last.as_ref().filter(|r| r.state.is_active())
    }

    /// A webhook's outcome for an event of rollout `id`.
    pub fn note_webhook(&mut self, id: &str, outcome: &Event) {
        let Some(r) = self.last.as_mut().filter(|r| r.id == id) else {
            return;
        };
        match outcome {
            Event::WebhookDelivered { .. } => r.webhooks_delivered += 1,
            Event::WebhookFailed {
                webhook,
                event_type,
                error,
                ..
            } => {
                r.webhooks_failed += 1;
                r.webhook_error = Some(format!("{webhook} ({event_type}): {error}"));
            }
            _ => {}
        }
    }

    /// Fold one event of the `_rollouts` stream recorded at `at`.
    pub fn apply(&mut self, event: &Event, at: i64, meta: &Meta) {
        if let Event::RolloutStarted {
            rollout_id,
            image,
            selector,
            targets,
            waves,
            wave_bake_secs,
            at_ms,
        } = event
        {
            let mut by_service: BTreeMap<String, Target> = BTreeMap::new();
            for t in targets {
                let wave = waves
                    .iter()
                    .position(|w| w.members.contains(&t.service))
                    .map_or(0, |i| i as u32 + 1);
                by_service.insert(
                    t.service.clone(),
                    Target {
                        previous_image: t.previous_image.clone(),
                        wave,
                        deployment_id: None,
                        failure: None,
                        overridden: None,
                        rollback_id: None,
                    },
                );
            }
            if let Some(done) = self.last.take() {
                self.past.push(done);
            }
            self.last = Some(Rollout {
                id: rollout_id.clone(),
                image: image.clone(),
                selector: selector.clone(),
                waves: waves.clone(),
                targets: by_service,
                wave_bake_secs: *wave_bake_secs,
                state: RolloutState::InProgress,
                wave: 0,
                waves_completed: 0,
                bake_until_ms: None,
                paused: None,
                watching_since_ms: *at_ms,
                rollback: Vec::new(),
                reverted: None,
                actor: meta.actor.clone(),
                reason: meta.reason.clone(),
                started_at_ms: *at_ms,
                ended_at_ms: None,
                webhooks_delivered: 0,
                webhooks_failed: 0,
                webhook_error: None,
            });
            return;
        }
        let Some(r) = self
            .last
            .as_mut()
            .filter(|r| event.rollout_id() == Some(r.id.as_str()))
        else {
            return;
        };
        apply_to(r, event, at, meta);
    }
}

fn apply_to(r: &mut Rollout, event: &Event, at: i64, meta: &Meta) {
    match event {
        Event::RolloutWaveStarted { wave, .. } => {
            r.wave = *wave;
            r.bake_until_ms = None;
        }
        Event::RolloutTargetDeployed {
            service,
            deployment_id,
            rollback,
            ..
        } => {
            if let Some(t) = r.targets.get_mut(service) {
                if *rollback {
                    t.rollback_id = Some(deployment_id.clone());
                } else {
                    t.deployment_id = Some(deployment_id.clone());
                }
            }
        }
        Event::RolloutWaveBaking { until_ms, .. } => r.bake_until_ms = Some(*until_ms),
        Event::RolloutWaveCompleted { wave, .. } => {
            r.waves_completed = r.waves_completed.max(*wave);
            r.bake_until_ms = None;
        }
        Event::RolloutPaused {
            failed,
            by_operator,
            ..
        } => {
            for f in failed {
                if let Some(t) = r.targets.get_mut(&f.service) {
                    t.failure = Some(f.reason.clone());
                }
            }
            let why = if *by_operator {
                let reason = meta.reason.as_deref().unwrap_or("no reason given");
                format!("paused by an operator: {reason}")
            } else {
                failures_text(failed)
            };
            r.state = RolloutState::Paused;
            r.paused = Some((at, why));
        }
        Event::RolloutResumed {
            retry_failed,
            paused_ms,
            ..
        } => {
            if *retry_failed {
                for t in r.targets.values_mut().filter(|t| t.failure.is_some()) {
                    t.failure = None;
                    t.deployment_id = None;
                }
            }
            if let Some(until) = r.bake_until_ms.as_mut() {
                *until = until.saturating_add(*paused_ms);
            }
            r.state = RolloutState::InProgress;
            r.paused = None;
            r.watching_since_ms = at;
        }
        Event::RolloutCancelled { .. } => {
            r.state = RolloutState::Cancelled;
            r.paused = None;
            r.ended_at_ms = Some(at);
        }
        Event::RolloutRollbackStarted { targets, .. } => {
            r.state = RolloutState::RollingBack;
            r.paused = None;
            r.rollback = targets.clone();
        }
        Event::RolloutRollbackCompleted { reverted, .. } => {
            r.state = RolloutState::RolledBack;
            r.reverted = Some(*reverted);
            r.ended_at_ms = Some(at);
        }
        Event::RolloutCompleted { at_ms, .. } => {
            r.state = RolloutState::Completed;
            r.ended_at_ms = Some(*at_ms);
        }
        Event::RolloutTargetOverridden {
            service,
            deployment_id,
            ..
        } => {
            if let Some(t) = r.targets.get_mut(service) {
                t.overridden = Some(deployment_id.clone());
            }
        }
        _ => {}
    }
}

/// The failed targets and their reasons, in one line.
pub fn failures_text(failed: &[FailedTarget]) -> String {
    let each: Vec<String> = failed
        .iter()
        .map(|f| format!("{}: {}", f.service, f.reason))
        .collect();
    format!("{} target(s) failed: {}", failed.len(), each.join("; "))
}
