//! One supervised child process: started in its own process group, its
//! output prefixed with its name on the terminal and kept in a log file,
//! restarted with exponential backoff when it dies, stopped with SIGTERM
//! (SIGKILL to its whole group once the kill token fires).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mentat_runtime::shutdown::CancellationToken;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::say;

/// First delay before a restart.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// Longest delay before a restart.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A child that stayed up this long starts again from [`FIRST_DELAY`].
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Restart delays: 0.5 s doubling up to 30 s, reset after 60 s of uptime.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The delay before restarting a child that ran for `uptime`.
    pub fn after(&mut self, uptime: Duration) -> Duration {
        if uptime >= STABLE_AFTER {
            self.next = FIRST_DELAY;
        }
        let delay = self.next;
        self.next = (delay * 2).min(MAX_DELAY);
        delay
    }
}

/// How to start one child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Name shown in front of its output and used for its log file.
    pub name: &'static str,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// `PATH` for the child, when it must differ from ours.
    pub path_env: Option<OsString>,
    /// More environment variables for the child: how secrets reach it,
    /// never on its command line.
    pub env: Vec<(&'static str, OsString)>,
    /// Its output goes to `<log_dir>/<name>.log`.
    pub log_dir: PathBuf,
    /// Also copy its output to our stderr, prefixed with its name.
    pub echo: bool,
}

impl ChildSpec {
    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: Ctrl-C reaches only `mt`, which stops children in order.
            .process_group(0);
        if let Some(path) = &self.path_env {
            cmd.env("PATH", path);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if !std::io::stderr().is_terminal() {
            cmd.env("NO_COLOR", "1");
        }
        let mut child = cmd.spawn()?;
        let log = self.log_dir.join(format!("{}.log", self.name));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pipe(self.name, self.echo, out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pipe(self.name, self.echo, err, log));
        }
        Ok(child)
    }
}

/// Copy `from` line by line to the log file, and to our stderr when `echo`.
async fn pipe(name: &'static str, echo: bool, from: impl AsyncRead + Unpin, log: PathBuf) {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await
        .map_err(|e| say(&format!("cannot write {}: {e}", log.display())))
        .ok();
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if echo {
            let text = String::from_utf8_lossy(&line);
            eprintln!("{name:>14} | {}", text.trim_end());
        }
        if let Some(f) = file.as_mut() {
            if f.write_all(&strip_ansi(&line)).await.is_err() {
                file = None;
            }
        }
    }
}

/// `line` without ANSI escape sequences (colours), for the log files.
fn strip_ansi(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut bytes = line.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b == 0x1b && bytes.peek() == Some(&b'[') {
            bytes.next();
            // Parameters and intermediates, then one final byte.
            for b in bytes.by_ref() {
                if (0x40..=0x7e).contains(&b) {
                    break;
                }
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// Run `spec` until `stop` fires, restarting it whenever it dies. On `stop`
/// the child gets SIGTERM; once `kill` fires, its group gets SIGKILL.
pub async fn supervise(spec: ChildSpec, stop: CancellationToken, kill: CancellationToken) {
    let mut backoff = Backoff::default();
    while !stop.is_cancelled() {
        let started = Instant::now();
        let died = match spec.spawn() {
            Ok(child) => run_once(child, &stop, &kill).await,
            Err(e) => Some(format!("could not start {}: {e}", spec.program.display())),
        };
        let Some(why) = died else { return };
        let delay = backoff.after(started.elapsed());
        say(&format!(
            "{} {why}; restarting in {:.1}s",
            spec.name,
            delay.as_secs_f64()
        ));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Wait for the child; `Some(why)` when it died by itself, `None` once it
/// was stopped.
async fn run_once(
    mut child: Child,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Option<String> {
    tokio::select! {
        status = child.wait() => return Some(describe(status)),
        () = stop.cancelled() => {}
    }
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    if let Some(pid) = pid {
        let _ = signal::kill(pid, Signal::SIGTERM);
    }
    tokio::select! {
        _ = child.wait() => {}
        () = kill.cancelled() => {
            match pid {
                Some(pid) => { let _ = signal::killpg(pid, Signal::SIGKILL); }
                None => { let _ = child.start_kill(); }
            }
            let _ = child.wait().await;
        }
    }
    None
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "exited".to_owned(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets_after_a_minute_up() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<f64> = (0..8).map(|_| b.after(quick).as_secs_f64()).collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        assert_eq!(b.after(Duration::from_secs(61)), Duration::from_millis(500));
        assert_eq!(b.after(quick), Duration::from_secs(1));
    }

    #[test]
    fn log_files_get_no_colours() {
        let coloured =
            b"\x1b[2m2026-01-01\x1b[0m \x1b[32m INFO\x1b[0m ready \x1b[3mhost\x1b[0m=vm\n";
        assert_eq!(strip_ansi(coloured), b"2026-01-01  INFO ready host=vm\n");
        assert_eq!(strip_ansi(b"plain [brackets]"), b"plain [brackets]");
    }

    #[tokio::test]
    async fn a_dying_child_is_restarted_and_a_stopped_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ChildSpec {
            name: "flaky",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo started; exit 3".into()],
            path_env: None,
            env: Vec::new(),
            log_dir: dir.path().to_owned(),
            echo: false,
        };
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(supervise(spec, stop.clone(), kill));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .expect("no panic");
        let log = std::fs::read_to_string(dir.path().join("flaky.log")).expect("log written");
        assert!(log.matches("started").count() >= 2, "{log:?}");
    }

    #[tokio::test]
    async fn stop_sends_sigterm_and_kill_forces_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = |script: &str| ChildSpec {
            name: "svc",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            path_env: None,
            env: Vec::new(),
            log_dir: dir.path().to_owned(),
            echo: false,
        };
        // Exits on SIGTERM.
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(supervise(spec("exec sleep 30"), stop.clone(), kill));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("SIGTERM stops it")
            .expect("no panic");
        // Ignores SIGTERM: only the kill token ends it.
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        let script = "trap '' TERM; sleep 30 & wait; sleep 30";
        let task = tokio::spawn(supervise(spec(script), stop.clone(), kill.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "SIGTERM is ignored");
        kill.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("SIGKILL ends it")
            .expect("no panic");
    }
}
