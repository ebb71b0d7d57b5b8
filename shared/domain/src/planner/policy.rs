//! The one rule for turning a deployment back: what happens to a deployment
//! in flight when one of its batches fails, its new version breaches a
//! traffic threshold, a phase passes its deadline, or an operator aborts it.
//!
//! | cause | `auto_revert: true` | `auto_revert: false` |
//! |---|---|---|
//! | a batch fails | revert | hold |
//! | a threshold breach | revert | hold |
//! | a phase deadline passes | revert | hold |
//! | an operator aborts (`mt abort`, `mt rollback`) | revert | revert |
//!
//! Two things come before the table: a deployment that is already reverting
//! fails (the previous image was the way back; there is nothing behind it),
//! and a revert with no previous image to go to (a first deployment) fails.
//! A hold is never turned into a failure.
//!
//! Why: with `auto_revert` on, the previous image is kept warm (still
//! running, or one batch away) precisely so that any failure can go back to
//! it without waiting for anyone. With it off, the operator has said that
//! they decide: the deployment is held (`DeploymentPaused`, with the cause
//! in the reason) whatever went wrong, so a rolling update stopped half-way
//! stays in flight, named in `mt status`, with `mt abort` and `mt resume`
//! still meaning something, rather than ending `DeploymentFailed` with the
//! service split between two versions and no deployment left to steer. An
//! abort is that decision, so it always reverts. A failure is only written
//! when there is no way back left to take.

use crate::event::Event;
use crate::planner::state::Deployment;

/// What went wrong, or who asked for the deployment to turn back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A batch's new replica exited, was not healthy in time or turned
    /// unhealthy (a canary or standby green replica), or found no host.
    BatchFailed,
    /// The health-watcher recorded a threshold breach of the new version.
    Breach,
    /// The current phase passed `progress_deadline_secs`.
    Deadline,
    /// An operator aborted or rolled back the deployment.
    Abort,
}

/// What the deployment does about a [`Cause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnBack {
    /// Go back to the previous image (`DeploymentReverting`).
    Revert,
    /// Stay where it is, for an operator to abort or resume (`DeploymentPaused`).
    Hold,
    /// End the deployment (`DeploymentFailed`): there is no way back left.
    Fail,
}

/// What the rule looks at in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The deployment's `auto_revert`, as its plan recorded it.
    pub auto_revert: bool,
    /// There is a previous image to go back to.
    pub has_previous: bool,
    /// The deployment is already going back to it.
    pub reverting: bool,
}

impl From<&Deployment> for Standing {
    fn from(d: &Deployment) -> Self {
        Self {
            auto_revert: d.auto_revert,
            has_previous: d.previous_image.is_some(),
            reverting: d.reverting.is_some(),
        }
    }
}

/// The rule of this module's table: what a deployment standing as `s` does
/// about `cause`.
pub fn turn_back(cause: Cause, s: Standing) -> TurnBack {
    if s.reverting {
        return TurnBack::Fail;
    }
    let revert = cause == Cause::Abort || s.auto_revert;
    match (revert, s.has_previous) {
        (true, true) => TurnBack::Revert,
        (true, false) => TurnBack::Fail,
        (false, _) => TurnBack::Hold,
    }
}

/// The event that carries out `choice` for `d`; `reason` says what went
/// wrong (or who aborted) and the event adds what follows from it.
pub(crate) fn event(choice: TurnBack, d: &Deployment, reason: String, now_ms: i64) -> Event {
    let deployment_id = d.id.clone();
    match choice {
        TurnBack::Revert => Event::DeploymentReverting {
            deployment_id,
            reason,
        },
        TurnBack::Hold => {
            let abort = match &d.previous_image {
                Some(previous) => format!("mt abort reverts to {previous}"),
                None => "mt abort ends it".to_owned(),
            };
            Event::DeploymentPaused {
                deployment_id,
                reason: format!(
                    "{reason}; auto_revert is off, so it is held: {abort}, mt resume carries on"
                ),
            }
        }
        TurnBack::Fail => Event::DeploymentFailed {
            deployment_id,
            reason: if d.reverting.is_some() {
                format!("revert failed: {reason}")
            } else {
                format!("{reason}; there is no previous image to revert to")
            },
            at_ms: now_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cause::*;
    use TurnBack::*;

    const CAUSES: [Cause; 4] = [BatchFailed, Breach, Deadline, Abort];

    fn standing(auto_revert: bool) -> Standing {
        Standing {
            auto_revert,
            has_previous: true,
            reverting: false,
        }
    }

    #[test]
    fn given_auto_revert_when_anything_goes_wrong_then_it_reverts() {
        for cause in CAUSES {
            assert_eq!(turn_back(cause, standing(true)), Revert, "{cause:?}");
        }
    }

    #[test]
    fn given_no_auto_revert_when_a_batch_fails_then_it_is_held() {
        assert_eq!(turn_back(BatchFailed, standing(false)), Hold);
    }

    #[test]
    fn given_no_auto_revert_when_a_threshold_is_breached_then_it_is_held() {
        assert_eq!(turn_back(Breach, standing(false)), Hold);
    }

    #[test]
    fn given_no_auto_revert_when_a_deadline_passes_then_it_is_held() {
        assert_eq!(turn_back(Deadline, standing(false)), Hold);
    }

    #[test]
    fn given_no_auto_revert_when_an_operator_aborts_then_it_reverts() {
        assert_eq!(turn_back(Abort, standing(false)), Revert);
    }

    #[test]
    fn given_a_revert_in_progress_when_it_goes_wrong_then_it_fails() {
        for auto_revert in [true, false] {
            let s = Standing {
                reverting: true,
                ..standing(auto_revert)
            };
            for cause in [BatchFailed, Deadline] {
                assert_eq!(turn_back(cause, s), Fail, "{cause:?}, {auto_revert}");
            }
        }
    }

    #[test]
    fn given_no_previous_image_when_anything_would_revert_then_it_fails() {
        let first = Standing {
            has_previous: false,
            ..standing(true)
        };
        for cause in CAUSES {
            assert_eq!(turn_back(cause, first), Fail, "{cause:?}");
        }
        let first = Standing {
            has_previous: false,
            ..standing(false)
        };
        assert_eq!(turn_back(Abort, first), Fail);
    }

    #[test]
    fn given_no_previous_image_and_no_auto_revert_when_something_fails_then_it_is_held() {
        let first = Standing {
            has_previous: false,
            ..standing(false)
        };
        for cause in [BatchFailed, Breach, Deadline] {
            assert_eq!(turn_back(cause, first), Hold, "{cause:?}");
        }
    }
}
