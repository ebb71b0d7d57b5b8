//! The planner's main loop: one input at a time, decisions from the pure
//! core, events appended before anything is acknowledged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::panic::{catch_unwind, AssertUnwindSafe};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, AckKind};
use async_nats::Subscriber;
use futures::StreamExt;
use mentat_bus::consumer::{ack, Durable, DurableSpec};
use mentat_bus::{codec, new_id, now_ms, streams, subject, Bus, Encoding};
use mentat_domain::audit::{Anchor, AnchorReply, AnchorRequest};
use mentat_domain::command::{Command, PlannersStatus, RejectKind, Rejection, Reply};
use mentat_domain::event::RELEASES_STREAM;
use mentat_domain::event::{Event, HostHeartbeat, Meta, RouterHeartbeat, ROLLOUTS_STREAM};
use mentat_domain::planner::{self, Decision, Settings};
use mentat_domain::replay::{Decided, DecidedBy};
use mentat_domain::security::{self, SignedBy};
use mentat_domain::Fact;
use mentat_domain::{release, rollout};
use mentat_runtime::Shutdown;
use mentat_store::CommandRecord;

use crate::audit::{trust, Audit, Checkpoint};
use crate::error::{Error, Result};
use crate::intake::{self, Pairing};
use crate::log::{panic_message, Log};
use crate::roster::{self, Roster};
use crate::{queries, Config};

/// Upper bound on decisions taken in a row for one service before yielding;
/// reaching it means a decision does not change the state (a bug): the
/// service is marked broken.
const MAX_STEPS: usize = 500;

/// How many times a command or fact is decided again after its stream moved.
const MAX_REDECIDE: usize = 3;

/// The first and the longest pause between probes of an unreachable log.
const PROBE_FIRST: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(1);

/// How long JetStream waits for the planner to acknowledge a command or a
/// fact before delivering it again. Short, because the consumers deliver one
/// at a time: a leader that died or froze holding a message holds up every
/// later one for this long, until a standby that took over gets it.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// How often a message held while the log is unreachable is reported to
/// JetStream as in progress, well inside [`ACK_WAIT`].
const HOLD_PROGRESS: Duration = Duration::from_secs(1);

/// A JetStream message taken but not yet carried out.
enum Held {
    Command(jetstream::Message),
    Fact(jetstream::Message),
}

impl Held {
    fn message(&self) -> &jetstream::Message {
        match self {
            Held::Command(m) | Held::Fact(m) => m,
        }
    }
}

/// Since when the log has been unreachable, and when to look again.
struct Outage {
    since_ms: i64,
    since: Instant,
    backoff: Duration,
    next_probe: Instant,
    last_progress: Instant,
}

/// The planner's state and connections.
pub struct Engine {
    config: Config,
    settings: Settings,
    bus: Bus,
    log: Log,
    pairing: Pairing,
    heartbeats: HashMap<String, Instant>,
    /// The last heartbeat of each router, and when it came.
    router_beats: HashMap<String, (Instant, RouterHeartbeat)>,
    started: Instant,
    held: Option<Held>,
    outage: Option<Outage>,
    roster: Roster,
    last_renewal: Instant,
    audit: Audit,
    /// The log checked up to here (at start, then before every anchor).
    checkpoint: Checkpoint,
    /// When to sign the next anchor, and the position of the last one.
    next_anchor: Instant,
    last_anchored: Option<i64>,
    /// Set when deciding for the rollout panicked or never converged.
    rollout_broken: bool,
    /// A release decision panicked: the releases react no more until a restart.
    releases_broken: bool,
    /// Facts dropped since start because their source may not report them.
    refused_facts: u64,
    /// The position of the input being acted on (a fact, a command's
    /// decision, a host or router observed, the election at start), the
    /// cause recorded with each decision it leads to; none for a deadline.
    cause: Option<i64>,
}

impl Engine {
    /// An engine over a replayed log.
    pub fn new(
        config: Config,
        bus: Bus,
        log: Log,
        roster: Roster,
        audit: Audit,
        checkpoint: Checkpoint,
    ) -> Self {
        let settings = config.settings();
        Engine {
            config,
            settings,
            bus,
            log,
            pairing: Pairing::default(),
            heartbeats: HashMap::new(),
            router_beats: HashMap::new(),
            started: Instant::now(),
            held: None,
            outage: None,
            roster,
            last_renewal: Instant::now(),
            audit,
            checkpoint,
            // The first anchor right away: every start is anchored.
            next_anchor: Instant::now(),
            last_anchored: None,
            rollout_broken: false,
            releases_broken: false,
            refused_facts: 0,
            cause: None,
        }
    }

