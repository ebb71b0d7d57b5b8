//! Who else plans: every planner, leading or standing by, announces itself
//! on `mentat.planner.heartbeat.<id>` every second, and each keeps the
//! others it heard from lately, for `mt status`. The roster only informs;
//! leadership itself is decided in the log (`mentat_store::Store::try_lead`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mentat_bus::{codec, Bus, Encoding};
use mentat_domain::command::PlannersStatus;
use mentat_domain::planner::World;
use serde::{Deserialize, Serialize};

/// Subject of every planner's heartbeat.
pub const HEARTBEAT_ALL: &str = mentat_bus::subject::PLANNER_HEARTBEAT_ALL;

/// How often a planner announces itself.
pub const EVERY: Duration = Duration::from_secs(1);

/// A planner not heard from for this long is left out.
const FORGET_AFTER: Duration = Duration::from_secs(5);

/// Most planners kept: heartbeats are not authenticated here, so a flood
/// of made-up ids is bounded (the oldest are dropped).
const MAX_PLANNERS: usize = 64;

/// A planner's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerHeartbeat {
    /// The planner's id.
    pub planner: String,
    /// Its epoch when it leads; absent while it stands by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// The planners heard from lately.
#[derive(Debug)]
pub struct Roster {
    me: String,
    seen: HashMap<String, (Instant, Option<i64>)>,
}

impl Roster {
    /// A roster kept by planner `me`.
    pub fn new(me: impl Into<String>) -> Self {
        Roster {
            me: me.into(),
            seen: HashMap::new(),
        }
    }

    /// This planner's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Note a heartbeat (an undecodable one is ignored).
    pub fn heard(&mut self, msg: &async_nats::Message) {
        let Ok(beat) = codec::decode::<PlannerHeartbeat>(
            &msg.payload,
            Encoding::of(msg.headers.as_ref()),
            "PlannerHeartbeat",
        ) else {
            return;
        };
        if beat.planner == self.me || beat.planner.len() > 128 {
            return;
        }
        self.seen.retain(|_, (at, _)| at.elapsed() < FORGET_AFTER);
        if self.seen.len() >= MAX_PLANNERS && !self.seen.contains_key(&beat.planner) {
            return;
        }
        self.seen.insert(beat.planner, (Instant::now(), beat.epoch));
    }

    /// Announce this planner, leading in `epoch` or standing by.
    pub async fn announce(&self, bus: &Bus, epoch: Option<i64>) {
        let beat = PlannerHeartbeat {
            planner: self.me.clone(),
            epoch,
        };
        let subject = format!("mentat.planner.heartbeat.{}", subject_token(&self.me));
        if let Err(e) = bus.publish(subject, &beat).await {
            tracing::debug!(error = %e, "could not announce the planner");
        }
    }

    /// What `mt status` shows: the leader from the log, the standbys heard.
    pub fn status(&self, world: &World) -> PlannersStatus {
        let mut standbys: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, (at, epoch))| at.elapsed() < FORGET_AFTER && epoch.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        standbys.sort();
        crate::queries::planners(world, standbys, &self.me)
    }
}

/// `id` as one NATS subject token.
fn subject_token(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_one_subject_token() {
        assert_eq!(subject_token("host-1.example:42"), "host-1_example_42");
    }
}
