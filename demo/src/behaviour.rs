//! How the demo app misbehaves, read from its version string and environment.
//!
//! The version string is the whole control surface, so that a deployment of
//! `v2-unhealthy` or `v3-slow` shows what Mentat does with a bad release:
//!
//! | version contains | effect |
//! |---|---|
//! | `crash` | exits with status 1 right at start |
//! | `unhealthy` | `GET /health` always answers 503 |
//! | `error` | `GET /` answers 500 to a share `ERROR_RATE` (default 0.5) of requests |
//! | `slow` | `GET /` waits `SLOW_MS` (default 300) before answering |
//!
//! `READY_DELAY_MS` makes `/health` answer 503 until that much time has
//! passed since start, whatever the version.
//!
//! Two more knobs for the threshold tests and benchmarks:
//!
//! - `ERROR_AFTER_MS`: an `error` version answers correctly until that much
//!   time has passed since start, then fails as above (a release that
//!   breaks only after it was promoted).
//! - `ERROR_FILE`: while a file exists at this path, `GET /` answers 500 to
//!   every request, whatever the version (a spike that hits every version
//!   alike, for example a shared database going down).
//!
//! And one for the draining tests: `SHUTDOWN_GRACE_MS` (default 10000), how
//! long in-flight requests may take to finish after SIGTERM; `0` exits at
//! once and cuts them, like an application with no graceful shutdown, so
//! that only the router's draining keeps them whole.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default share of failing requests for an `error` version.
pub const DEFAULT_ERROR_RATE: f64 = 0.5;
/// Default added latency for a `slow` version, in milliseconds.
pub const DEFAULT_SLOW_MS: u64 = 300;
/// Default time in-flight requests get to finish after SIGTERM, in milliseconds.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// A configuration value that cannot be used; the process exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable or argument at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Everything the environment and arguments configure.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address to listen on (`HOST`, default 127.0.0.1; the executor sets
    /// it to its advertised address).
    pub host: std::net::IpAddr,
    /// Port to listen on (`PORT`).
    pub port: u16,
    /// The version string served on `/`.
    pub version: String,
    /// How the version misbehaves.
    pub behaviour: Behaviour,
    /// `/health` answers 503 until this much time has passed since start.
    pub ready_delay: Duration,
    /// An `error` version fails only after this much time since start.
    pub error_after: Duration,
    /// While this file exists, every `GET /` answers 500.
    pub error_file: Option<PathBuf>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// How a version misbehaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Exit with status 1 at start.
    pub crash: bool,
    /// `/health` always answers 503.
    pub unhealthy: bool,
    /// Share of `/` requests answered with 500, from 0 to 1; `None` when healthy.
    pub error_rate: Option<f64>,
    /// Latency added to `/`.
    pub slow: Option<Duration>,
}

impl Behaviour {
    /// The behaviour of `version`, with the tuning values from the environment.
    pub fn of(version: &str, error_rate: f64, slow_ms: u64) -> Self {
        let v = version.to_ascii_lowercase();
        Behaviour {
            crash: v.contains("crash"),
            unhealthy: v.contains("unhealthy"),
            error_rate: v.contains("error").then_some(error_rate),
            slow: v.contains("slow").then(|| Duration::from_millis(slow_ms)),
        }
    }

    /// Whether the `n`-th request (from 0) of `/` fails. Deterministic: over
    /// any run of requests the share of failures is within one of the rate.
    pub fn fails(&self, n: u64) -> bool {
        match self.error_rate {
            None => false,
            Some(rate) => (((n + 1) as f64) * rate).floor() > ((n as f64) * rate).floor(),
        }
    }
}

impl Settings {
    /// Read the settings from arguments (without the program name) and an
    /// environment lookup.
    pub fn from_sources<A, E>(args: A, env: E) -> Result<Self, ConfigError>
    where
        A: IntoIterator<Item = String>,
        E: Fn(&str) -> Option<String>,
    {
        let port = match env("PORT") {
            None => return Err(problem("PORT", "is required (the port to listen on)")),
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    problem(
                        "PORT",
                        format!("`{p}` is not a port number from 1 to 65535"),
                    )
                })?,
        };
        let host = match env("HOST") {
            None => std::net::IpAddr::from([127, 0, 0, 1]),
            Some(h) => h
                .trim()
                .parse()
                .map_err(|_| problem("HOST", format!("`{h}` is not an IP address to listen on")))?,
        };
        let version = version_from_args(args)?
            .or_else(|| env("APP_VERSION"))
            .unwrap_or_else(|| "dev".to_owned());
        let error_rate = match env("ERROR_RATE") {
            None => DEFAULT_ERROR_RATE,
            Some(r) => r
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    problem("ERROR_RATE", format!("`{r}` is not a number from 0 to 1"))
                })?,
        };
        let slow_ms = millis(&env, "SLOW_MS")?.unwrap_or(DEFAULT_SLOW_MS);
        let ready_delay = Duration::from_millis(millis(&env, "READY_DELAY_MS")?.unwrap_or(0));
        let error_after = Duration::from_millis(millis(&env, "ERROR_AFTER_MS")?.unwrap_or(0));
        let shutdown_grace = Duration::from_millis(
            millis(&env, "SHUTDOWN_GRACE_MS")?.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
        );
        let error_file = env("ERROR_FILE")
            .filter(|f| !f.trim().is_empty())
            .map(PathBuf::from);
        Ok(Settings {
            error_after,
            error_file,
            host,
            port,
            behaviour: Behaviour::of(&version, error_rate, slow_ms),
            version,
            ready_delay,
            shutdown_grace,
        })
    }
}

