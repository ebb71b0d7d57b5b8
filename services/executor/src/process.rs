//! Processes: starting a replica, recognising it again after a restart, and
//! signalling it.
//!
//! A replica is a process group: the program is started as the leader of a
//! new group (`process_group(0)`), so that SIGTERM and SIGKILL reach every
//! process it forks, and the group id is the leader's pid.

use std::fs::OpenOptions;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use mentat_domain::spec::RunSpec;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::{Error, Result};

/// A freshly started replica process.
#[derive(Debug)]
pub struct Spawned {
    /// The child, to wait on.
    pub child: tokio::process::Child,
    /// Its pid (and process group id).
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub start_ticks: u64,
    /// Port it was given in `PORT` and `{port}`.
    pub port: u16,
}

/// A TCP port on `ip` that nobody listened on a moment ago: bind port 0,
/// read the port the kernel chose, and close the listener again.
pub fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Replace `{image}`, `{ip}` and `{port}` in `text`.
pub fn substitute(text: &str, image: &str, ip: IpAddr, port: u16) -> String {
    text.replace("{image}", image)
        .replace("{ip}", &ip.to_string())
        .replace("{port}", &port.to_string())
}

/// A file name for a replica id: characters outside `A-Za-z0-9._-` become
/// `_`, and a leading dot too, so an id can never leave the logs directory.
pub fn file_name_for(replica: &str) -> String {
    let mut name: String = replica
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name
}

/// The variable naming a replica's start, given to its process so that an
/// executor killed between spawning it and recording its pid can still find
/// it (see [`find_started`]).
pub const START_TOKEN_VAR: &str = "MENTAT_START_TOKEN";

/// Where a replica listens: the host's advertised address and a port.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// The executor's `--advertise-ip`.
    pub ip: IpAddr,
    /// A free port on it.
    pub port: u16,
}

/// Start `run` for one replica listening on `listen`, as the leader of a
/// new process group, with stdout and stderr appended to `log`.
///
/// The child inherits the executor's environment, then gets `run.env` and
/// finally `HOST` and `PORT`, which always win: the executor reports that
/// address as the replica's; and [`START_TOKEN_VAR`] set to `token`, which
/// the state file recorded before this call. `resolved`, when given, is the
/// path to start in place of `run.command[0]` (the real path the host's
/// allow-list checked), with `run.command[0]` kept as its `argv[0]`.
pub fn spawn(
    run: &RunSpec,
    image: &str,
    listen: Listen,
    token: &str,
    log: &Path,
    resolved: Option<&Path>,
) -> Result<Spawned> {
    let Listen { ip, port } = listen;
    let program = run.command.first().map(String::as_str).unwrap_or("");
    let spawn_error = |detail: String| Error::Spawn {
        program: program.to_owned(),
        detail,
    };
    if program.trim().is_empty() {
        return Err(spawn_error("the run command is empty".into()));
    }
    let sub = |s: &String| substitute(s, image, ip, port);

    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    let err = out.try_clone().map_err(|e| Error::io(log, e))?;

    let mut cmd = match resolved {
        Some(path) => {
            let mut cmd = tokio::process::Command::new(path);
            cmd.arg0(sub(&run.command[0]));
            cmd
        }
        None => tokio::process::Command::new(sub(&run.command[0])),
    };
    cmd.args(run.command[1..].iter().map(sub))
        .args(run.args.iter().map(sub))
        .envs(run.env.iter().map(|(k, v)| (k, sub(v))))
        .env("HOST", ip.to_string())
        .env("PORT", port.to_string())
        .env(START_TOKEN_VAR, token)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| spawn_error(e.to_string()))?;
    let pid = child
        .id()
        .ok_or_else(|| spawn_error("exited before its pid could be read".into()))?;
    // The child is not reaped before we wait on it, so /proc/<pid> exists.
    let start_ticks = match stat(pid) {
        Some(s) => s.start_ticks,
        None => {
            tracing::warn!(
                pid,
                "cannot read /proc/{pid}/stat: a restarted executor will not adopt this replica"
            );
            0
        }
    };
    Ok(Spawned {
        child,
        pid,
        start_ticks,
        port,
    })
}

