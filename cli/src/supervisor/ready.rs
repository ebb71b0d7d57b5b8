//! Once the planner answers, apply the config and tell the user what to
//! type next.

use std::time::Duration;

use mentat_bus::Bus;
use mentat_domain::command::StatusReply;
use mentat_domain::Reply;
use mentat_runtime::config::ServiceFile;

use super::{say, Plan};
use crate::{apply, client, output};

/// How long the planner may take to answer its first status query.
const PLANNER_WAIT: Duration = Duration::from_secs(120);
/// How often to ask in the meantime.
const ASK_EVERY: Duration = Duration::from_millis(500);
/// The NATS URL the CLI uses when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Wait for the planner, apply `services`, print the next commands.
pub async fn apply_when_ready(plan: Plan, services: ServiceFile) {
    let Some(bus) = connect(&plan).await else {
        return;
    };
    if !planner_answers(&bus).await {
        say(&format!(
            "the planner did not answer within {}s; not applying {} (see the planner's output above)",
            PLANNER_WAIT.as_secs(),
            plan.config.display()
        ));
        return;
    }
    let first = services.services.first().map(|s| s.name.clone());
    match apply::send(&bus, services, &plan.config, Some("mt up".into())).await {
        Ok(reply @ Reply::Accepted { .. }) => say(&format!(
            "{}: {}",
            plan.config.display(),
            output::reply(&reply)
        )),
        Ok(Reply::Rejected { reason, .. }) => {
            say(&format!(
                "the planner rejected {}: {reason}",
                plan.config.display()
            ));
            return;
        }
        Err(e) => {
            say(&format!("applying {} failed: {e}", plan.config.display()));
            return;
        }
    }
    // A deploy is rejected until an executor has joined: say "up" only then.
    if !host_alive(&bus).await {
        say("no executor host has joined yet; deploys are rejected until one does (see the executor's output above)");
        return;
    }
    if let Some(service) = first {
        output::print(next_steps(&plan, &service));
    }
}

async fn connect(plan: &Plan) -> Option<Bus> {
    let deadline = tokio::time::Instant::now() + PLANNER_WAIT;
    loop {
        match client::connect_as(&plan.nats_url, plan.identity.clone()).await {
            Ok(bus) => return Some(bus),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                say(&format!("cannot connect to NATS to apply the config: {e}"));
                return None;
            }
            Err(_) => tokio::time::sleep(ASK_EVERY).await,
        }
    }
}

async fn planner_answers(bus: &Bus) -> bool {
    status_until(bus, |_| true).await
}

async fn host_alive(bus: &Bus) -> bool {
    status_until(bus, |hosts| !hosts.is_empty()).await
}

/// Ask for the status until `ok(hosts alive)` holds, for up to [`PLANNER_WAIT`].
async fn status_until(bus: &Bus, ok: impl Fn(&[String]) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + PLANNER_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(StatusReply::Ok { hosts, .. }) = client::status(bus, None).await {
            if ok(&hosts) {
                return true;
            }
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
    false
}

/// The two commands a user can type once everything is up.
pub fn next_steps(plan: &Plan, service: &str) -> String {
    let nats = if plan.nats_url == DEFAULT_NATS_URL {
        String::new()
    } else {
        format!(" --nats {}", plan.nats_url)
    };
    format!(
        "\nMentat is up. In another terminal:\n\
         \n  mt{nats} deploy {service} --image v1\
         \n  curl -H 'Host: {service}.localhost' http://{}/\n",
        plan.http
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_name_the_service_the_router_and_a_custom_nats_url() {
        let mut plan = Plan {
            nats_url: DEFAULT_NATS_URL.into(),
            config: "mentat.yaml".into(),
            data_dir: ".mentat".into(),
            database_url: None,
            http: "127.0.0.1:8080".into(),
            admin: std::net::SocketAddr::from(([127, 0, 0, 1], 9180)),
            nats_cluster: None,
            insecure: false,
            tls: false,
            identity: Default::default(),
        };
        let text = next_steps(&plan, "web");
        assert!(text.contains("\n  mt deploy web --image v1\n"), "{text}");
        assert!(
            text.contains("curl -H 'Host: web.localhost' http://127.0.0.1:8080/"),
            "{text}"
        );
        plan.nats_url = "nats://127.0.0.1:5222".into();
        assert!(next_steps(&plan, "web").contains("mt --nats nats://127.0.0.1:5222 deploy web"));
    }
}
