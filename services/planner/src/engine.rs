//! The planner's main loop: one input at a time, decisions from the pure
//! core, events appended before anything is acknowledged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use mentat_bus::consumer::{ack, Durable, DurableSpec};
use mentat_bus::{codec, new_id, now_ms, streams, subject, Bus, Encoding};
use mentat_domain::command::{Command, HistoryQuery, RejectKind, Reply, StatusQuery};
use mentat_domain::event::{Event, HostHeartbeat, Meta, HOSTS_STREAM};
use mentat_domain::planner::{self, Decision, Settings};
use mentat_domain::Fact;
use mentat_runtime::Shutdown;
use mentat_store::CommandRecord;

use crate::intake::{self, Pairing};
use crate::log::Log;
use crate::{queries, Config};

/// Upper bound on decisions taken in a row for one service before yielding;
/// reaching it means a decision does not change the state (a bug).
const MAX_STEPS: usize = 500;

/// The planner's state and connections.
pub struct Engine {
    config: Config,
    settings: Settings,
    bus: Bus,
    log: Log,
    pairing: Pairing,
    heartbeats: HashMap<String, Instant>,
    started: Instant,
}

impl Engine {
    /// An engine over a replayed log.
    pub fn new(config: Config, bus: Bus, log: Log) -> Self {
        let settings = Settings {
            drain_timeout_ms: (config.drain_timeout_secs * 1000) as i64,
        };
        Engine {
            config,
            settings,
            bus,
            log,
            pairing: Pairing::default(),
            heartbeats: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Take inputs until `shutdown` fires.
    pub async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let client = self.bus.client.clone();
        let mut requests = client
            .queue_subscribe(subject::CMD_ALL, "mentat-planner".into())
            .await?;
        let mut queries = client
            .queue_subscribe(
                format!("{}.>", subject::QUERY_PREFIX),
                "mentat-planner".into(),
            )
            .await?;
        let mut heartbeats = client.subscribe(subject::HEARTBEAT_ALL).await?;
        let mut commands = self.durable(streams::COMMANDS, "planner-commands").await?;
        let mut facts = self.durable(streams::FACTS, "planner-facts").await?;
        // Whatever was in flight when the planner stopped carries on now.
        self.react_all().await?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(msg) = requests.next() => {
                    if let Some((m, reply)) = self.pairing.request(msg) {
                        self.send_reply(&m, &reply).await;
                    }
                }
                msg = commands.next() => {
                    self.on_command(&msg.subject, &msg.payload, Encoding::of(msg.headers.as_ref())).await?;
                    ack(&msg, AckKind::Ack).await;
                }
                msg = facts.next() => {
                    self.on_fact(&msg.payload, Encoding::of(msg.headers.as_ref())).await?;
                    ack(&msg, AckKind::Ack).await;
                }
                Some(msg) = heartbeats.next() => self.on_heartbeat(&msg).await?,
                Some(msg) = queries.next() => self.on_query(&msg).await,
                _ = tick.tick() => self.on_tick().await?,
            }
        }
        tracing::info!("planner stopping");
        Ok(())
    }

    async fn durable(&self, stream: &'static str, name: &str) -> anyhow::Result<Durable> {
        let spec = DurableSpec {
            stream,
            name: name.to_owned(),
            filters: Vec::new(),
            deliver: DeliverPolicy::All,
            ack_wait: Duration::from_secs(30),
        };
        Ok(Durable::open(&self.bus, spec).await?)
    }

    async fn send_reply<T: serde::Serialize>(&self, request: &async_nats::Message, reply: &T) {
        if let Err(e) = self.bus.reply(request, reply).await {
            tracing::warn!(error = %e, subject = %request.subject, "could not send reply");
        }
    }

    /// Handle one command from the stream, record its outcome, and answer
    /// the request waiting for it.
    async fn on_command(
        &mut self,
        subject: &str,
        payload: &[u8],
        encoding: Encoding,
    ) -> anyhow::Result<()> {
        let reply = match intake::decode(subject, payload, encoding).map_err(|r| r.reason) {
            Ok(command) => self.execute(&command).await?,
            Err(reason) => {
                tracing::warn!(subject, %reason, "rejected a malformed command");
                Reply::rejected(RejectKind::Invalid, reason)
            }
        };
        if let Some((request, reply)) = self.pairing.handled(subject, payload, reply) {
            self.send_reply(&request, &reply).await;
        }
        Ok(())
    }

    async fn execute(&mut self, command: &Command) -> anyhow::Result<Reply> {
        let command_id = command.command_id().map(str::to_owned);
        if let Some(id) = &command_id {
            if let Some(first) = self.log.store().command_outcome(id).await? {
                return Ok(serde_json::from_str(&first).unwrap_or_else(|_| {
                    Reply::rejected(RejectKind::Invalid, "duplicate command")
                }));
            }
        }
        let deployment_id = new_id();
        let now = now_ms();
        let (actor, reason) = command.actor_reason();
        let decision = planner::handle(&self.log.world, command, &deployment_id, now);
        let (reply, appends) = match decision {
            Decision::Reject(rejection) => (rejection.into(), Vec::new()),
            Decision::Accept {
                appends,
                deployment_id,
                message,
            } => (
                Reply::Accepted {
                    deployment_id,
                    message,
                },
                appends,
            ),
        };
        tracing::info!(verb = command.verb(), ?reply, "command handled");
        let outcome = serde_json::to_string(&reply)?;
        let mut record = command_id.map(|id| CommandRecord { id, outcome });
        let meta = Meta {
            actor: actor.map(str::to_owned),
            reason: reason.map(str::to_owned),
            correlation_id: match &reply {
                Reply::Accepted { deployment_id, .. } => deployment_id.clone(),
                Reply::Rejected { .. } => None,
            },
            causation_id: command.command_id().map(str::to_owned),
        };
        let mut touched = Vec::new();
        for append in appends {
            let events = append.events.into_iter().map(|e| (new_id(), e)).collect();
            // The command record rides with the first append, atomically.
            if let Some(first) = self
                .log
                .append(&append.stream, events, &meta, record.take(), now)
                .await?
            {
                return Ok(serde_json::from_str(&first).unwrap_or(reply));
            }
            touched.push(append.stream);
        }
        if let Some(record) = record {
            self.log.store().record_command(record).await?;
        }
        for service in touched {
            self.react(&service).await?;
        }
        Ok(reply)
    }

    /// Record a fact from another service with its own id, then react.
    async fn on_fact(&mut self, payload: &[u8], encoding: Encoding) -> anyhow::Result<()> {
        let fact: Fact = match codec::decode(payload, encoding, "Fact") {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "dropped an undecodable fact");
                return Ok(());
            }
        };
        let Some(stream) = fact.event.stream().filter(|_| fact.event.is_fact()) else {
            tracing::warn!(
                kind = fact.event.type_name(),
                "dropped an event that is not a fact"
            );
            return Ok(());
        };
        tracing::debug!(kind = fact.event.type_name(), %stream, "fact");
        let meta = Meta {
            causation_id: Some(fact.id.clone()),
            ..Meta::default()
        };
        let record = CommandRecord {
            id: fact.id.clone(),
            outcome: "fact".into(),
        };
        let duplicate = self
            .log
            .append(
                &stream,
                vec![(fact.id, fact.event)],
                &meta,
                Some(record),
                now_ms(),
            )
            .await?;
        if duplicate.is_none() {
            self.react(&stream).await?;
        }
        Ok(())
    }

    async fn on_heartbeat(&mut self, msg: &async_nats::Message) -> anyhow::Result<()> {
        let beat: HostHeartbeat = match codec::decode(
            &msg.payload,
            Encoding::of(msg.headers.as_ref()),
            "HostHeartbeat",
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dropped an undecodable heartbeat");
                return Ok(());
            }
        };
        self.heartbeats.insert(beat.host.clone(), Instant::now());
        let known = self.log.world.hosts.get(&beat.host);
        if known.is_some_and(|h| h.live && h.capacity == beat.capacity) {
            return Ok(());
        }
        tracing::info!(host = %beat.host, capacity = beat.capacity, "host joined");
        let event = Event::HostJoined {
            host: beat.host,
            capacity: beat.capacity,
        };
        self.record_host(event).await?;
        self.react_all().await
    }

    /// Append a host event (joined or lost) to the hosts stream.
    async fn record_host(&mut self, event: Event) -> anyhow::Result<()> {
        self.log
            .append(
                HOSTS_STREAM,
                vec![(new_id(), event)],
                &Meta::default(),
                None,
                now_ms(),
            )
            .await
            .map(drop)
    }

    async fn on_query(&mut self, msg: &async_nats::Message) {
        let encoding = Encoding::of(msg.headers.as_ref());
        match subject::last_token(&msg.subject) {
            "status" => {
                let reply =
                    match codec::decode::<StatusQuery>(&msg.payload, encoding, "StatusQuery") {
                        Ok(q) => queries::status(&self.log.world, &q),
                        Err(e) => mentat_domain::command::StatusReply::Rejected {
                            kind: RejectKind::Invalid,
                            reason: e.to_string(),
                        },
                    };
                self.send_reply(msg, &reply).await;
            }
            "history" => {
                let reply =
                    match codec::decode::<HistoryQuery>(&msg.payload, encoding, "HistoryQuery") {
                        Ok(q) => queries::history(&self.log, &q).await,
                        Err(e) => mentat_domain::command::HistoryReply::Rejected {
                            kind: RejectKind::Invalid,
                            reason: e.to_string(),
                        },
                    };
                self.send_reply(msg, &reply).await;
            }
            other => {
                let reason = format!("unknown query `{other}`; known queries: status, history");
                self.send_reply(msg, &Reply::rejected(RejectKind::Invalid, reason))
                    .await;
            }
        }
    }

    /// Timers: lost hosts, deadlines that passed, stale pairings.
    async fn on_tick(&mut self) -> anyhow::Result<()> {
        self.pairing.prune();
        let timeout = Duration::from_secs(self.config.host_timeout_secs);
        let lost: Vec<String> = self
            .log
            .world
            .hosts
            .iter()
            .filter(|(_, h)| h.live)
            .filter(|(id, _)| {
                let seen = self.heartbeats.get(*id).copied().unwrap_or(self.started);
                seen.elapsed() > timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for host in lost {
            tracing::warn!(%host, "host lost: no heartbeat");
            let event = Event::HostLost {
                reason: format!("no heartbeat for {}s", timeout.as_secs()),
                host,
            };
            self.record_host(event).await?;
        }
        let now = now_ms();
        let due: Vec<String> = self
            .log
            .world
            .services
            .keys()
            .filter(|s| {
                planner::next_deadline(&self.log.world, s, self.settings).is_some_and(|d| d <= now)
            })
            .cloned()
            .collect();
        for service in due {
            self.react(&service).await?;
        }
        Ok(())
    }

    async fn react_all(&mut self) -> anyhow::Result<()> {
        let services: Vec<String> = self.log.world.services.keys().cloned().collect();
        for service in services {
            self.react(&service).await?;
        }
        Ok(())
    }

    /// Take every decision the pure core has for `service` now.
    async fn react(&mut self, service: &str) -> anyhow::Result<()> {
        for _ in 0..MAX_STEPS {
            let now = now_ms();
            let events = planner::react(&self.log.world, service, now, self.settings);
            if events.is_empty() {
                return Ok(());
            }
            let meta = Meta {
                correlation_id: self
                    .log
                    .world
                    .services
                    .get(service)
                    .and_then(|s| s.deployment.as_ref())
                    .map(|d| d.id.clone()),
                ..Meta::default()
            };
            for e in &events {
                tracing::info!(%service, kind = e.type_name(), "decided");
            }
            let events = events.into_iter().map(|e| (new_id(), e)).collect();
            self.log.append(service, events, &meta, None, now).await?;
        }
        anyhow::bail!("planner core kept deciding for {service} without converging")
    }
}
