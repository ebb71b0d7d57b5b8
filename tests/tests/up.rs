//! `mt up`, as a user runs it from the README: the whole system from one
//! command, a deploy through it, and Ctrl-C stopping everything; and a
//! nats-server Mentat cannot work with refused before any service starts.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mentat_e2e::{bin_dir, load, text, SERVICES};
use mentat_testkit::{free_port, free_ports};

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mentat.yaml")
}

/// `mt up` with the example config, its own NATS URL, data directory and
/// ports, so that it shares nothing with other tests.
fn up(nats_url: &str, data: &Path, http: &str, admin: &str) -> Command {
    let mut cmd = Command::new(bin_dir().join("mt"));
    cmd.arg("up")
        .arg("--config")
        .arg(example_config())
        .args(["--nats", nats_url, "--http", http])
        .arg("--data-dir")
        .arg(data)
        .args(["--admin", admin])
        .env("RUST_LOG", "warn")
        .env("USER", "tester");
    cmd
}

/// `mt ARGS` against `nats_url`, with the credentials in `creds` (none
/// when empty).
fn mt(nats_url: &str, creds: &str, args: &[&str]) -> Output {
    let mut mt = Command::new(bin_dir().join("mt"));
    mt.args(args)
        .env("MENTAT_NATS_URL", nats_url)
        .env_remove("MENTAT_NATS_CREDS")
        .env("USER", "tester");
    if !creds.is_empty() {
        mt.env("MENTAT_NATS_CREDS", creds);
    }
    mt.output().expect("run mt")
}

/// True when `text` has a sample of `name` (with `labels` among its
/// labels) whose value is above zero.
fn has_sample(text: &str, name: &str, labels: &str) -> bool {
    text.lines().filter(|l| l.starts_with(name)).any(|l| {
        let value = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        l.contains(labels) && value.is_some_and(|v| v > 0.0)
    })
}

fn closed(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Lines of `stream`, as they come, on a channel.
fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait, collecting lines, for one that contains `wanted`.
fn wait_for(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, wanted: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(wanted);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "{wanted:?} not printed within {within:?}; printed:\n{}",
        seen.join("\n")
    );
}

/// Stops `mt up` if the test fails half-way.
struct Up(Child);

