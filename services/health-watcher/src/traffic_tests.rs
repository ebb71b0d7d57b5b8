//! Given/when/then scenarios of [`Traffic`]: statistics in, verdict
//! transitions out.

use super::*;
use crate::judge::tests::thresholds;
use mentat_domain::event::Metric;
use mentat_domain::stats::{bucket_of, InstanceStats, LATENCY_BUCKETS};

fn traffic_with(t: Thresholds) -> Traffic {
    let mut traffic = Traffic::new(0);
    traffic.set_thresholds(&BTreeMap::from([("web".to_owned(), t)]));
    traffic
}

fn instance(image: &str, requests: u64, errors: u64) -> InstanceStats {
    let mut buckets = vec![0; LATENCY_BUCKETS];
    buckets[bucket_of(1_000)] = requests;
    InstanceStats {
        service: "web".into(),
        replica: format!("web-{image}"),
        image: image.into(),
        requests,
        errors_5xx: errors,
        latency_buckets: buckets,
        p50_ms: 1.0,
        p90_ms: 1.0,
        p99_ms: 1.0,
    }
}

fn stats(at_ms: i64, instances: Vec<InstanceStats>) -> TrafficStats {
    TrafficStats {
        router: "r1".into(),
        at_ms,
        interval_ms: 100,
        instances,
    }
}

fn types(events: &[Event]) -> Vec<(&str, String)> {
    events
        .iter()
        .map(|e| {
            let version = match e {
                Event::ThresholdBreached { version, .. }
                | Event::NoData { version, .. }
                | Event::ThresholdsMet { version, .. } => version.clone(),
                _ => String::new(),
            };
            (e.type_name(), version)
        })
        .collect()
}

#[test]
fn given_a_healthy_and_a_failing_version_when_stats_arrive_then_one_breach_is_published() {
    let mut t = traffic_with(thresholds());
    t.record(&stats(
        10_000,
        vec![instance("v1", 90, 0), instance("v2", 30, 15)],
    ));
    let facts = t.judge("web", 10_050);
    assert_eq!(
        types(&facts),
        [
            ("ThresholdsMet", "v1".to_owned()),
            ("ThresholdBreached", "v2".to_owned())
        ]
    );
    let Event::ThresholdBreached { judgement, .. } = &facts[1] else {
        panic!("{facts:?}");
    };
    assert_eq!(judgement.metric, Metric::ErrorRate);
    assert_eq!(judgement.observed, 5_000);
    assert_eq!(judgement.baseline, Some(0));
    assert_eq!(judgement.requests, 30);
    // Same verdicts on the next interval: nothing new.
    t.record(&stats(
        10_100,
        vec![instance("v1", 90, 0), instance("v2", 30, 15)],
    ));
    assert!(t.judge("web", 10_150).is_empty());
}

#[test]
fn given_a_spike_on_both_versions_then_no_breach() {
    let mut t = traffic_with(thresholds());
    t.record(&stats(
        10_000,
        vec![instance("v1", 270, 270), instance("v2", 30, 30)],
    ));
    let facts = t.judge("web", 10_050);
    // v1 carries most of the traffic and fails alike: neither version is worse.
    assert_eq!(
        types(&facts),
        [
            ("ThresholdsMet", "v1".to_owned()),
            ("ThresholdsMet", "v2".to_owned())
        ]
    );
}

#[test]
fn given_a_window_older_than_the_replay_then_nothing_is_judged_until_it_is_covered() {
    let mut t = Traffic::new(10_000);
    t.set_thresholds(&BTreeMap::from([("web".to_owned(), thresholds())]));
    t.record(&stats(10_500, vec![instance("v2", 30, 30)]));
    assert!(
        t.judge("web", 10_600).is_empty(),
        "window reaches back before 10 000"
    );
    assert_eq!(
        types(&t.judge("web", 11_000)),
        [("ThresholdBreached", "v2".to_owned())]
    );
}

#[test]
fn given_a_seeded_verdict_then_only_a_change_is_published() {
    let mut t = traffic_with(thresholds());
    t.seed(&Event::ThresholdsMet {
        service: "web".into(),
        version: "v1".into(),
        requests: 100,
        window_secs: 1,
    });
    t.record(&stats(10_000, vec![instance("v1", 100, 0)]));
    assert!(t.judge("web", 10_050).is_empty(), "v1 still passes");
    t.record(&stats(10_100, vec![instance("v1", 100, 100)]));
    assert_eq!(
        types(&t.judge("web", 10_150)),
        [("ThresholdBreached", "v1".to_owned())]
    );
}

#[test]
fn given_a_version_gone_when_it_comes_back_then_its_verdict_starts_afresh() {
    let mut t = traffic_with(thresholds());
    t.record(&stats(10_000, vec![instance("v2", 30, 30)]));
    assert_eq!(t.judge("web", 10_050).len(), 1);
    // No traffic and not routed: forgotten once its window empties.
    assert!(t.judge("web", 11_500).is_empty());
    t.record(&stats(20_000, vec![instance("v2", 30, 30)]));
    assert_eq!(
        types(&t.judge("web", 20_050)),
        [("ThresholdBreached", "v2".to_owned())]
    );
}

