//! The supervisor: the single owner of this host's replicas. It carries out
//! intents, turns watcher reports into facts, keeps the state file in step,
//! and adopts the replicas a previous executor left behind.
//!
//! Every method runs on the executor's main task, one at a time, so there
//! are no locks. Nothing here waits for a process to stop: the watchers do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use mentat_bus::Bus;
use mentat_domain::event::{Event, ExitStatus, Fact};
use mentat_domain::limits::MAX_REASON_BYTES;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::allow::AllowList;
use crate::intents::StartIntent;
use crate::state::{Record, StateFile};
use crate::watch::{self, Exit, Proc, Watcher};
use crate::{process, Error, Result};

/// How many exits are remembered to answer a repeated stop request.
const RECENT_EXITS: usize = 1024;

/// Exit code reported when a replica's program cannot be started, as a shell does.
pub const EXIT_NOT_STARTED: i32 = 127;

/// A replica being watched.
#[derive(Debug)]
struct Running {
    service: String,
    /// A stop was requested by the planner (not by the executor's shutdown).
    requested: bool,
    watcher: Watcher,
}

/// What the supervisor needs from the executor's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This host's id.
    pub host: String,
    /// The address its replicas listen on (`--advertise-ip`).
    pub ip: std::net::IpAddr,
    /// Directory of replica logs.
    pub logs_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Replicas this host offers to run.
    pub capacity: u32,
    /// The programs this host may run (`--allow-command`).
    pub allow: AllowList,
}

/// Owner of this host's replicas.
#[derive(Debug)]
pub struct Supervisor {
    bus: Bus,
    settings: Settings,
    state: StateFile,
    running: HashMap<String, Running>,
    /// Exit facts not yet accepted by the bus, by replica. Their replicas
    /// stay in the state file until the fact is published, so that a crash
    /// in between reports them again.
    unreported: BTreeMap<String, Fact>,
    /// Facts of the last exits, to answer a stop for a replica already gone.
    recent: VecDeque<(String, Fact)>,
    exits: mpsc::Sender<Exit>,
    abandon: CancellationToken,
}

impl Supervisor {
    /// A supervisor whose watchers report on `exits`.
    pub fn new(bus: Bus, settings: Settings, state: StateFile, exits: mpsc::Sender<Exit>) -> Self {
        Self {
            bus,
            settings,
            state,
            running: HashMap::new(),
            unreported: BTreeMap::new(),
            recent: VecDeque::new(),
            exits,
            abandon: CancellationToken::new(),
        }
    }

    /// How many replicas run now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Adopt every replica of the state file that still runs, and report
    /// the others as exited (status unknown).
    pub async fn adopt_all(&mut self) {
        let records: Vec<(String, Record)> = self
            .state
            .replicas()
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        for (replica, mut record) in records {
            let span = tracing::info_span!("adopt", replica_id = %replica, service = %record.service, pid = record.pid);
            let _enter = span.enter();
            if record.is_starting() {
                let Some((pid, start_ticks)) = process::find_started(&record.token) else {
                    // Never ran: its intent was not acknowledged and comes again.
                    tracing::info!("a start left unfinished by a previous executor never ran");
                    if let Err(e) = self.state.remove(&replica) {
                        tracing::error!(error = %e, "cannot update the state file");
                    }
                    continue;
                };
                tracing::info!(
                    pid,
                    "found a replica a previous executor started but did not finish recording"
                );
                record.pid = pid;
                record.start_ticks = start_ticks;
                if let Err(e) = self.state.insert(replica.clone(), record.clone()) {
                    tracing::error!(error = %e, "cannot update the state file");
                }
            }
            if process::is_same_process_alive(record.pid, record.start_ticks) {
                tracing::info!("re-adopting a replica left by a previous executor");
                let proc = Proc::Adopted {
                    start_ticks: record.start_ticks,
                };
                self.watch(&replica, &record.service, record.pid, proc, record.stopping);
                if record.stopping {
                    self.request_stop(&replica);
                }
                let started = started_event(&replica, &self.settings.host, &record);
                if let Err(e) = self.publish(started).await {
                    tracing::warn!(error = %e, "cannot re-announce adopted replica");
                }
            } else {
                tracing::info!("replica recorded in the state file is gone");
                let status = ExitStatus {
                    code: None,
                    signal: None,
                };
                self.queue_exit(&replica, &record.service, status, record.stopping);
            }
        }
        self.flush().await;
    }