impl Up {
    /// Start `cmd` (an `mt up`) with the test's nats-server, and the lines
    /// it prints on stdout and stderr.
    fn start(cmd: &mut Command) -> (Up, mpsc::Receiver<String>, mpsc::Receiver<String>) {
        let mut up = Up(cmd
            .env("NATS_SERVER_BIN", mentat_testkit::nats::server_bin())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mt up"));
        let out = lines(up.0.stdout.take().expect("stdout"));
        let err = lines(up.0.stderr.take().expect("stderr"));
        (up, out, err)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_whole_system_deploys_through_it_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats_port = free_port();
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let http_port = free_port();
    let http = format!("127.0.0.1:{http_port}");
    let admin_port = free_ports(5);
    let admin = format!("127.0.0.1:{admin_port}");
    let (mut up, out, err) = Up::start(&mut up(&nats_url, dir.path(), &http, &admin));
    let mut said = Vec::new();

    // It starts a nats-server where none answers, then the four services,
    // and applies the config once the planner answers.
    wait_for(
        &err,
        &mut said,
        &format!("on 127.0.0.1:{nats_port}"),
        Duration::from_secs(30),
    );
    wait_for(
        &err,
        &mut said,
        "accepted: applied web",
        Duration::from_secs(60),
    );
    wait_for(&out, &mut said, "Mentat is up", Duration::from_secs(60));
    // Its data directory is not ./.mentat: it says where the operator's
    // credentials are, and nothing is done without them.
    let creds = said
        .iter()
        .find_map(|line| line.split("export MENTAT_NATS_CREDS=").nth(1))
        .map(|path| path.trim().to_owned())
        .expect("mt up says where the operator's credentials are");
    assert!(
        creds.starts_with(&dir.path().display().to_string()),
        "{creds}"
    );
    let anonymous = mt(&nats_url, "", &["status"]);
    assert!(!anonymous.status.success());
    assert!(
        text(&anonymous).contains("refused the connection"),
        "{}",
        text(&anonymous)
    );
    let viewer = creds.replace("operator.nk", "viewer.nk");
    let refused = mt(&nats_url, &viewer, &["deploy", "web", "--image", "v0"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("unauthorised") && text(&refused).contains("mentat.cmd.deploy"),
        "{}",
        text(&refused)
    );

    // A reason holding terminal escape sequences (set the window title,
    // clear the screen) is recorded as sent and shown escaped.
    let reason = "\u{1b}]0;owned\u{7}\u{1b}[2Jfirst";
    let deploy = mt(
        &nats_url,
        &creds,
        &[
            "deploy",
            "web",
            "--image",
            "v1",
            "--timeout",
            "60",
            "--reason",
            reason,
        ],
    );
    assert!(deploy.status.success(), "{}", text(&deploy));
    let status = mt(&nats_url, &viewer, &["history", "web"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    assert!(
        shown.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2Jfirst"),
        "{shown}"
    );

    // Secrets stay private: the log is its owner's alone, and the database
    // URL reaches the planner in its environment, not on its command line.
    let log = dir.path().join("mentat.db");
    let mode = std::fs::metadata(&log)
        .expect("the log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", log.display());
    let planners = command_lines_with(&dir.path().display().to_string())
        .into_iter()
        .filter(|line| line.contains("mentat-planner"))
        .collect::<Vec<_>>();
    assert_eq!(planners.len(), 1, "{planners:?}");
    assert!(!planners[0].contains("database"), "{}", planners[0]);
    // Each service has its own identity, given by path: no secret in `ps`.
    assert!(planners[0].contains("planner.nk"), "{}", planners[0]);
    let seed = std::fs::read_to_string(dir.path().join("identities/planner.nk")).expect("seed");
    assert!(!planners[0].contains(seed.trim()), "{}", planners[0]);
    let (status, body) = load::get(&http, "web.localhost")
        .await
        .expect("GET through the router");
    assert_eq!((status, body.trim()), (200, "v1"));
    // The router's admin server is where --admin put it, and every other
    // service serves its own metrics on the ports after it.
    let scrape = |offset: u16| {
        let addr = format!("127.0.0.1:{}", admin_port + offset);
        async move {
            let (status, text) = load::get_path(&addr, "localhost", "/metrics")
                .await
                .unwrap_or_else(|e| panic!("GET /metrics from {addr}: {e}"));
            assert_eq!(status, 200, "{addr}: {text}");
            text
        }
    };
    // A request is counted when its exchange ends, just after the client
    // has the answer.
    let mut router = scrape(0).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !has_sample(&router, "mentat_router_requests_total{", "service=\"web\"")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        router = scrape(0).await;
    }
    assert!(
        has_sample(&router, "mentat_router_requests_total{", "service=\"web\"")
            && has_sample(&router, "mentat_router_route_version{", "service=\"web\""),
        "{router}"
    );
    let planner = scrape(1).await;
    for (name, labels) in [
        ("mentat_planner_commands_total{", "verb=\"deploy\""),
        (
            "mentat_planner_events_appended_total{",
            "event=\"DeploymentCompleted\"",
        ),
        ("mentat_planner_append_seconds_count", ""),
    ] {
        assert!(
            has_sample(&planner, name, labels),
            "{name} {labels}: {planner}"
        );
    }
    let health = scrape(2).await;
    for (name, labels) in [
        ("mentat_health_probes_total{", "result=\"ok\""),
        ("mentat_health_transitions_total{", "to=\"healthy\""),
        ("mentat_health_probe_seconds_count", ""),
    ] {
        assert!(
            has_sample(&health, name, labels),
            "{name} {labels}: {health}"
        );
    }
    // The notifier's answers even before it has posted anything.
    scrape(4).await;
    let executor = scrape(3).await;
    for name in [
        "mentat_executor_replica_starts_total",
        "mentat_executor_replicas",
    ] {
        assert!(has_sample(&executor, name, ""), "{name}: {executor}");
    }
    for service in SERVICES {
        let log = dir.path().join("logs").join(format!("{service}.log"));
        assert!(log.exists(), "no log for the {service}: {}", log.display());
    }

    let pid = up.0.id().to_string();
    // The shell's own kill: no procps needed.
    let signalled = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .expect("kill");
    assert!(signalled.success());
    wait_for(&err, &mut said, "stopped", Duration::from_secs(40));
    let exit = up.0.wait().expect("wait for mt up");
    assert!(
        exit.success(),
        "mt up exited {exit}; printed:\n{}",
        said.join("\n")
    );
    // Everything it started is gone: the NATS server, the router, the replicas.
    assert!(
        closed(nats_port),
        "nats-server still listens on {nats_port}"
    );
    assert!(closed(http_port), "the router still listens on {http_port}");
    // Every decision it took replays the same from its log.
    let replayed = mentat_e2e::assert_replays(&format!("sqlite://{}", log.display()));
    assert!(replayed.decisions > 0, "{replayed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_tls_serves_nats_to_those_with_its_ca_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats_url = format!("nats://127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_ports(5));
    let (mut up, out, err) = Up::start(up(&nats_url, dir.path(), &http, &admin).arg("--tls"));
    let mut said = Vec::new();
    wait_for(
        &err,
        &mut said,
        "export MENTAT_NATS_CA=",
        Duration::from_secs(30),
    );
    wait_for(&out, &mut said, "Mentat is up", Duration::from_secs(60));
    let exported = |var: &str| {
        said.iter()
            .find_map(|line| line.split(&format!("export {var}=")).nth(1))
            .map(|path| path.trim().to_owned())
            .unwrap_or_else(|| panic!("mt up says {var}: {said:?}"))
    };
    let (creds, ca) = (exported("MENTAT_NATS_CREDS"), exported("MENTAT_NATS_CA"));
    let with_ca = |args: &[&str]| {
        Command::new(bin_dir().join("mt"))
            .args(args)
            .env("MENTAT_NATS_URL", &nats_url)
            .env("MENTAT_NATS_CREDS", &creds)
            .env("MENTAT_NATS_CA", &ca)
            .output()
            .expect("run mt")
    };
    let deploy = with_ca(&["deploy", "web", "--image", "v1", "--timeout", "60"]);
    assert!(deploy.status.success(), "{}", text(&deploy));
    let (status, body) = load::get(&http, "web.localhost")
        .await
        .expect("GET through the router");
    assert_eq!((status, body.trim()), (200, "v1"));
    // The operator's credentials alone, without the CA: no connection.
    let without = mt(&nats_url, &creds, &["status"]);
    assert_eq!(without.status.code(), Some(2), "{}", text(&without));
    assert!(text(&without).contains("certificate"), "{}", text(&without));

    let signalled = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", up.0.id())])
        .status()
        .expect("kill");
    assert!(signalled.success());
    wait_for(&err, &mut said, "stopped", Duration::from_secs(40));
    assert!(up.0.wait().expect("wait for mt up").success());
}

/// The command lines of running processes that mention `needle`.
fn command_lines_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|line| line.contains(needle))
        .collect()
}

#[test]
fn a_password_on_a_command_line_is_refused_before_anything_starts() {
    let url = "postgres://mentat:s3cret@127.0.0.1:1/mentat";
    let planner = Command::new(bin_dir().join("mentat-planner"))
        .args(["--nats", "nats://127.0.0.1:1", "--database-url", url])
        .output()
        .expect("run the planner");
    assert_eq!(planner.status.code(), Some(64), "{}", text(&planner));
    let said = String::from_utf8_lossy(&planner.stderr);
    assert!(
        said.contains("--database-url") && said.contains("MENTAT_DATABASE_URL"),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");

    let up = Command::new(bin_dir().join("mt"))
        .args(["--nats", "nats://127.0.0.1:1", "up", "--database-url", url])
        .output()
        .expect("run mt up");
    assert_eq!(up.status.code(), Some(64), "{}", text(&up));
    assert!(String::from_utf8_lossy(&up.stderr).contains("--database-url"));

    // A file that is not there is named.
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = Command::new(bin_dir().join("mentat-planner"))
        .args(["--nats", "nats://127.0.0.1:1", "--database-url-file"])
        .arg(dir.path().join("none"))
        .output()
        .expect("run the planner");
    assert_eq!(missing.status.code(), Some(64), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("none"));
}

#[test]
fn up_refuses_a_nats_server_older_than_2_10_and_starts_no_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A nats-server binary that says it is 2.9.10 (Debian 12's), and leaves
    // a mark if it is ever started.
    let started = dir.path().join("started");
    let fake = dir.path().join("nats-server");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'nats-server: v2.9.10'; exit 0; fi\n\
             touch '{}'\nsleep 30\n",
            started.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = dir.path().join("data");
    let nats_url = format!("nats://127.0.0.1:{}", free_port());

    let admin = format!("127.0.0.1:{}", free_ports(5));
    let out = up(
        &nats_url,
        &data,
        &format!("127.0.0.1:{}", free_port()),
        &admin,
    )
    .env("NATS_SERVER_BIN", &fake)
    .output()
    .expect("run mt up");

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    for expected in [
        "version 2.9.10",
        "Mentat needs 2.10 or newer",
        "nats-server-bin",
    ] {
        assert!(
            said.contains(expected),
            "{expected:?} missing from:\n{said}"
        );
    }
    assert!(!started.exists(), "the old nats-server was started");
    for service in SERVICES {
        let log = data.join("logs").join(format!("{service}.log"));
        assert!(
            !log.exists(),
            "the {service} was started: {}",
            log.display()
        );
    }
}

#[test]
fn up_refuses_an_admin_address_whose_next_ports_are_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_ports(5);
    // Something else listens where the health-watcher's metrics would.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", base + 2)).expect("bind");
    let out = up(
        &format!("nats://127.0.0.1:{}", free_port()),
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{base}"),
    )
    .output()
    .expect("run mt up");
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("health-watcher") && said.contains(&format!("127.0.0.1:{}", base + 2)),
        "names the service and the address: {said}"
    );
}
