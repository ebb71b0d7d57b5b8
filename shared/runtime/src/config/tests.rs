//! Tests of the service-file loader.
use super::*;
use mentat_domain::Strategy;

const MINIMAL: &str = "\
services:
  web:
    replicas: 3
    run:
      command: [\"mentat-demo-app\"]
";

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "mentat.yaml") {
        Ok(specs) => panic!("accepted: {specs:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The single problem of `text`, as `file:line: path: message`.
fn one_error(text: &str) -> String {
    let err = parse(text, "mentat.yaml").expect_err("must be rejected");
    assert_eq!(err.problems().len(), 1, "{err}");
    err.to_string()
}

#[test]
fn missing_sections_take_the_domain_defaults() {
    let specs = parse(MINIMAL, "mentat.yaml").expect("valid");
    assert_eq!(specs.len(), 1);
    let web = &specs[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.replicas, 3);
    assert_eq!(web.run.command, ["mentat-demo-app"]);
    assert_eq!(web.health, HealthSpec::default());
    assert_eq!(web.deploy, DeploySpec::default());
}

#[test]
fn the_documented_example_parses_field_by_field() {
    let text = "\
services:
  web:
    replicas: 3
    run:
      command: [\"mentat-demo-app\"]
      env: { APP_VERSION: \"{image}\" }
    health: { path: /ready, interval_ms: 200, healthy_after: 1, unhealthy_after: 2 }
    deploy:
      strategy: blue-green
      max_unavailable: 2
      health_timeout_secs: 30
      auto_revert: false
      canary_percent: 5
      standby_secs: 60
  api:
    replicas: 1
    run: { command: [app, \"--port\", \"{port}\"] }
    deploy: { strategy: canary }
";
    let specs = parse(text, "mentat.yaml").expect("valid");
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "api"]);
    let web = &specs[0];
    assert_eq!(web.run.env["APP_VERSION"], "{image}");
    assert_eq!(web.health.path, "/ready");
    assert_eq!(web.health.interval_ms, 200);
    assert_eq!(web.deploy.strategy, Strategy::BlueGreen);
    assert_eq!(web.deploy.max_unavailable, 2);
    assert!(!web.deploy.auto_revert);
    assert_eq!(web.deploy.standby_secs, 60);
    assert_eq!(specs[1].deploy.strategy, Strategy::Canary);
    assert_eq!(specs[1].deploy.max_unavailable, 1);
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = format!("{MINIMAL}    deploy:\n      max_unavalable: 2\n");
    let err = one_error(&text);
    assert!(
        err.starts_with(
            "mentat.yaml:7: services.web.deploy.max_unavalable: unknown field `max_unavalable`"
        ),
        "{err}"
    );
}

#[test]
fn wrong_type_names_file_line_and_field() {
    let text = MINIMAL.replace("replicas: 3", "replicas: three");
    let err = one_error(&text);
    assert!(
        err.starts_with("mentat.yaml:3: services.web.replicas: invalid type: string \"three\""),
        "{err}"
    );
}

#[test]
fn replicas_over_the_bound_are_named_at_their_line() {
    let text = MINIMAL.replace("replicas: 3", "replicas: 4294967295");
    assert_eq!(
        one_error(&text),
        "mentat.yaml:3: services.web.replicas: must be 1-1000, not 4294967295"
    );
}

#[test]
fn zero_replicas_is_impossible() {
    let text = MINIMAL.replace("replicas: 3", "replicas: 0");
    // The default max_unavailable (1) is then larger than replicas too,
    // but the file does not write it: only replicas is reported.
    assert_eq!(
        one_error(&text),
        "mentat.yaml:3: services.web.replicas: must be 1-1000, not 0"
    );
    let only_defaults = format!("{}    deploy: {{ strategy: canary }}\n", text);
    assert_eq!(problems(&only_defaults).len(), 1);
}

#[test]
fn max_unavailable_above_replicas_is_reported_on_its_line() {
    let text = format!("{MINIMAL}    health: {{ path: /health }}\n    deploy:\n      strategy: rolling\n      max_unavailable: 4\n");
    assert_eq!(
        one_error(&text),
        "mentat.yaml:9: services.web.deploy.max_unavailable: 4 is larger than replicas (3)"
    );
}

#[test]
fn canary_percent_over_100_in_a_flow_map_points_at_the_map() {
    let text = format!("{MINIMAL}    deploy: {{ strategy: canary, canary_percent: 101 }}\n");
    assert_eq!(
        one_error(&text),
        "mentat.yaml:6: services.web.deploy.canary_percent: 101 is over 100"
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "\
services:
  web:
    replicas: 2
    colour: blue
    run:
      command: [app]
      args: 7
    deploy:
      strategy: sideways
      canary_percent: 150
  Api:
    replicas: 1
    run: { command: [app] }
";
    let p = problems(text);
    let shown: Vec<_> = p.iter().map(|p| (p.line, p.path.as_str())).collect();
    assert_eq!(
        shown,
        [
            (Some(4), "services.web.colour"),
            (Some(7), "services.web.run.args"),
            (Some(9), "services.web.deploy.strategy"),
            (Some(10), "services.web.deploy.canary_percent"),
            (Some(11), "services.Api"),
        ]
    );
    assert!(p[2].message.contains("unknown variant `sideways`"), "{p:?}");
    let err = parse(text, "x.yaml").expect_err("invalid");
    assert_eq!(err.to_string().lines().count(), 5, "{err}");
}

#[test]
fn missing_required_fields_point_at_the_service() {
    let p = problems("services:\n  web:\n    run:\n      args: [a]\n");
    let shown: Vec<_> = p
        .iter()
        .map(|p| (p.line, p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            (Some(2), "services.web", "missing field `replicas`"),
            (Some(3), "services.web.run", "missing field `command`"),
        ]
    );
}

#[test]
fn an_empty_or_missing_services_map_is_an_error() {
    for text in ["", "services:\n", "services: {}\n", "# nothing\nother: 1\n"] {
        let p = problems(text);
        assert!(
            p.iter().any(|p| p.message.contains("service")),
            "{text:?}: {p:?}"
        );
    }
    let p = problems("other: 1\n");
    let shown: Vec<_> = p.iter().map(|p| (p.line, p.path.as_str())).collect();
    assert_eq!(shown, [(None, ""), (Some(1), "other")]);
}

#[test]
fn syntax_errors_carry_the_parser_line() {
    let err = parse("services:\n  web: [\n", "m.yaml").expect_err("bad yaml");
    let text = err.to_string();
    assert!(text.starts_with("m.yaml:"), "{text}");
    assert!(text.contains("invalid YAML"), "{text}");
    assert_eq!(err.problems()[0].path, "");
    assert!(err.problems()[0].line.is_some());
}

#[test]
fn load_names_the_file_it_could_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let err = load(&missing).expect_err("missing file");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("nope.yaml"), "{err}");
    let good = dir.path().join("mentat.yaml");
    std::fs::write(&good, MINIMAL).expect("write");
    assert_eq!(load(&good).expect("valid").len(), 1);
}

#[test]
fn locator_follows_indentation_and_falls_back_to_the_parent() {
    let text = "\
# comment
services:
  # web first
  web:
    run:
      command: [a]   # with: colon
    deploy:
      strategy: canary

  \"api\":
    deploy:
      strategy: rolling
other:
  strategy: x
";
    assert_eq!(locate(text, &["services"]), Some(2));
    assert_eq!(
        locate(text, &["services", "web", "deploy", "strategy"]),
        Some(8)
    );
    assert_eq!(
        locate(text, &["services", "api", "deploy", "strategy"]),
        Some(12)
    );
    assert_eq!(
        locate(text, &["services", "web", "deploy", "nope"]),
        Some(7)
    );
    assert_eq!(
        locate(text, &["services", "web", "run", "command", "0"]),
        Some(6)
    );
    assert_eq!(locate(text, &["other", "strategy"]), Some(14));
    assert_eq!(locate(text, &["missing"]), None);
    assert_eq!(locate(text, &[]), None);
}

#[test]
fn a_security_block_is_read_and_each_bad_value_named() {
    let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let text = format!(
        "{MINIMAL}security:\n  require_signed_commands: true\n  operators:\n    - {{ name: ana, key: {key}, role: admin }}\n"
    );
    let file = parse_file(&text, "mentat.yaml").expect("valid");
    let security = file.security.expect("a security block");
    assert!(security.require_signed_commands);
    assert_eq!(security.operators[0].name, "ana");
    assert_eq!(parse_file(MINIMAL, "m").expect("valid").security, None);
    // A role that is none, and signing required with no admin
    let bad = format!(
        "{MINIMAL}security:\n  require_signed_commands: true\n  operators:\n    - {{ name: ana, key: {key}, role: root }}\n"
    );
    let e = one_error(&bad);
    assert!(
        e.starts_with("mentat.yaml:8: security.operators: unknown variant `root`"),
        "{e}"
    );
    let no_admin = format!(
        "{MINIMAL}security:\n  require_signed_commands: true\n  operators:\n    - {{ name: ana, key: {key}, role: operator }}\n"
    );
    let e = one_error(&no_admin);
    assert!(
        e.starts_with("mentat.yaml:7: security.require_signed_commands:"),
        "{e}"
    );
}

#[test]
fn labels_are_read_and_a_bad_one_is_named_with_its_line() {
    let text = format!("{MINIMAL}    labels: {{ kind: edge, zone: eu-1 }}\n");
    let specs = parse(&text, "mentat.yaml").expect("valid");
    assert_eq!(
        specs[0].labels.get("kind").map(String::as_str),
        Some("edge")
    );
    assert_eq!(specs[0].labels.len(), 2);
    let text = format!("{MINIMAL}    labels: {{ kind: \"edge node\" }}\n");
    let err = one_error(&text);
    assert!(err.contains("services.web.labels.kind"), "{err}");
    let text = format!("{MINIMAL}    labels: [edge]\n");
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].path, "services.web.labels");
}

#[test]
fn a_notify_block_is_read_and_checked() {
    let text = format!(
        "{MINIMAL}notify:\n  - {{ name: ops, url: \"http://127.0.0.1:9/hook\", format: slack, events: [RolloutPaused] }}\n"
    );
    let file = parse_file(&text, "mentat.yaml").expect("valid");
    let hooks = file.notify.expect("a notify block");
    assert_eq!(hooks[0].name, "ops");
    assert!(hooks[0].wants("RolloutPaused") && !hooks[0].wants("RolloutStarted"));
    let text =
        format!("{MINIMAL}notify:\n  - {{ name: ops, url: \"https://x/\", format: slack }}\n");
    let err = parse_file(&text, "mentat.yaml").expect_err("https refused");
    assert!(err.to_string().contains("notify[0].url"), "{err}");
    let text = format!("{MINIMAL}notify:\n  - {{ name: ops, url: \"http://x/\", format: xml }}\n");
    assert!(parse_file(&text, "mentat.yaml").is_err());
    assert_eq!(
        parse_file(MINIMAL, "mentat.yaml").expect("valid").notify,
        None
    );
}

const ENVIRONMENTS: &str = "\
environments:
  staging: {}
  production: { protected: true, promote_from: staging, min_soak_secs: 60 }
services:
  web:
    replicas: 3
    run:
      command: [\"mentat-demo-app\"]
    environments:
      staging: { replicas: 1, run: { env: { LOG: debug } } }
      production: {}
";

#[test]
fn an_environments_block_and_per_environment_overrides_parse() {
    let file = parse_file(ENVIRONMENTS, "mentat.yaml").expect("valid");
    let envs = file.environments.expect("the block");
    assert!(envs["production"].protected);
    assert_eq!(envs["production"].promote_from.as_deref(), Some("staging"));
    let web = &file.services[0];
    assert_eq!(web.environments["staging"].replicas, Some(1));
}

#[test]
fn an_unknown_environment_or_a_bad_override_is_named_with_its_line() {
    let unknown = ENVIRONMENTS.replace("      production: {}", "      qa: {}");
    let e = one_error(&unknown);
    assert!(
        e.contains("services.web.environments.qa") && e.contains("unknown environment `qa`"),
        "{e}"
    );
    let zero = ENVIRONMENTS.replace("replicas: 1,", "replicas: 0,");
    let e = one_error(&zero);
    assert!(
        e.contains(":10: services.web.environments.staging.replicas"),
        "{e}"
    );
    let bad = ENVIRONMENTS.replace("promote_from: staging", "promote_from: qa");
    let e = one_error(&bad);
    assert!(e.contains("environments.production.promote_from"), "{e}");
}
