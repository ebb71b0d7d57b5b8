//! `mt ps`: every instance of the services asked for, with its weight and
//! share of the traffic.

use mentat_domain::command::{ReplicaStatus, ServiceStatus};
use serde::Serialize;

use super::{or_dash, table, uptime};

/// One instance of `mt ps --json`: the planner's replica status, with its service.
#[derive(Debug, Serialize)]
pub struct PsRow<'a> {
    /// Service the instance belongs to.
    pub service: &'a str,
    /// The replica as the planner reports it.
    #[serde(flatten)]
    pub replica: &'a ReplicaStatus,
}

/// Every instance of `services`, in the planner's order.
pub fn ps_rows(services: &[ServiceStatus]) -> Vec<PsRow<'_>> {
    services
        .iter()
        .flat_map(|s| {
            s.instances.iter().map(|replica| PsRow {
                service: &s.service,
                replica,
            })
        })
        .collect()
}

/// `mt ps`: one row per instance, `SERVICE:INSTANCE` first (the form `mt
/// weight` and `mt stop` take); spawned instances are marked with `*`.
/// `now_ms` is the current time, for the uptime.
pub fn ps_table(services: &[ServiceStatus], now_ms: i64) -> String {
    let rows = ps_rows(services);
    if rows.is_empty() {
        return "no instances running".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let r = row.replica;
            let mark = if r.spawned { "*" } else { "" };
            vec![
                format!("{}:{}{mark}", row.service, r.replica),
                r.host.clone(),
                or_dash(r.addr.as_deref()),
                r.started_at_ms
                    .map(|at| uptime(now_ms - at))
                    .unwrap_or_else(|| "-".to_owned()),
                r.phase.clone(),
                r.weight.to_string(),
                share(r.share_bp),
            ]
        })
        .collect();
    let header = [
        "INSTANCE", "HOST", "ADDRESS", "UPTIME", "HEALTH", "WEIGHT", "SHARE",
    ];
    let mut out = table("", &header, &cells);
    if rows.iter().any(|r| r.replica.spawned) {
        out.push_str("\n* spawned with mt spawn, outside the declared replicas");
    }
    out
}

/// Basis points as a percentage with one decimal: 3333 is `33.3%`.
fn share(bp: u32) -> String {
    let tenths = (bp + 5) / 10;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_714_564_803_000;

    fn replica(id: &str, weight: u32, share_bp: u32, spawned: bool) -> ReplicaStatus {
        ReplicaStatus {
            replica: id.into(),
            image: "v1".into(),
            host: "h1".into(),
            addr: Some("127.0.0.1:41234".into()),
            phase: "healthy".into(),
            weight,
            share_bp,
            spawned,
            started_at_ms: Some(NOW - 300_000),
        }
    }

    fn web(instances: Vec<ReplicaStatus>) -> ServiceStatus {
        ServiceStatus {
            service: "web".into(),
            image: Some("v1".into()),
            replicas: 3,
            deployment: None,
            instances,
            routes: vec![],
            health: vec![],
            broken: None,
            truncated: None,
        }
    }

    #[test]
    fn one_row_per_instance_with_uptime_weight_and_share() {
        let mut starting = replica("web-6", 0, 0, false);
        starting.addr = None;
        starting.started_at_ms = None;
        starting.phase = "starting".into();
        let services = [web(vec![
            replica("web-4", 100, 3333, false),
            replica("green", 0, 0, true),
            starting,
        ])];
        let text = ps_table(&services, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "INSTANCE    HOST  ADDRESS          UPTIME  HEALTH    WEIGHT  SHARE",
                "web:web-4   h1    127.0.0.1:41234  5m      healthy   100     33.3%",
                "web:green*  h1    127.0.0.1:41234  5m      healthy   0       0.0%",
                "web:web-6   h1    -                -       starting  0       0.0%",
                "* spawned with mt spawn, outside the declared replicas",
            ]
        );
        assert_eq!(ps_table(&[web(vec![])], NOW), "no instances running");
    }

    #[test]
    fn shares_round_to_a_tenth_of_a_percent() {
        assert_eq!(share(10_000), "100.0%");
        assert_eq!(share(6667), "66.7%");
        assert_eq!(share(5), "0.1%");
        assert_eq!(share(4), "0.0%");
    }

    #[test]
    fn json_rows_carry_the_service_and_every_replica_field() {
        let services = [web(vec![replica("web-4", 100, 10_000, false)])];
        let json = serde_json::to_value(ps_rows(&services)).unwrap_or_default();
        assert_eq!(json[0]["service"], "web");
        assert_eq!(json[0]["replica"], "web-4");
        assert_eq!(json[0]["share_bp"], 10_000);
        assert_eq!(json[0]["spawned"], false);
    }
}
