//! One watcher task per replica: it waits for the process to end, carries
//! out a stop (SIGTERM to the group, SIGKILL after the grace), and reports
//! the exit to the supervisor.
//!
//! A replica started by this executor is its child and is waited on
//! directly. A replica adopted after a restart is not (it was re-parented
//! when the old executor died), so it is polled through `/proc` instead, and
//! its exit status is unknown.

use std::time::Duration;

use mentat_domain::event::ExitStatus;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::process;

/// How often an adopted replica is checked.
pub const ADOPTED_POLL: Duration = Duration::from_millis(250);

/// The process a watcher follows.
#[derive(Debug)]
pub enum Proc {
    /// Started by this executor: waited on, with its real exit status.
    Child(tokio::process::Child),
    /// Adopted after a restart: polled, exit status unknown.
    Adopted {
        /// Recorded start time, to tell it from a process that reused the pid.
        start_ticks: u64,
    },
}

/// A replica's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Replica id.
    pub replica: String,
    /// How it ended.
    pub status: ExitStatus,
}

/// What the supervisor keeps to control one watcher.
#[derive(Debug)]
pub struct Watcher {
    /// Cancelled to ask for a stop.
    pub stop: CancellationToken,
    /// The task; it ends after reporting the exit, or when abandoned.
    pub task: JoinHandle<()>,
}

/// Start watching `pid`. The exit is sent on `exits` (the sender waits when
/// the channel is full). When `abandon` is cancelled the watcher returns at
/// once and leaves the process running: that is how a crash is simulated,
/// and how `--leave-replicas-running` hands replicas to the next executor.
pub fn spawn(
    replica: String,
    pid: u32,
    proc: Proc,
    grace: Duration,
    exits: mpsc::Sender<Exit>,
    abandon: CancellationToken,
) -> Watcher {
    let stop = CancellationToken::new();
    let task = tokio::spawn(watch(
        replica,
        pid,
        proc,
        grace,
        stop.clone(),
        exits,
        abandon,
    ));
    Watcher { stop, task }
}

async fn watch(
    replica: String,
    pid: u32,
    mut proc: Proc,
    grace: Duration,
    stop: CancellationToken,
    exits: mpsc::Sender<Exit>,
    abandon: CancellationToken,
) {
    // Set once SIGTERM was sent: when to send SIGKILL.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        let kill_deadline = if killed { None } else { kill_at };
        let kill_timer = async move {
            match kill_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = abandon.cancelled() => return,
            status = wait(&mut proc, pid) => break status,
            _ = stop.cancelled(), if kill_at.is_none() => {
                tracing::info!(replica_id = %replica, pid, grace_secs = grace.as_secs(), "stopping replica: SIGTERM");
                send(&replica, pid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            _ = kill_timer => {
                tracing::warn!(replica_id = %replica, pid, "replica still running after the grace: SIGKILL");
                send(&replica, pid, Signal::SIGKILL);
                killed = true;
            }
        }
    };
    // The leader is gone; whatever it left behind in its group goes too, so
    // that a replica never leaves orphans.
    send(&replica, pid, Signal::SIGKILL);
    tracing::info!(replica_id = %replica, pid, %status, "replica exited");
    // A closed channel means the executor is gone; nobody is left to tell.
    let _ = exits.send(Exit { replica, status }).await;
}

/// Wait for the process to end. Cancel-safe: it is polled again on every
/// turn of the watcher's loop.
async fn wait(proc: &mut Proc, pid: u32) -> ExitStatus {
    match proc {
        Proc::Child(child) => match child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus {
                    code: status.code(),
                    signal: status.signal(),
                }
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot wait for replica process");
                poll_until_gone(pid, process::stat(pid).map(|s| s.start_ticks)).await
            }
        },
        Proc::Adopted { start_ticks } => poll_until_gone(pid, Some(*start_ticks)).await,
    }
}

async fn poll_until_gone(pid: u32, start_ticks: Option<u64>) -> ExitStatus {
    if let Some(ticks) = start_ticks {
        while process::is_same_process_alive(pid, ticks) {
            tokio::time::sleep(ADOPTED_POLL).await;
        }
    }
    ExitStatus {
        code: None,
        signal: None,
    }
}

fn send(replica: &str, pid: u32, signal: Signal) {
    if let Err(e) = process::signal_group(pid, signal) {
        tracing::warn!(replica_id = %replica, pid, %signal, error = %e, "cannot signal replica");
    }
}
