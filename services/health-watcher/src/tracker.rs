//! The health of one replica as a pure state machine: probe outcomes in,
//! transitions out. No I/O and no clock, so it is tested exhaustively.
//!
//! `healthy_after` passes in a row make a replica healthy and
//! `unhealthy_after` failures in a row make it unhealthy. Only transitions
//! are reported: from the initial unknown state the first verdict either
//! way, then every change between healthy and unhealthy. A pass resets the
//! failure count and a failure the pass count.

/// What the watcher believes about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not enough probes yet for a verdict.
    Unknown,
    /// `healthy_after` passes in a row.
    Healthy,
    /// `unhealthy_after` failures in a row.
    Unhealthy,
}

/// A change of verdict, to be published as a fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The replica became healthy.
    Healthy,
    /// The replica became unhealthy; the last probe's error.
    Unhealthy(String),
}

/// Consecutive probe outcomes of one replica.
#[derive(Debug, Clone)]
pub struct Tracker {
    healthy_after: u32,
    unhealthy_after: u32,
    passes: u32,
    failures: u32,
    health: Health,
}

impl Tracker {
    /// A tracker in the unknown state. Thresholds of 0 are treated as 1.
    pub fn new(healthy_after: u32, unhealthy_after: u32) -> Self {
        Self {
            healthy_after: healthy_after.max(1),
            unhealthy_after: unhealthy_after.max(1),
            passes: 0,
            failures: 0,
            health: Health::Unknown,
        }
    }

    /// The current verdict.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Record one probe; the transition it causes, if any.
    pub fn observe(&mut self, outcome: Result<(), String>) -> Option<Transition> {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.passes = self.passes.saturating_add(1);
                if self.passes >= self.healthy_after && self.health != Health::Healthy {
                    self.health = Health::Healthy;
                    return Some(Transition::Healthy);
                }
            }
            Err(reason) => {
                self.passes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.unhealthy_after && self.health != Health::Unhealthy {
                    self.health = Health::Unhealthy;
                    return Some(Transition::Unhealthy(reason));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tracker: &mut Tracker, outcomes: &str) -> Vec<Option<Transition>> {
        outcomes
            .chars()
            .map(|c| {
                let outcome = if c == '+' { Ok(()) } else { Err("down".into()) };
                tracker.observe(outcome)
            })
            .collect()
    }

    #[test]
    fn given_unknown_when_enough_passes_then_healthy_once() {
        let mut t = Tracker::new(2, 3);
        let out = run(&mut t, "++++");
        assert_eq!(out, [None, Some(Transition::Healthy), None, None]);
        assert_eq!(t.health(), Health::Healthy);
    }

    #[test]
    fn given_unknown_when_enough_failures_then_unhealthy_first() {
        let mut t = Tracker::new(2, 3);
        let out = run(&mut t, "---");
        assert_eq!(out[2], Some(Transition::Unhealthy("down".into())));
    }

    #[test]
    fn given_healthy_when_failures_are_interrupted_then_no_transition() {
        let mut t = Tracker::new(1, 3);
        run(&mut t, "+");
        assert!(run(&mut t, "--+--+").iter().all(Option::is_none));
        assert_eq!(t.health(), Health::Healthy);
    }

    #[test]
    fn healthy_unhealthy_and_back() {
        let mut t = Tracker::new(2, 2);
        let changes: Vec<_> = run(&mut t, "++--++--").into_iter().flatten().collect();
        assert_eq!(
            changes,
            [
                Transition::Healthy,
                Transition::Unhealthy("down".into()),
                Transition::Healthy,
                Transition::Unhealthy("down".into()),
            ]
        );
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut t = Tracker::new(0, 0);
        assert_eq!(t.observe(Ok(())), Some(Transition::Healthy));
        assert!(matches!(
            t.observe(Err("x".into())),
            Some(Transition::Unhealthy(_))
        ));
    }
}
