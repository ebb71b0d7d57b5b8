//! A private PostgreSQL server for one test: its own data directory, its own
//! port on 127.0.0.1, started as the `postgres` user. Unlike the shared
//! server of `MENTAT_TEST_PG_URL`, it can be killed with SIGKILL and started
//! again (crash recovery included), as a real database crash would be.
//!
//! Needs root (the server runs as `postgres` through `runuser`) and the
//! PostgreSQL 15 binaries in [`PG_BIN`] (Debian's `postgresql-15`). The
//! server and its directory are removed on drop, even if the test panicked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian puts the PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server of this test alone.
pub struct PgServer {
    dir: TempDir,
    port: u16,
    /// `runuser … postgres`: its child is the postmaster, which it reaps.
    child: Option<Child>,
}

impl PgServer {
    /// `initdb` a fresh cluster in a temporary directory and start it on a
    /// free port. Panics with the reason when it cannot.
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("mentat-pg-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        chown_to_postgres(dir.path());
        let data = dir.path().join("data");
        let out = runuser(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data.to_str().expect("a UTF-8 path"),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PG_BIN}/initdb through runuser: {e}"));
        assert!(
            out.status.success(),
            "initdb failed (the private PostgreSQL needs root and {PG_BIN}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            dir,
            port: mentat_testkit::free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL the postmaster and every backend at once, as a machine crash
    /// would; the data directory is left as it was.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(postmaster) = self.postmaster_pid() {
            let mut pids = children_of(postmaster);
            pids.push(postmaster);
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // runuser reaps the postmaster and exits; its pid is then free, so
        // the next postmaster does not find a live one in `postmaster.pid`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start it again on the same port with the same data: PostgreSQL
    /// replays its write-ahead log after a kill.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let data = self.data();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("PostgreSQL log file");
        let child = runuser(&[
            &format!("{PG_BIN}/postgres"),
            "-D",
            data.to_str().expect("a UTF-8 path"),
            "-p",
            &self.port.to_string(),
            "-k",
            self.dir.path().to_str().expect("a UTF-8 path"),
            "-c",
            "listen_addresses=127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {PG_BIN}/postgres: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Wait until `pg_isready` says the server accepts connections (crash
    /// recovery done).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(format!("{PG_BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the private PostgreSQL exited ({status}):\n{}",
                        self.log_tail()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the private PostgreSQL is not ready within 60 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The postmaster's pid, from the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `runuser -u postgres -- ARGS`, from a directory the user may read.
fn runuser(args: &[&str]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .args(args)
        .current_dir("/");
    cmd
}

fn chown_to_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["postgres:postgres", path.to_str().expect("a UTF-8 path")])
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "cannot give {} to the postgres user",
        path.display()
    );
}

/// Pids whose parent is `pid`, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