/// The process started with `token` in [`START_TOKEN_VAR`], when it still
/// runs and leads its own process group: its pid and start time.
///
/// A replica's environment as it was at `exec` is in `/proc/<pid>/environ`,
/// so scanning every process finds one whose executor was killed before it
/// could record the pid. Only a restarted executor does this, and only for
/// a start it had recorded as in progress.
pub fn find_started(token: &str) -> Option<(u32, u64)> {
    let wanted = format!("{START_TOKEN_VAR}={token}");
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(proc_path(pid, "environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            continue;
        }
        match stat(pid) {
            Some(s) if s.pgrp == i64::from(pid) && !matches!(s.state, 'Z' | 'X') => {
                return Some((pid, s.start_ticks))
            }
            _ => {}
        }
    }
    None
}

/// The fields of `/proc/<pid>/stat` the executor needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// State letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Process group id.
    pub pgrp: i64,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Read `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    parse_stat(&text)
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// Parse the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        start_ticks: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// True when the process recorded as (`pid`, `start_ticks`) still runs: it
/// exists, is not a zombie, has the recorded start time (so the pid was not
/// reused) and still leads its own process group.
pub fn is_same_process_alive(pid: u32, start_ticks: u64) -> bool {
    match stat(pid) {
        Some(s) => {
            !matches!(s.state, 'Z' | 'X')
                && s.start_ticks == start_ticks
                && s.pgrp == i64::from(pid)
        }
        None => false,
    }
}

/// Send `signal` to the process group led by `pid`. A group that no longer
/// exists is not an error. Pids 0 and 1 are refused: `killpg(0)` would hit
/// the executor's own group.
pub fn signal_group(pid: u32, signal: Signal) -> std::io::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    if raw <= 1 {
        return Err(std::io::Error::other(format!(
            "refusing to signal process group {raw}"
        )));
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stat_is_parsed_past_odd_command_names() {
        let text = "1234 (we ird) (name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.start_ticks, 987654);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_reused_pid_is_not() {
        let pid = std::process::id();
        let s = stat(pid).unwrap();
        assert!(s.start_ticks > 0);
        // The test process does not lead its group in general, so only the
        // start-time comparison is checked here.
        assert!(!is_same_process_alive(pid, s.start_ticks + 1));
        assert!(stat(u32::MAX).is_none());
    }

    #[test]
    fn placeholders_and_file_names() {
        assert_eq!(
            substitute(
                "--listen={ip}:{port} {image}",
                "v2",
                IpAddr::from([10, 0, 0, 7]),
                80
            ),
            "--listen=10.0.0.7:80 v2"
        );
        assert_eq!(file_name_for("web-1"), "web-1");
        assert_eq!(file_name_for("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_name_for(".hidden"), "_.hidden");
        assert_eq!(file_name_for(""), "_");
    }

    #[test]
    fn a_started_process_is_found_by_its_token_and_only_by_it() {
        use std::os::unix::process::CommandExt;
        let token = format!("test-{}-{}", std::process::id(), mentat_bus::now_ms());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(START_TOKEN_VAR, &token)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let ticks = stat(pid).unwrap().start_ticks;
        // Spawn returns once exec is past its point of no return, a moment
        // before the kernel publishes the new environment in /proc: look
        // again for a while, as a restarted executor (much later) never needs.
        let mut found = None;
        for _ in 0..100 {
            found = find_started(&token);
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let other = find_started(&format!("{token}-other"));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some((pid, ticks)));
        assert_eq!(other, None);
    }

    #[test]
    fn signalling_our_own_group_is_refused() {
        assert!(signal_group(0, Signal::SIGTERM).is_err());
        assert!(signal_group(1, Signal::SIGTERM).is_err());
    }
}