#[test]
fn given_a_routed_version_without_traffic_then_no_data_and_idle_probes() {
    let mut t = traffic_with(Thresholds {
        idle_probe_rps: 5,
        ..thresholds()
    });
    let backend = |image: &str, weight| Backend {
        replica: format!("web-{image}"),
        addr: format!("127.0.0.1:{}", if image == "v1" { 1 } else { 2 }),
        image: image.into(),
        weight,
    };
    t.set_routes(
        "web",
        &[backend("v1", 90), backend("v2", 10), backend("v0", 0)],
    );
    t.record(&stats(
        10_000,
        vec![instance("v1", 25, 0), instance("v2", 2, 0)],
    ));
    let facts = t.judge("web", 10_050);
    assert_eq!(
        types(&facts),
        [
            ("ThresholdsMet", "v1".to_owned()),
            ("NoData", "v2".to_owned())
        ]
    );
    let starving = t.starving();
    assert_eq!(starving.len(), 1);
    assert_eq!(starving[0].version, "v2");
    assert_eq!(starving[0].addrs, ["127.0.0.1:2"]);
    assert_eq!(starving[0].rps, 5);
    // Probe answers count in the window like the router's.
    for i in 0..20 {
        t.record_one("web", "v2", 10_060 + i, Totals::one(1_000, false));
    }
    assert_eq!(
        types(&t.judge("web", 10_100)),
        [("ThresholdsMet", "v2".to_owned())]
    );
    assert!(t.starving().is_empty());
}

#[test]
fn given_thresholds_disabled_or_unknown_then_nothing_is_published() {
    let mut t = traffic_with(Thresholds {
        enabled: false,
        ..thresholds()
    });
    t.record(&stats(10_000, vec![instance("v2", 30, 30)]));
    assert!(t.judge_all(10_050).is_empty());
    let mut unknown = Traffic::new(0);
    unknown.record(&stats(10_000, vec![instance("v2", 30, 30)]));
    assert!(unknown.judge_all(10_050).is_empty());
}

#[test]
fn given_a_slow_version_then_a_latency_breach_follows_an_error_breach() {
    let mut t = traffic_with(thresholds());
    t.record(&stats(10_000, vec![instance("v2", 30, 30)]));
    assert_eq!(t.judge("web", 10_050).len(), 1);
    let mut slow = instance("v2", 30, 0);
    slow.latency_buckets = vec![0; LATENCY_BUCKETS];
    slow.latency_buckets[bucket_of(900_000)] = 30;
    t.record(&stats(11_100, vec![slow]));
    let facts = t.judge("web", 11_150);
    let [Event::ThresholdBreached { judgement, .. }] = facts.as_slice() else {
        panic!("{facts:?}");
    };
    assert_eq!(judgement.metric, Metric::LatencyP99);
}

#[test]
fn given_a_judged_version_when_its_traffic_hovers_below_min_requests_then_no_flapping() {
    let mut t = traffic_with(thresholds());
    t.record(&stats(10_000, vec![instance("v2", 25, 0)]));
    assert_eq!(
        types(&t.judge("web", 10_050)),
        [("ThresholdsMet", "v2".to_owned())]
    );
    // 12 of 20 requests: still judged (at least half of min_requests).
    t.record(&stats(11_100, vec![instance("v2", 12, 12)]));
    assert_eq!(
        types(&t.judge("web", 11_150)),
        [("ThresholdBreached", "v2".to_owned())]
    );
    t.record(&stats(12_200, vec![instance("v2", 18, 18)]));
    assert!(t.judge("web", 12_250).is_empty(), "still a breach");
    // Below half: no data.
    t.record(&stats(13_300, vec![instance("v2", 9, 9)]));
    assert_eq!(
        types(&t.judge("web", 13_350)),
        [("NoData", "v2".to_owned())]
    );
}

#[test]
fn given_a_window_longer_than_the_replay_then_a_longer_replay_is_asked_for_once() {
    const MARGIN: i64 = 2_000;
    const MAX_AGE: i64 = 900_000;
    // The feeds were opened at 10 s knowing no window: complete from 8 s.
    let mut t = Traffic::new(8_000);
    t.set_thresholds(&BTreeMap::from([(
        "web".to_owned(),
        Thresholds {
            window_secs: 10,
            ..thresholds()
        },
    )]));
    // At 11 s a 10 s window reaches back to 1 s, before what was replayed.
    assert!(t.needs_longer_replay(11_000, MARGIN, MAX_AGE));
    t.restart_windows(11_000 - t.replay_span_ms(MARGIN, MAX_AGE));
    assert!(!t.needs_longer_replay(11_100, MARGIN, MAX_AGE));
    // Once the watcher has run a whole window, nothing is missing.
    assert!(!Traffic::new(0).needs_longer_replay(11_000, MARGIN, MAX_AGE));
}

#[test]
fn given_a_window_longer_than_the_stream_keeps_then_one_replay_of_all_it_keeps() {
    const MARGIN: i64 = 2_000;
    const MAX_AGE: i64 = 60_000;
    let mut t = traffic_with(Thresholds {
        window_secs: 3_600,
        ..thresholds()
    });
    t.restart_windows(100_000);
    assert!(t.needs_longer_replay(110_000, MARGIN, MAX_AGE));
    assert_eq!(t.replay_span_ms(MARGIN, MAX_AGE), MAX_AGE);
    t.restart_windows(110_000 - MAX_AGE);
    // What the stream no longer holds cannot be replayed: no second replay.
    assert!(!t.needs_longer_replay(110_500, MARGIN, MAX_AGE));
}
