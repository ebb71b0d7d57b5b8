//! The state file, `<host-dir>/replicas.json`: every replica this executor
//! has started and not yet reported as exited.
//!
//! It is what lets a restarted executor find its processes again instead of
//! leaving them as orphans. It is rewritten atomically (write a temporary
//! file, fsync, rename) on every change, so a crash at any moment leaves
//! either the old or the new content, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use mentat_domain::spec::HealthSpec;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Version of the file format; bumped on an incompatible change.
const FORMAT_VERSION: u32 = 1;

/// One replica as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Service it belongs to.
    pub service: String,
    /// Process id; also the id of its process group. 0 while the start is
    /// in progress: recorded before the spawn, so that an executor killed
    /// in between leaves a record a restarted one resolves with `token`.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (field 22 of
    /// `/proc/<pid>/stat`). With the pid it identifies the process: a pid
    /// reused by another program has another start time.
    pub start_ticks: u64,
    /// `127.0.0.1:<port>` it was told to listen on.
    pub addr: String,
    /// Readiness probe, repeated in a re-published `ReplicaStarted`.
    pub health: HealthSpec,
    /// Image it runs.
    pub image: String,
    /// File receiving its stdout and stderr.
    pub log: PathBuf,
    /// When it was started (ms since epoch).
    pub started_at_ms: i64,
    /// True once the planner asked for it to stop: a restarted executor
    /// finishes the stop and reports the exit as requested.
    #[serde(default)]
    pub stopping: bool,
    /// The value of `MENTAT_START_TOKEN` its process was started with,
    /// unique to this start (see `process::find_started`).
    #[serde(default)]
    pub token: String,
}

impl Record {
    /// True while the start is in progress: recorded, pid not yet known.
    pub fn is_starting(&self) -> bool {
        self.pid == 0
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    replicas: BTreeMap<String, Record>,
}

/// The state file and its content in memory.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    replicas: BTreeMap<String, Record>,
}

impl StateFile {
    /// Read `path`; a missing file is an empty state.
    pub fn load(path: PathBuf) -> Result<Self> {
        let replicas = match fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                if on_disk.version != FORMAT_VERSION {
                    return Err(Error::CorruptState {
                        path,
                        detail: format!(
                            "format version {} (this executor reads {FORMAT_VERSION})",
                            on_disk.version
                        ),
                    });
                }
                on_disk.replicas
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(Self { path, replicas })
    }

    /// Every recorded replica, by id.
    pub fn replicas(&self) -> &BTreeMap<String, Record> {
        &self.replicas
    }

    /// The record of one replica.
    pub fn get(&self, replica: &str) -> Option<&Record> {
        self.replicas.get(replica)
    }

    /// Record a replica and save.
    pub fn insert(&mut self, replica: String, record: Record) -> Result<()> {
        self.replicas.insert(replica, record);
        self.save()
    }

    /// Mark a replica as being stopped on request, and save.
    pub fn mark_stopping(&mut self, replica: &str) -> Result<()> {
        match self.replicas.get_mut(replica) {
            Some(r) if !r.stopping => {
                r.stopping = true;
                self.save()
            }
            _ => Ok(()),
        }
    }

    /// Forget a replica and save; returns its record.
    pub fn remove(&mut self, replica: &str) -> Result<Option<Record>> {
        let removed = self.replicas.remove(replica);
        if removed.is_some() {
            self.save()?;
        }
        Ok(removed)
    }

    /// Write the whole state atomically: temporary file, fsync, rename.
    ///
    /// This is synchronous on purpose: the file is small, and a write that
    /// finishes before the next intent is handled keeps the order of changes.
    fn save(&self) -> Result<()> {
        let on_disk = OnDisk {
            version: FORMAT_VERSION,
            replicas: self.replicas.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&on_disk).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            detail: format!("cannot encode: {e}"),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                // Make the rename itself durable; not every filesystem allows it.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        };
        write().map_err(|e| Error::io(&self.path, e))
    }
}

/// An exclusive lock on a host directory, held while the executor runs so
/// that two executors never manage the same processes.
#[derive(Debug)]
pub struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    /// Take the lock on `<dir>/lock`, failing at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::AlreadyRunning(path)),
            Err((_, errno)) => Err(Error::io(path, errno.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(pid: u32) -> Record {
        Record {
            service: "web".into(),
            pid,
            start_ticks: 42,
            addr: "127.0.0.1:1".into(),
            health: HealthSpec::default(),
            image: "v1".into(),
            log: PathBuf::from("/tmp/x.log"),
            started_at_ms: 1,
            stopping: false,
            token: String::new(),
        }
    }

    #[test]
    fn survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replicas.json");
        let mut state = StateFile::load(path.clone()).unwrap();
        assert!(state.replicas().is_empty());
        state.insert("r1".into(), record(10)).unwrap();
        state.insert("r2".into(), record(11)).unwrap();
        state.mark_stopping("r2").unwrap();
        state.remove("r1").unwrap();
        let back = StateFile::load(path).unwrap();
        assert_eq!(back.replicas().len(), 1);
        assert!(back.get("r2").unwrap().stopping);
        assert!(!dir.path().join("replicas.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replicas.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            StateFile::load(path),
            Err(Error::CorruptState { .. })
        ));
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            HostLock::acquire(dir.path()),
            Err(Error::AlreadyRunning(_))
        ));
        drop(first);
        HostLock::acquire(dir.path()).unwrap();
    }
}