    /// Start a replica; idempotent by (service, replica id). The planner
    /// keeps ids unique across the cluster, so a start naming the id of
    /// another service's running replica is refused, not taken for it.
    pub async fn start(&mut self, intent: StartIntent) -> Result<()> {
        let replica = intent.replica.clone();
        if let Some(running) = self.running.get(&replica) {
            if running.service != intent.service {
                tracing::error!(replica_id = %replica, service = %intent.service, running_for = %running.service, "start refused: this id runs for another service here");
                return Ok(());
            }
            if let Some(record) = self.state.get(&replica) {
                tracing::info!(replica_id = %replica, "already running; reporting it again");
                let event = started_event(&replica, &self.settings.host, record);
                return self.publish(event).await;
            }
        }
        if self.unreported.contains_key(&replica) {
            // Its previous run's exit must be reported before it runs again.
            self.flush().await;
            if self.unreported.contains_key(&replica) {
                return Err(Error::Bus(mentat_bus::Error::Nats(
                    "previous exit of this replica not yet reported".into(),
                )));
            }
        }
        if self.running.len() >= self.settings.capacity as usize {
            tracing::warn!(replica_id = %replica, capacity = self.settings.capacity, "starting a replica beyond this host's capacity");
        }
        let log = self
            .settings
            .logs_dir
            .join(format!("{}.log", process::file_name_for(&replica)));
        let ip = self.settings.ip;
        let port = match process::free_port(ip) {
            Ok(port) => port,
            Err(e) => return self.not_started(&replica, &intent.service, &e).await,
        };
        let program = match self.allowed(&intent, port) {
            Ok(program) => program,
            Err(why) => return self.not_started(&replica, &intent.service, &why).await,
        };
        // Recorded before the spawn: an executor killed between the spawn
        // and the pid being recorded leaves this record, and the next one
        // finds the process by its token instead of starting a second one.
        let mut record = Record {
            service: intent.service.clone(),
            pid: 0,
            start_ticks: 0,
            addr: std::net::SocketAddr::new(ip, port).to_string(),
            health: intent.health,
            image: intent.image,
            log,
            started_at_ms: mentat_bus::now_ms(),
            stopping: false,
            token: format!("{}/{replica}/{}", self.settings.host, mentat_bus::new_id()),
        };
        self.state.insert(replica.clone(), record.clone())?;
        let spawned = match process::spawn(
            &intent.run,
            &record.image,
            process::Listen { ip, port },
            &record.token,
            &record.log,
            program.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                if let Err(e) = self.state.remove(&replica) {
                    tracing::error!(replica_id = %replica, error = %e, "cannot update the state file");
                }
                return self.not_started(&replica, &intent.service, &e).await;
            }
        };
        record.pid = spawned.pid;
        record.start_ticks = spawned.start_ticks;
        tracing::info!(replica_id = %replica, service = %record.service, pid = record.pid, addr = %record.addr, deployment_id = ?intent.deployment_id, "replica started");
        metrics::counter!(crate::metrics::STARTS_TOTAL).increment(1);
        if self.recent.iter().any(|(id, _)| *id == replica) {
            metrics::counter!(crate::metrics::RESTARTS_TOTAL).increment(1);
        }
        let event = started_event(&replica, &self.settings.host, &record);
        let pid = record.pid;
        if let Err(e) = self.state.insert(replica.clone(), record) {
            // Unrecorded, the process could outlive us unnoticed: stop it.
            let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.state.remove(&replica);
            return Err(e);
        }
        self.watch(
            &replica,
            &intent.service,
            pid,
            Proc::Child(spawned.child),
            false,
        );
        self.publish(event).await
    }

    /// The real path to start the intent's program by, when the host has
    /// an allow-list (`None`: no list, started as written); why it may not
    /// run otherwise.
    fn allowed(
        &self,
        intent: &StartIntent,
        port: u16,
    ) -> std::result::Result<Option<PathBuf>, String> {
        if self.settings.allow.allows_all() {
            return Ok(None);
        }
        let first = intent.run.command.first().map(String::as_str).unwrap_or("");
        let program = process::substitute(first, &intent.image, self.settings.ip, port);
        let path_var = intent.run.env.get("PATH").map(String::as_str);
        self.settings.allow.check(&program, path_var).map(Some)
    }

    /// A replica whose program could not be started: reported as exited
    /// with [`EXIT_NOT_STARTED`], as a shell would, and why.
    async fn not_started(
        &mut self,
        replica: &str,
        service: &str,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<()> {
        tracing::error!(replica_id = %replica, service, error = %error, "replica did not start");
        metrics::counter!(crate::metrics::START_FAILURES_TOTAL).increment(1);
        let status = ExitStatus {
            code: Some(EXIT_NOT_STARTED),
            signal: None,
        };
        let mut reason = error.to_string();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        self.queue_exit_because(replica, service, status, false, Some(reason));
        self.flush().await;
        Ok(())
    }

    /// Stop a replica: SIGTERM now, SIGKILL after the grace, exit reported by
    /// its watcher. A replica that is not running is answered with its last
    /// exit when it is remembered, and otherwise ignored; so is a stop that
    /// names another service than the one the replica runs for.
    pub async fn stop(&mut self, replica: &str, service: &str, reason: &str) -> Result<()> {
        if let Some(running) = self.running.get_mut(replica) {
            if running.service != service {
                tracing::error!(replica_id = %replica, service, running_for = %running.service, "stop refused: this id runs for another service here");
                return Ok(());
            }
            tracing::info!(replica_id = %replica, service, reason, "stop requested");
            running.requested = true;
            self.state.mark_stopping(replica)?;
            self.request_stop(replica);
            return Ok(());
        }
        if self.unreported.contains_key(replica) {
            return Ok(()); // its exit is on its way
        }
        let last = self
            .recent
            .iter()
            .rev()
            .find(|(id, _)| id == replica)
            .map(|(_, fact)| fact.clone());
        match last {
            Some(fact) => {
                tracing::info!(replica_id = %replica, service, "already exited; reporting the exit again");
                self.bus.publish_fact(&fact).await?;
            }
            None => {
                tracing::info!(replica_id = %replica, service, "stop for a replica not running here; nothing to do")
            }
        }
        Ok(())
    }

    /// A watcher reported an exit: report it and forget the replica.
    pub async fn exited(&mut self, exit: Exit) {
        let Some(running) = self.running.remove(&exit.replica) else {
            return;
        };
        let requested = if running.requested { "true" } else { "false" };
        metrics::counter!(crate::metrics::EXITS_TOTAL, "requested" => requested).increment(1);
        self.queue_exit(
            &exit.replica,
            &running.service,
            exit.status,
            running.requested,
        );
        self.flush().await;
    }

    /// Publish every exit fact still waiting; those the bus refuses stay for
    /// the next call.
    pub async fn flush(&mut self) {
        while let Some((replica, fact)) = self.unreported.pop_first() {
            if let Err(e) = self.bus.publish_fact(&fact).await {
                tracing::warn!(replica_id = %replica, error = %e, "cannot report exit yet; will retry");
                self.unreported.insert(replica, fact);
                return;
            }
            if let Err(e) = self.state.remove(&replica) {
                tracing::error!(replica_id = %replica, error = %e, "cannot update the state file");
            }
            if self.recent.len() >= RECENT_EXITS {
                self.recent.pop_front();
            }
            self.recent.push_back((replica, fact));
        }
    }

    /// True when exit facts are still waiting for the bus.
    pub fn has_unreported(&self) -> bool {
        !self.unreported.is_empty()
    }

    /// Publish this host's heartbeat on core NATS.
    pub async fn heartbeat(&self) -> Result<()> {
        metrics::gauge!(crate::metrics::REPLICAS).set(self.running.len() as f64);
        metrics::gauge!(crate::metrics::CAPACITY).set(self.settings.capacity as f64);
        let beat = mentat_domain::event::HostHeartbeat {
            host: self.settings.host.clone(),
            capacity: self.settings.capacity,
            running: u32::try_from(self.running.len()).unwrap_or(u32::MAX),
            at_ms: mentat_bus::now_ms(),
            ip: Some(self.settings.ip.to_string()),
        };
        let subject = mentat_bus::subject::heartbeat(&self.settings.host);
        Ok(self.bus.publish(subject, &beat).await?)
    }

    /// Graceful shutdown: stop every replica (each gets the grace, then
    /// SIGKILL), wait for their exits and report them, all within
    /// `deadline`. Exits not published by then stay in the state file and
    /// are reported by the next executor.
    pub async fn stop_all(&mut self, exits: &mut mpsc::Receiver<Exit>, deadline: Instant) {
        tracing::info!(
            replicas = self.running.len(),
            "stopping every replica before exiting"
        );
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for replica in &ids {
            self.request_stop(replica);
        }
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some(exit)) => self.exited(exit).await,
                Ok(None) | Err(_) => break,
            }
        }
        while self.has_unreported() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.flush().await;
        }
        if !self.running.is_empty() || self.has_unreported() {
            tracing::error!(
                running = self.running.len(),
                unreported = self.unreported.len(),
                "shutdown deadline passed; the next executor will report the rest"
            );
        }
    }

    /// Crash-like shutdown: stop watching and leave every process running
    /// for the next executor to adopt.
    pub fn abandon(self) {
        tracing::info!(
            replicas = self.running.len(),
            "leaving replicas running for the next executor"
        );
        self.abandon.cancel();
    }

    fn watch(&mut self, replica: &str, service: &str, pid: u32, proc: Proc, requested: bool) {
        let watcher = watch::spawn(
            replica.to_owned(),
            pid,
            proc,
            self.settings.grace,
            self.exits.clone(),
            self.abandon.child_token(),
        );
        self.running.insert(
            replica.to_owned(),
            Running {
                service: service.to_owned(),
                requested,
                watcher,
            },
        );
    }

    fn request_stop(&self, replica: &str) {
        if let Some(running) = self.running.get(replica) {
            running.watcher.stop.cancel();
        }
    }

    fn queue_exit(&mut self, replica: &str, service: &str, status: ExitStatus, requested: bool) {
        self.queue_exit_because(replica, service, status, requested, None);
    }

    fn queue_exit_because(
        &mut self,
        replica: &str,
        service: &str,
        status: ExitStatus,
        requested: bool,
        reason: Option<String>,
    ) {
        let event = Event::ReplicaExited {
            replica: replica.to_owned(),
            service: service.to_owned(),
            host: self.settings.host.clone(),
            status,
            requested,
            reason,
        };
        self.unreported.insert(replica.to_owned(), fact(event));
    }

    async fn publish(&self, event: Event) -> Result<()> {
        Ok(self.bus.publish_fact(&fact(event)).await?)
    }
}

fn fact(event: Event) -> Fact {
    Fact {
        id: mentat_bus::new_id(),
        observed_at_ms: mentat_bus::now_ms(),
        event,
    }
}

fn started_event(replica: &str, host: &str, record: &Record) -> Event {
    Event::ReplicaStarted {
        replica: replica.to_owned(),
        service: record.service.clone(),
        host: host.to_owned(),
        pid: record.pid,
        addr: record.addr.clone(),
        health: record.health.clone(),
    }
}