fn problem(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

fn millis<E: Fn(&str) -> Option<String>>(
    env: &E,
    field: &'static str,
) -> Result<Option<u64>, ConfigError> {
    env(field)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| problem(field, format!("`{v}` is not a number of milliseconds")))
        })
        .transpose()
}

/// `--version V` or `--version=V`; nothing else is accepted.
fn version_from_args<A: IntoIterator<Item = String>>(
    args: A,
) -> Result<Option<String>, ConfigError> {
    let mut args = args.into_iter();
    let mut version = None;
    while let Some(arg) = args.next() {
        if arg == "--version" {
            let v = args
                .next()
                .ok_or_else(|| problem("--version", "needs a value, e.g. --version v2"))?;
            version = Some(v);
        } else if let Some(v) = arg.strip_prefix("--version=") {
            version = Some(v.to_owned());
        } else {
            return Err(problem(
                "arguments",
                format!("unexpected `{arg}`; usage: mentat-demo-app [--version V]"),
            ));
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_sources(args.iter().map(|a| (*a).to_owned()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn a_plain_version_behaves() {
        let b = Behaviour::of("v1", 0.5, 300);
        assert_eq!(
            b,
            Behaviour {
                crash: false,
                unhealthy: false,
                error_rate: None,
                slow: None
            }
        );
        assert!((0..100).all(|n| !b.fails(n)));
    }

    #[test]
    fn each_keyword_selects_its_misbehaviour() {
        assert!(Behaviour::of("v2-crash", 0.5, 300).crash);
        assert!(Behaviour::of("v2-UNHEALTHY", 0.5, 300).unhealthy);
        assert_eq!(Behaviour::of("v2-error", 0.2, 300).error_rate, Some(0.2));
        assert_eq!(
            Behaviour::of("v2-slow", 0.5, 50).slow,
            Some(Duration::from_millis(50))
        );
        let all = Behaviour::of("slow-error-unhealthy", 0.5, 10);
        assert!(all.unhealthy && all.error_rate.is_some() && all.slow.is_some() && !all.crash);
    }

    #[test]
    fn error_share_follows_the_rate() {
        for (rate, expected) in [(0.0, 0), (0.25, 250), (0.5, 500), (1.0, 1000)] {
            let b = Behaviour::of("error", rate, 0);
            let failures = (0..1000).filter(|n| b.fails(*n)).count();
            assert_eq!(failures, expected, "rate {rate}");
        }
        let half = Behaviour::of("error", 0.5, 0);
        assert_eq!(
            (0..4).map(|n| half.fails(n)).collect::<Vec<_>>(),
            [false, true, false, true]
        );
    }

    #[test]
    fn port_is_required_and_checked() {
        assert_eq!(settings(&[], &[]).map_err(|e| e.field), Err("PORT"));
        assert_eq!(
            settings(&[], &[("PORT", "http")]).map_err(|e| e.field),
            Err("PORT")
        );
        assert_eq!(
            settings(&[], &[("PORT", "0")]).map_err(|e| e.field),
            Err("PORT")
        );
        assert_eq!(settings(&[], &[("PORT", "8081")]).map(|s| s.port), Ok(8081));
    }

    #[test]
    fn version_comes_from_the_argument_then_the_environment() {
        let env = [("PORT", "1"), ("APP_VERSION", "v1")];
        assert_eq!(settings(&[], &env).map(|s| s.version), Ok("v1".into()));
        assert_eq!(
            settings(&["--version", "v2-slow"], &env).map(|s| s.version),
            Ok("v2-slow".into())
        );
        assert_eq!(
            settings(&["--version=v3"], &env).map(|s| s.version),
            Ok("v3".into())
        );
        assert_eq!(
            settings(&[], &[("PORT", "1")]).map(|s| s.version),
            Ok("dev".into())
        );
        assert_eq!(
            settings(&["--version"], &env).map_err(|e| e.field),
            Err("--version")
        );
        assert_eq!(
            settings(&["--port", "3"], &env).map_err(|e| e.field),
            Err("arguments")
        );
    }

    #[test]
    fn late_errors_and_the_error_file_are_read() {
        let s = settings(
            &[],
            &[
                ("PORT", "80"),
                ("ERROR_AFTER_MS", "4000"),
                ("ERROR_FILE", "/tmp/x"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.error_after, Duration::from_millis(4000));
        assert_eq!(s.error_file, Some(PathBuf::from("/tmp/x")));
        let s = settings(&[], &[("PORT", "80")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.error_after, s.error_file), (Duration::ZERO, None));
        assert!(settings(&[], &[("PORT", "80"), ("ERROR_AFTER_MS", "soon")]).is_err());
    }

    #[test]
    fn tuning_values_are_validated() {
        let base = [("PORT", "1"), ("APP_VERSION", "error-slow")];
        let with = |extra: (&'static str, &'static str)| {
            let mut env = base.to_vec();
            env.push(extra);
            settings(&[], &env)
        };
        assert_eq!(
            with(("ERROR_RATE", "1.5")).map_err(|e| e.field),
            Err("ERROR_RATE")
        );
        assert_eq!(
            with(("ERROR_RATE", "0.1")).map(|s| s.behaviour.error_rate),
            Ok(Some(0.1))
        );
        assert_eq!(with(("SLOW_MS", "x")).map_err(|e| e.field), Err("SLOW_MS"));
        assert_eq!(
            with(("READY_DELAY_MS", "250")).map(|s| s.ready_delay),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            with(("SHUTDOWN_GRACE_MS", "0")).map(|s| s.shutdown_grace),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            settings(&[], &[("PORT", "1")]).map(|s| s.shutdown_grace),
            Ok(Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS))
        );
        assert_eq!(
            with(("SHUTDOWN_GRACE_MS", "soon")).map_err(|e| e.field),
            Err("SHUTDOWN_GRACE_MS")
        );
    }
}