    /// The metadata of a decision taken at `at_ms` by `by`, caused by the
    /// input being acted on.
    fn decided(&self, at_ms: i64, by: DecidedBy) -> Option<Decided> {
        Some(Decided {
            at_ms,
            cause: self.cause,
            events: 0,
            by,
        })
    }

    /// The input just recorded (the last event of the log) causes what
    /// follows.
    fn caused_by_head(&mut self) {
        self.cause = Some(self.log.world.position);
    }

    /// Take inputs until `shutdown` fires. Returns an error only for what
    /// the planner cannot go on from ([`Error::Fatal`]); an unreachable log
    /// is waited for.
    ///
    /// `queries` is the subscription to `mentat.query.>` it answered on
    /// while standing by.
    pub async fn run(mut self, mut queries: Subscriber, shutdown: Shutdown) -> Result<()> {
        let client = self.bus.client.clone();
        let mut requests = client
            .queue_subscribe(subject::CMD_ALL, "mentat-planner".into())
            .await?;
        let mut heartbeats = client.subscribe(subject::HEARTBEAT_ALL).await?;
        let mut router_beats = client.subscribe(subject::ROUTER_HEARTBEAT_ALL).await?;
        let mut planners = client.subscribe(roster::HEARTBEAT_ALL).await?;
        // Only the leader signs anchors, so only it listens here.
        let mut anchor_requests = client.subscribe(subject::AUDIT_ANCHOR).await?;
        let mut announce = tokio::time::interval(roster::EVERY);
        let mut commands = self.durable(streams::COMMANDS, "planner-commands").await?;
        let mut facts = self.durable(streams::FACTS, "planner-facts").await?;
        // Whatever was in flight when the planner stopped carries on now,
        // caused by this planner's election.
        self.caused_by_head();
        let resumed = self.react_all().await;
        self.settle(resumed)?;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let taking = self.outage.is_none() && self.held.is_none();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(msg) = requests.next() => {
                    if let Some((m, reply)) = self.pairing.request(msg) {
                        self.send_reply(&m, &reply).await;
                    }
                }
                msg = commands.next(), if taking => self.held = Some(Held::Command(msg)),
                msg = facts.next(), if taking => self.held = Some(Held::Fact(msg)),
                Some(msg) = heartbeats.next() => {
                    let r = self.on_heartbeat(&msg).await;
                    self.settle(r)?;
                }
                Some(msg) = router_beats.next() => {
                    let r = self.on_router_heartbeat(&msg).await;
                    self.settle(r)?;
                }
                Some(msg) = queries.next() => self.on_query(&msg).await,
                Some(msg) = planners.next() => self.roster.heard(&msg),
                Some(msg) = anchor_requests.next() => {
                    let r = self.on_anchor_request(&msg).await;
                    self.settle(r)?;
                }
                _ = announce.tick() => {
                    self.roster.announce(&self.bus, self.log.store().epoch()).await;
                    metrics::gauge!(crate::metrics::LOG_POSITION).set(self.log.world.position as f64);
                }
                _ = tick.tick() => {
                    let r = self.on_tick().await;
                    self.settle(r)?;
                }
            }
            self.carry_out_held().await?;
        }
        tracing::info!("planner stopping");
        // Hand over at once rather than after the lease runs out.
        if let Some(epoch) = self.log.store().epoch() {
            if let Err(e) = self.log.store().resign(epoch).await {
                tracing::warn!(error = %e, "could not give up the lease; a standby takes over when it runs out");
            }
        }
        Ok(())
    }

    /// What the main loop does with a handler's error: an unreachable log
    /// starts (or continues) an outage; a fatal error ends the planner.
    /// Conflicts and duplicates are handled where they happen.
    fn settle(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(Error::Unavailable(e)) => {
                self.outage_begins(&e);
                Ok(())
            }
            Err(e @ (Error::Fatal(_) | Error::LogBroken { .. } | Error::StaleEpoch { .. })) => {
                Err(e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "left to the next decision");
                Ok(())
            }
        }
    }

    fn outage_begins(&mut self, error: &str) {
        if self.outage.is_some() {
            return;
        }
        tracing::error!(
            error,
            "the log is unreachable; holding commands and facts in JetStream"
        );
        let now = Instant::now();
        self.outage = Some(Outage {
            since_ms: now_ms(),
            since: now,
            backoff: PROBE_FIRST,
            next_probe: now + PROBE_FIRST,
            last_progress: now,
        });
    }

    /// Carry out the message taken from JetStream, unless the log is
    /// unreachable: then it stays held, unacknowledged, and nothing after
    /// it is taken (the consumers deliver one at a time).
    async fn carry_out_held(&mut self) -> Result<()> {
        if self.outage.is_some() {
            return Ok(());
        }
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let msg = held.message();
        let encoding = Encoding::of(msg.headers.as_ref());
        let result = match &held {
            Held::Command(m) => self.on_command(&m.subject, &m.payload, encoding).await,
            Held::Fact(m) => self.on_fact(&m.subject, &m.payload, encoding).await,
        };
        match result {
            Err(Error::Unavailable(e)) => {
                self.outage_begins(&e);
                self.held = Some(held);
                Ok(())
            }
            // Not acknowledged: JetStream hands it to the next planner.
            Err(e @ (Error::Fatal(_) | Error::LogBroken { .. } | Error::StaleEpoch { .. })) => {
                Err(e)
            }
            _ => {
                ack(held.message(), AckKind::Ack).await;
                Ok(())
            }
        }
    }

    async fn durable(&self, stream: &'static str, name: &str) -> Result<Durable> {
        let spec = DurableSpec {
            stream,
            name: name.to_owned(),
            filters: Vec::new(),
            deliver: DeliverPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: 1,
        };
        Ok(Durable::open(&self.bus, spec).await?)
    }

    /// Sign an anchor when one is due and the log moved since the last.
    async fn anchor_when_due(&mut self) -> Result<()> {
        if Instant::now() < self.next_anchor || self.outage.is_some() {
            return Ok(());
        }
        self.next_anchor = Instant::now() + Duration::from_secs(self.config.anchor_every_secs);
        let head = self.log.world.position;
        if self.last_anchored == Some(head) {
            return Ok(());
        }
        self.sign_anchor().await.map(drop)
    }

    /// Check the log since the last checkpoint and sign an anchor of its
    /// head. A break stops the planner ([`Error::LogBroken`]).
    async fn sign_anchor(&mut self) -> Result<(Anchor, Vec<String>)> {
        let signed = trust::sign_anchor(
            self.log.store(),
            &self.bus,
            &self.audit,
            &mut self.checkpoint,
            now_ms(),
        )
        .await?;
        self.last_anchored = Some(signed.0.position);
        Ok(signed)
    }

    /// `mt audit anchor`: sign one now and answer with it.
    async fn on_anchor_request(&mut self, msg: &async_nats::Message) -> Result<()> {
        let encoding = Encoding::of(msg.headers.as_ref());
        if let Err(e) = codec::decode::<AnchorRequest>(&msg.payload, encoding, "AnchorRequest") {
            let reply = AnchorReply::Rejected {
                kind: RejectKind::Invalid,
                reason: e.to_string(),
            };
            self.send_reply(msg, &reply).await;
            return Ok(());
        }
        let (reply, result) = match self.sign_anchor().await {
            Ok((anchor, failed))
                if failed.len() < 1 + usize::from(self.audit.anchor_file.is_some()) =>
            {
                (AnchorReply::Ok { anchor }, Ok(()))
            }
            Ok((_, failed)) => (
                AnchorReply::Rejected {
                    kind: RejectKind::Unavailable,
                    reason: format!(
                        "the anchor could not be kept anywhere: {}",
                        failed.join("; ")
                    ),
                },
                Ok(()),
            ),
            Err(e) => {
                let kind = match e {
                    Error::Unavailable(_) => RejectKind::Unavailable,
                    _ => RejectKind::ServiceBroken,
                };
                let reply = AnchorReply::Rejected {
                    kind,
                    reason: e.to_string(),
                };
                (reply, Err(e))
            }
        };
        self.send_reply(msg, &reply).await;
        result
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
    ) -> Result<()> {
        let authorised = intake::decode(subject, payload, encoding)
            .map_err(|rejection| {
                tracing::warn!(subject, %rejection, "rejected a malformed command");
                rejection
            })
            .and_then(|command| {
                let trust = security::Trust {
                    current: self.log.world.security.as_ref(),
                    admin_keys: &self.config.admin_keys,
                };
                intake::authorise(trust, command, payload, encoding, now_ms())
            });
        let (verb, reply) = match authorised {
            Ok((command, signed)) => (
                command.verb(),
                self.execute(&command, signed.as_ref()).await?,
            ),
            Err(rejection) => ("unknown", Reply::from(rejection)),
        };
        let result = match &reply {
            Reply::Accepted { .. } => "accepted",
            Reply::Rejected { kind, .. } => kind.as_str(),
        };
        metrics::counter!(crate::metrics::COMMANDS_TOTAL, "verb" => verb, "result" => result)
            .increment(1);
        if let Some((request, reply)) = self.pairing.handled(subject, payload, reply) {
            self.send_reply(&request, &reply).await;
        }
        Ok(())
    }

    /// Decide about `command` and record the decision with it, deciding
    /// again when a stream moved meanwhile.
    async fn execute(&mut self, command: &Command, signed: Option<&SignedBy>) -> Result<Reply> {
        if let Some(id) = command.command_id() {
            if let Some(first) = self.log.store().command_outcome(id).await? {
                return Ok(first_reply(&first));
            }
        }
        for _ in 0..MAX_REDECIDE {
            match self.decide_and_record(command, signed).await {
                Err(Error::Conflict { stream, detail }) => {
                    tracing::info!(%stream, %detail, "deciding again on the stream as it is now");
                    self.log.catch_up().await?;
                }
                other => return other,
            }
        }
        Ok(Reply::rejected(
            RejectKind::Unavailable,
            "the log kept changing while the command was decided; retry it",
        ))
    }

    async fn decide_and_record(
        &mut self,
        command: &Command,
        signed: Option<&SignedBy>,
    ) -> Result<Reply> {
        let deployment_id = new_id();
        let now = now_ms();
        let (actor, reason) = command.actor_reason();
        let world = &self.log.world;
        let decided = catch_unwind(AssertUnwindSafe(|| {
            planner::handle(world, command, &deployment_id, now)
        }));
        let decision = match decided {
            Ok(decision) => decision,
            Err(panic) => {
                let error = format!("deciding `{}`: {}", command.verb(), panic_message(&panic));
                let position = self.log.world.position;
                for service in command.services() {
                    self.log.mark_broken(service, position, error.clone());
                }
                Decision::Reject(Rejection::new(RejectKind::ServiceBroken, error))
            }
        };
        let (reply, appends) = match decision {
            Decision::Reject(rejection) => (Reply::from(rejection), Vec::new()),
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
        let outcome = serde_json::to_string(&reply).map_err(|e| Error::fatal("a reply", e))?;
        let record = command.command_id().map(|id| CommandRecord {
            id: id.to_owned(),
            outcome,
        });
        let meta = Meta {
            actor: actor.map(str::to_owned),
            reason: reason.map(str::to_owned),
            correlation_id: match &reply {
                Reply::Accepted { deployment_id, .. } => deployment_id.clone(),
                Reply::Rejected { .. } => None,
            },
            causation_id: command.command_id().map(str::to_owned),
            epoch: None,
            signed: signed.cloned(),
            decided: Some(Decided {
                at_ms: now,
                cause: None,
                events: 0,
                by: DecidedBy::Command {
                    command: Box::new(command.clone()),
                    id: deployment_id.clone(),
                },
            }),
        };
        let touched: Vec<String> = appends.iter().map(|a| a.stream.clone()).collect();
        let count: i64 = appends.iter().map(|a| a.events.len() as i64).sum();
        let batch = appends
            .into_iter()
            .map(|a| {
                (
                    a.stream,
                    a.events.into_iter().map(|e| (new_id(), e)).collect(),
                )
            })
            .collect();
        // One decision, one transaction: every stream and the command record.
        if let Some(first) = self.log.append_batch(batch, &meta, record, now).await? {
            return Ok(first_reply(&first));
        }
        // What follows is caused by the decision's first event.
        self.cause = Some(self.log.world.position - count + 1);
        for service in touched {
            // An operator acted on a broken service: decide about it again.
            self.log.broken.remove(&service);
            // The command is recorded: what follows from it is decided
            // again by the next tick, whatever happens to this reaction.
            let reacted = self.react(&service).await;
            self.settle(reacted)?;
        }
        let reacted = self.react_rollout().await;
        self.settle(reacted)?;
        Ok(reply)
    }

    /// Record a fact from another service with its own id, then react.
    async fn on_fact(&mut self, subject: &str, payload: &[u8], encoding: Encoding) -> Result<()> {
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
        if let Some(why) = refuse_fact(&self.log.world, subject, &stream, &fact) {
            self.refused_facts += 1;
            metrics::counter!(crate::metrics::FACTS_REFUSED_TOTAL).increment(1);
            tracing::warn!(
                %subject,
                fact_id = %fact.id,
                refused_facts = self.refused_facts,
                reason = %why,
                "dropped a fact from the wrong source"
            );
            return Ok(());
        }
        tracing::debug!(kind = fact.event.type_name(), %stream, "fact");
        let meta = Meta {
            causation_id: Some(fact.id.clone()),
            ..Meta::default()
        };
        let record = CommandRecord {
            id: fact.id.clone(),
            outcome: "fact".into(),
        };
        for _ in 0..MAX_REDECIDE {
            let events = vec![(fact.id.clone(), fact.event.clone())];
            match self
                .log
                .append(&stream, events, &meta, Some(record.clone()), now_ms())
                .await
            {
                Ok(None) => {
                    self.caused_by_head();
                    let reacted = self.react(&stream).await;
                    self.settle(reacted)?;
                    let reacted = self.react_rollout().await;
                    return self.settle(reacted);
                }
                Ok(Some(_)) => return Ok(()),
                Err(Error::Duplicate { id }) => {
                    tracing::warn!(%id, %stream, "a fact reused the id of an event in the log; acknowledged, not recorded");
                    return Ok(());
                }
                Err(Error::Conflict { .. }) => self.log.catch_up().await?,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            stream,
            detail: "kept moving while a fact was recorded".into(),
        })
    }

    async fn on_heartbeat(&mut self, msg: &async_nats::Message) -> Result<()> {
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
        let subject_host = msg.subject.as_str().rsplit('.').next().unwrap_or("");
        if let Err(field) = mentat_domain::limits::check_host_heartbeat(&beat, subject_host) {
            tracing::warn!(host = %beat.host.chars().take(64).collect::<String>(), field, "dropped a host heartbeat out of bounds");
            return Ok(());
        }
        self.heartbeats.insert(beat.host.clone(), Instant::now());
        let known = self.log.world.hosts.get(&beat.host);
        let same = known.is_some_and(|h| h.live && h.capacity == beat.capacity);
        let suspect = known.is_some_and(|h| h.suspect_since_ms.is_some());
        if self.outage.is_some() || (same && !suspect) {
            return Ok(());
        }
        let event = if same {
            tracing::info!(host = %beat.host, "suspect host heard again");
            Event::HostSuspicionCleared { host: beat.host }
        } else {
            tracing::info!(host = %beat.host, capacity = beat.capacity, "host joined");
            Event::HostJoined {
                host: beat.host,
                capacity: beat.capacity,
            }
        };
        self.record_member(event).await?;
        self.react_cluster().await?;
        self.react_all().await
    }

    /// A router's heartbeat: kept for `mt status` (the route versions it
    /// applied), and a `RouterJoined` recorded when the router is new, came
    /// back or moved.
    async fn on_router_heartbeat(&mut self, msg: &async_nats::Message) -> Result<()> {
        let beat: RouterHeartbeat = match codec::decode(
            &msg.payload,
            Encoding::of(msg.headers.as_ref()),
            "RouterHeartbeat",
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dropped an undecodable router heartbeat");
                return Ok(());
            }
        };
        if let Err(field) = mentat_domain::limits::check_router_heartbeat(&beat) {
            tracing::warn!(router = %beat.router.chars().take(64).collect::<String>(), field, "dropped a router heartbeat out of bounds");
            return Ok(());
        }
        let router = beat.router.clone();
        let known = self
            .log
            .world
            .routers
            .get(&router)
            .is_some_and(|r| r.live && r.host == beat.host && r.listen == beat.listen);
        let event = Event::RouterJoined {
            router: router.clone(),
            host: beat.host.clone(),
            listen: beat.listen.clone(),
        };
        self.router_beats
            .insert(router.clone(), (Instant::now(), beat));
        if self.outage.is_some() || known {
            return Ok(());
        }
        tracing::info!(%router, "router joined");
        self.record_member(event).await?;
        self.react_all().await
    }

    /// Append a membership event (a host or a router joined or lost) to
    /// its stream.
    async fn record_member(&mut self, event: Event) -> Result<()> {
        let Some(stream) = event.stream() else {
            return Ok(());
        };
        let events = vec![(new_id(), event)];
        match self
            .log
            .append(&stream, events, &Meta::default(), None, now_ms())
            .await
        {
            Ok(_) => {
                self.caused_by_head();
                Ok(())
            }
            // Decided on a stale view: the next heartbeat or tick decides again.
            Err(Error::Conflict { .. } | Error::Duplicate { .. }) => self.log.catch_up().await,
            Err(e) => Err(e),
        }
    }

    async fn on_query(&mut self, msg: &async_nats::Message) {
        let on = queries::Answering {
            log: &self.log,
            unavailable_since_ms: self.outage.as_ref().map(|o| o.since_ms),
            planners: PlannersStatus {
                refused_facts: self.refused_facts,
                ..self.roster.status(&self.log.world)
            },
            applied: self
                .router_beats
                .iter()
                .map(|(id, (_, beat))| (id.clone(), &beat.applied))
                .collect(),
            audit: &self.audit,
        };
        queries::answer(&self.bus, msg, on).await;
    }

    /// While the log is unreachable: probe it with a growing pause, and
    /// keep the held message's lease. When it answers again: fold what was
    /// committed meanwhile and carry on.
    async fn probe_log(&mut self) -> Result<()> {
        let Some(outage) = self.outage.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now.duration_since(outage.last_progress) >= HOLD_PROGRESS {
            outage.last_progress = now;
            if let Some(held) = &self.held {
                ack(held.message(), AckKind::Progress).await;
            }
        }
        let Some(outage) = self.outage.as_mut() else {
            return Ok(());
        };
        if now < outage.next_probe {
            return Ok(());
        }
        match self.log.catch_up().await {
            Ok(()) => {
                self.cause = None;
                let down = self.outage.take().map(|o| o.since.elapsed());
                tracing::info!(?down, "the log is reachable again; carrying on");
                self.heartbeats.clear();
                self.started = Instant::now();
                self.react_all().await
            }
            Err(Error::Unavailable(e)) => {
                if let Some(outage) = self.outage.as_mut() {
                    outage.backoff = (outage.backoff * 2).min(PROBE_MAX);
                    outage.next_probe = now + outage.backoff;
                    tracing::debug!(error = %e, next_in = ?outage.backoff, "the log is still unreachable");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Keep the lease: renewed every quarter of it. A newer epoch ends
    /// this planner ([`Error::StaleEpoch`]).
    async fn renew_lease(&mut self) -> Result<()> {
        let lease = self.config.lease();
        let Some(epoch) = self.log.store().epoch() else {
            return Ok(());
        };
        if self.last_renewal.elapsed() < lease / 4 {
            return Ok(());
        }
        self.log.store().renew_lease(epoch, lease).await?;
        self.last_renewal = Instant::now();
        Ok(())
    }

    /// Timers: the lease, lost hosts, deadlines that passed, stale pairings.
    async fn on_tick(&mut self) -> Result<()> {
        self.pairing.prune();
        if self.outage.is_some() {
            return self.probe_log().await;
        }
        self.renew_lease().await?;
        self.anchor_when_due().await?;
        self.judge_hosts().await?;
        let timeout = Duration::from_secs(self.config.router_timeout_secs);
        let lost: Vec<String> = self
            .log
            .world
            .routers
            .iter()
            .filter(|(_, r)| r.live)
            .filter(|(id, _)| {
                let seen = self
                    .router_beats
                    .get(*id)
                    .map_or(self.started, |(at, _)| *at);
                seen.elapsed() > timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !lost.is_empty() {
            for router in lost {
                tracing::warn!(%router, "router lost: no heartbeat");
                let event = Event::RouterLost {
                    reason: format!("no heartbeat for {}s", timeout.as_secs()),
                    router,
                };
                self.record_member(event).await?;
            }
            // Drains that waited for it may be over.
            self.react_all().await?;
        }
        // What a deadline decides is caused by the time alone.
        self.cause = None;
        let now = now_ms();
        let due: Vec<String> = self
            .log
            .world
            .services
            .keys()
            .filter(|s| !self.log.broken.contains_key(*s))
            .filter(|s| {
                planner::next_deadline(&self.log.world, s, self.settings).is_some_and(|d| d <= now)
            })
            .cloned()
            .collect();
        for service in due {
            self.react(&service).await?;
        }
        self.react_rollout().await
    }

    /// Hosts silent for the cluster's `suspect_after_secs` are suspected,
    /// for `lost_after_secs` lost (suspected first, so that a mass loss is
    /// seen whatever the timing); then the core decides what follows.
    async fn judge_hosts(&mut self) -> Result<()> {
        let cluster = self.log.world.cluster();
        let suspect_after = Duration::from_secs(cluster.suspect_after_secs);
        let lost_after = Duration::from_secs(cluster.lost_after_secs);
        let silent: Vec<(String, Duration, bool)> = self
            .log
            .world
            .hosts
            .iter()
            .filter(|(_, h)| h.live)
            .map(|(id, h)| {
                let seen = self.heartbeats.get(id).copied().unwrap_or(self.started);
                (id.clone(), seen.elapsed(), h.suspect_since_ms.is_some())
            })
            .filter(|(_, silent, _)| *silent > suspect_after)
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        let mut changed = false;
        for (host, silence, suspect) in silent {
            if !suspect {
                tracing::warn!(%host, ?silence, "host suspect: no heartbeat");
                let event = Event::HostSuspected {
                    host: host.clone(),
                    silent_ms: silence.as_millis().min(i64::MAX as u128) as i64,
                };
                self.record_member(event).await?;
                changed = true;
            }
            if silence > lost_after {
                tracing::warn!(%host, ?silence, "host lost: no heartbeat");
                let event = Event::HostLost {
                    reason: format!("no heartbeat for {}s", cluster.lost_after_secs),
                    host,
                };
                self.record_member(event).await?;
                changed = true;
            }
        }
        if changed {
            self.react_cluster().await?;
            self.react_all().await?;
        }
        Ok(())
    }

    /// Record what the core decides about the cluster as a whole (a hold
    /// on re-placement, its end).
    async fn react_cluster(&mut self) -> Result<()> {
        let mut batch: Vec<crate::log::StreamEvents> = Vec::new();
        for event in planner::react_cluster(&self.log.world) {
            tracing::warn!(kind = event.type_name(), "decided");
            let Some(stream) = event.stream() else {
                continue;
            };
            match batch.last_mut() {
                Some((last, events)) if *last == stream => events.push((new_id(), event)),
                _ => batch.push((stream, vec![(new_id(), event)])),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let meta = Meta {
            decided: self.decided(now, DecidedBy::Cluster),
            ..Meta::default()
        };
        match self.log.append_batch(batch, &meta, None, now).await {
            Ok(_) => Ok(()),
            // Decided on a stale view: the next heartbeat or tick decides again.
            Err(Error::Conflict { .. } | Error::Duplicate { .. }) => self.log.catch_up().await,
            Err(e) => Err(e),
        }
    }

    async fn react_all(&mut self) -> Result<()> {
        let services: Vec<String> = self.log.world.services.keys().cloned().collect();
        for service in services {
            self.react(&service).await?;
        }
        self.react_rollout().await
    }

    /// Take every decision the fleet rollout and the release deployments
    /// in flight have now.
    async fn react_rollout(&mut self) -> Result<()> {
        self.react_fleet_rollout().await?;
        self.react_releases().await
    }

    /// Take every decision the release deployments in flight have now
    /// ([`release::react`]): each one transaction over `_releases` and
    /// the streams of the members it moves (a switch is one transaction,
    /// every member's `RouteChanged` in it). Then those services react.
    /// A decision that panics stops the releases' reactions until the
    /// planner restarts.
    async fn react_releases(&mut self) -> Result<()> {
        if self.releases_broken {
            return Ok(());
        }
        let cause = self.cause;
        for _ in 0..MAX_STEPS {
            self.cause = cause;
            let now = now_ms();
            let (world, settings) = (&self.log.world, self.settings);
            let decided = catch_unwind(AssertUnwindSafe(|| release::react(world, now, settings)));
            let appends = match decided {
                Ok(appends) if appends.is_empty() => return Ok(()),
                Ok(appends) => appends,
                Err(panic) => {
                    tracing::error!(error = %panic_message(&panic), "deciding for a release panicked; its reactions stop until a restart");
                    self.releases_broken = true;
                    return Ok(());
                }
            };
            let correlation_id = appends[0].events.iter().find_map(release_deployment);
            let meta = Meta {
                correlation_id,
                decided: self.decided(now, DecidedBy::Release),
                ..Meta::default()
            };
            self.record_aggregate(appends, &meta, RELEASES_STREAM, now)
                .await?;
        }
        tracing::error!("the releases kept deciding without converging ({MAX_STEPS} steps)");
        self.releases_broken = true;
        Ok(())
    }

    /// Take every decision the rollout in flight has now
    /// ([`rollout::react`]): each one transaction over `_rollouts` and the
    /// streams of the targets it deploys, so that a deployment the log
    /// holds is never decided again. Then the services deployed react.
    /// A decision that panics stops the rollout's reactions until the
    /// planner restarts (an operator can still steer it).
    async fn react_fleet_rollout(&mut self) -> Result<()> {
        if self.rollout_broken {
            return Ok(());
        }
        let cause = self.cause;
        for _ in 0..MAX_STEPS {
            self.cause = cause;
            let now = now_ms();
            let world = &self.log.world;
            let mut ids = Vec::new();
            let decided = catch_unwind(AssertUnwindSafe(|| {
                rollout::react(world, now, &mut || {
                    let id = new_id();
                    ids.push(id.clone());
                    id
                })
            }));
            let appends = match decided {
                Ok(appends) => appends,
                Err(panic) => {
                    tracing::error!(error = %panic_message(&panic), "deciding for the rollout panicked; its reactions stop until a restart");
                    self.rollout_broken = true;
                    return Ok(());
                }
            };
            let Some(r) = self
                .log
                .world
                .rollouts
                .active()
                .filter(|_| !appends.is_empty())
            else {
                return Ok(());
            };
            let meta = Meta {
                actor: r.actor.clone(),
                reason: Some(format!("rollout {} of {}", r.id, r.image)),
                correlation_id: Some(r.id.clone()),
                decided: self.decided(now, DecidedBy::Rollout { ids }),
                ..Meta::default()
            };
            self.record_aggregate(appends, &meta, ROLLOUTS_STREAM, now)
                .await?;
        }
        self.cause = cause;
        tracing::error!("the rollout kept deciding without converging ({MAX_STEPS} steps)");
        self.rollout_broken = true;
        Ok(())
    }

    /// Record one decision of an aggregate (`_rollouts`, `_releases`) in
    /// one transaction over its stream and the services it moves, then let
    /// those services react. A stale view is folded and decided again by
    /// the caller's next step.
    async fn record_aggregate(
        &mut self,
        appends: Vec<planner::Append>,
        meta: &Meta,
        aggregate: &str,
        now: i64,
    ) -> Result<()> {
        let mut touched = Vec::new();
        let mut batch = Vec::new();
        let mut count = 0;
        for a in appends {
            for e in &a.events {
                tracing::info!(stream = %a.stream, kind = e.type_name(), correlation_id = ?meta.correlation_id, "decided");
            }
            if a.stream != aggregate {
                touched.push(a.stream.clone());
            }
            count += a.events.len() as i64;
            batch.push((
                a.stream,
                a.events.into_iter().map(|e| (new_id(), e)).collect(),
            ));
        }
        match self.log.append_batch(batch, meta, None, now).await {
            // What the services it touched decide next is caused by it.
            Ok(_) => self.cause = Some(self.log.world.position - count + 1),
            // Decided on a stale view: fold what is there, decide again.
            Err(Error::Conflict { .. } | Error::Duplicate { .. }) => self.log.catch_up().await?,
            Err(e) => return Err(e),
        }
        for service in touched {
            self.react(&service).await?;
        }
        Ok(())
    }

    /// Take every decision the pure core has for `service` now. A decision
    /// that panics, or that never converges, marks the service broken; the
    /// others go on.
    async fn react(&mut self, service: &str) -> Result<()> {
        if self.log.broken.contains_key(service) {
            return Ok(());
        }
        for _ in 0..MAX_STEPS {
            let now = now_ms();
            let world = &self.log.world;
            let settings = self.settings;
            let decided = catch_unwind(AssertUnwindSafe(|| {
                planner::react(world, service, now, settings)
            }));
            let events = match decided {
                Ok(events) => events,
                Err(panic) => {
                    let error = format!("deciding: {}", panic_message(&panic));
                    let position = self.log.world.position;
                    self.log.mark_broken(service, position, error);
                    return Ok(());
                }
            };
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
                decided: self.decided(now, DecidedBy::React),
                ..Meta::default()
            };
            for e in &events {
                tracing::info!(%service, kind = e.type_name(), "decided");
            }
            let events = events.into_iter().map(|e| (new_id(), e)).collect();
            match self.log.append(service, events, &meta, None, now).await {
                Ok(_) => {}
                // Decided on a stale view: fold what is there, decide again.
                Err(Error::Conflict { .. } | Error::Duplicate { .. }) => {
                    self.log.catch_up().await?
                }
                Err(e) => return Err(e),
            }
        }
        let position = self.log.world.position;
        self.log.mark_broken(
            service,
            position,
            format!(
                "the planner kept deciding for {service} without converging ({MAX_STEPS} steps)"
            ),
        );
        Ok(())
    }
}

/// The release deployment a `_releases` event is about.
fn release_deployment(event: &Event) -> Option<String> {
    match event {
        Event::ReleaseDeployStarted(s) => Some(s.deployment_id.clone()),
        Event::ReleaseSwitched(s) | Event::ReleaseDeployCompleted(s) => {
            Some(s.deployment_id.clone())
        }
        Event::ReleaseDeployFailed(f) => Some(f.deployment_id.clone()),
        _ => None,
    }
}

/// The reply recorded for a command the first time it was handled.
fn first_reply(outcome: &str) -> Reply {
    serde_json::from_str(outcome).unwrap_or_else(|_| {
        Reply::rejected(
            RejectKind::Invalid,
            "this command id was used before, by a command whose reply is not on record",
        )
    })
}

/// Why the fact that came on `subject` is not to be recorded: its subject
/// does not say who reported it, or names another service or type than
/// the fact, or the log says its source may not report it (see
/// [`mentat_domain::planner::World::refuse_fact`]).
fn refuse_fact(
    world: &mentat_domain::planner::World,
    subject: &str,
    stream: &str,
    fact: &Fact,
) -> Option<String> {
    let Some(on) = subject::parse_fact(subject) else {
        return Some("its subject does not say who reported it".into());
    };
    if on.service != stream || on.event_type != fact.event.type_name() {
        return Some(format!(
            "its subject names {} {} but it is a {} of {stream}",
            on.service,
            on.event_type,
            fact.event.type_name()
        ));
    }
    world.refuse_fact(&fact.event, on.source)
}
