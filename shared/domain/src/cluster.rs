//! The cluster block of the service file: how the planner judges hosts
//! that stop sending heartbeats.
//!
//! ```yaml
//! cluster:
//!   suspect_after_secs: 3   # silent this long: its replicas get weight 0
//!   lost_after_secs: 30     # silent this long: its replicas are placed again
//! ```
//!
//! Both fields are optional, with the defaults below. The block is applied
//! with `mt apply` and recorded as `ClusterDefined`, so every decision the
//! planner takes about a host can be replayed from the log.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::FieldError;

/// Default `suspect_after_secs`.
pub const DEFAULT_SUSPECT_AFTER_SECS: u64 = 3;
/// Default `lost_after_secs`.
pub const DEFAULT_LOST_AFTER_SECS: u64 = 30;
/// Shortest `suspect_after_secs`: two heartbeats of an executor at its
/// default interval (1 s), so that one late heartbeat is not a suspicion.
pub const MIN_SUSPECT_AFTER_SECS: u64 = 2;
/// Longest `suspect_after_secs`: 10 minutes.
pub const MAX_SUSPECT_AFTER_SECS: u64 = 600;
/// Longest `lost_after_secs`: 24 hours.
pub const MAX_LOST_AFTER_SECS: u64 = 24 * 60 * 60;

/// How long a host may go without a heartbeat before it is suspect, then lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSpec {
    /// Seconds without a heartbeat after which a host is suspect: its
    /// replicas get weight 0 in every router (see the rule of
    /// `planner::hosts` when every host of a service is suspect).
    pub suspect_after_secs: u64,
    /// Seconds without a heartbeat after which a host is lost: its replicas
    /// are placed again on live hosts. Longer than `suspect_after_secs`.
    pub lost_after_secs: u64,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            suspect_after_secs: DEFAULT_SUSPECT_AFTER_SECS,
            lost_after_secs: DEFAULT_LOST_AFTER_SECS,
        }
    }
}

impl ClusterSpec {
    /// `suspect_after_secs` in milliseconds.
    pub fn suspect_after_ms(&self) -> i64 {
        crate::limits::secs_to_ms(self.suspect_after_secs)
    }

    /// `lost_after_secs` in milliseconds.
    pub fn lost_after_ms(&self) -> i64 {
        crate::limits::secs_to_ms(self.lost_after_secs)
    }

    /// Every impossible value, each with the path of its field
    /// (`cluster.suspect_after_secs`); empty when the block is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        let mut err = |field: &str, message: String| {
            out.push(FieldError {
                path: format!("cluster.{field}"),
                message,
            })
        };
        let suspect = self.suspect_after_secs;
        let lost = self.lost_after_secs;
        let suspect_ok = (MIN_SUSPECT_AFTER_SECS..=MAX_SUSPECT_AFTER_SECS).contains(&suspect);
        if !suspect_ok {
            err(
                "suspect_after_secs",
                format!("must be {MIN_SUSPECT_AFTER_SECS}-{MAX_SUSPECT_AFTER_SECS}, not {suspect}"),
            );
        }
        if lost > MAX_LOST_AFTER_SECS {
            err(
                "lost_after_secs",
                format!("{lost} is over {MAX_LOST_AFTER_SECS}"),
            );
        } else if suspect_ok && lost <= suspect {
            err(
                "lost_after_secs",
                format!("must be longer than cluster.suspect_after_secs ({suspect}), not {lost}"),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(suspect: u64, lost: u64) -> Vec<String> {
        ClusterSpec {
            suspect_after_secs: suspect,
            lost_after_secs: lost,
        }
        .validate()
        .into_iter()
        .map(|e| e.path)
        .collect()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(ClusterSpec::default().validate().is_empty());
        assert!(errors(2, 3).is_empty());
    }

    #[test]
    fn each_bad_value_names_its_field() {
        assert_eq!(errors(1, 30), ["cluster.suspect_after_secs"]);
        assert_eq!(errors(601, 900), ["cluster.suspect_after_secs"]);
        assert_eq!(errors(3, 3), ["cluster.lost_after_secs"]);
        assert_eq!(errors(10, 5), ["cluster.lost_after_secs"]);
        assert_eq!(
            errors(3, MAX_LOST_AFTER_SECS + 1),
            ["cluster.lost_after_secs"]
        );
        assert_eq!(
            errors(0, u64::MAX),
            ["cluster.suspect_after_secs", "cluster.lost_after_secs"]
        );
    }
}
