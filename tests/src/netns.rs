//! Hosts with their own network addresses on this machine: a [`Lan`] is a
//! bridge in the root namespace (the gateway, `10.231.K.1`) and one network
//! namespace per host (`10.231.K.11`, `.12`, ...), each joined to the
//! bridge by a veth pair. Processes started with [`Lan::command`] run on
//! that host: they have its address and its own ports, and reach the others
//! and the gateway only through the bridge, so [`Lan::cut`] (the root side
//! of the host's veth pair set down) is a real partition.
//!
//! Making one needs root and `ip` (iproute2). Where that is not possible,
//! [`Lan::create`] returns `None` with the reason printed, and the test
//! skips, except under CI (`CI=true`), where it fails.
//!
//! Every [`Lan`] takes a free `K` by creating its bridge (`mtlanK`), which
//! fails if another test holds it; it writes its process id beside it, so a
//! test process killed before it could clean up leaves nothing for long:
//! the next [`Lan::create`] removes a lan whose process is gone.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Lans at most, and the first octets of their subnets.
const LANS: u8 = 200;
const PREFIX: [u8; 2] = [10, 231];

/// A bridge and its hosts; removed (processes inside killed first by their
/// owners, namespaces and links deleted) when dropped.
#[derive(Debug)]
pub struct Lan {
    index: u8,
    hosts: usize,
}

impl Lan {
    /// A lan of `hosts` hosts, or `None` (with the reason printed) where
    /// namespaces cannot be made and this is not CI. Panics under CI.
    pub fn create(hosts: usize) -> Option<Lan> {
        assert!((1..=50).contains(&hosts), "1 to 50 hosts");
        if let Err(why) = can_make_namespaces() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the multi-host tests, but network namespaces cannot be made here: {why}"
            );
            eprintln!("skipped: network namespaces cannot be made here: {why}");
            return None;
        }
        remove_abandoned();
        let index = (0..LANS)
            .find(|k| ip(&["link", "add", &bridge(*k), "type", "bridge"]).is_ok())
            .expect("a free lan index (200 lans in use?)");
        std::fs::create_dir_all(owners_dir()).expect("lan owners directory");
        std::fs::write(owner_file(index), std::process::id().to_string()).expect("lan owner file");
        let mut lan = Lan { index, hosts: 0 };
        let gateway = format!("{}/24", lan.gateway());
        must(&["addr", "add", &gateway, "dev", &bridge(index)]);
        must(&["link", "set", &bridge(index), "up"]);
        for host in 0..hosts {
            lan.add_host(host);
        }
        Some(lan)
    }

    fn add_host(&mut self, host: usize) {
        let ns = self.namespace(host);
        let outside = veth(self.index, host);
        let inside = format!("{outside}p");
        must(&["netns", "add", &ns]);
        self.hosts = host + 1;
        must(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        must(&["link", "set", &inside, "netns", &ns]);
        must(&["link", "set", &outside, "master", &bridge(self.index)]);
        must(&["link", "set", &outside, "up"]);
        let address = format!("{}/24", self.address(host));
        must(&["-n", &ns, "link", "set", &inside, "name", "eth0"]);
        must(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
        must(&["-n", &ns, "link", "set", "eth0", "up"]);
        must(&["-n", &ns, "link", "set", "lo", "up"]);
    }

    /// The root namespace's address on the lan (where NATS listens).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.index, 1)
    }

    /// Host `host`'s address.
    pub fn address(&self, host: usize) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.index, 11 + host as u8)
    }

    /// Host `host`'s network namespace.
    pub fn namespace(&self, host: usize) -> String {
        format!("{}-h{host}", bridge(self.index))
    }

    /// `program` to be run on host `host`.
    pub fn command(&self, host: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        cmd
    }

    /// Cut host `host` off the lan: nothing reaches it, nothing leaves it.
    pub fn cut(&self, host: usize) {
        must(&["link", "set", &veth(self.index, host), "down"]);
    }

    /// Join host `host` to the lan again.
    pub fn heal(&self, host: usize) {
        must(&["link", "set", &veth(self.index, host), "up"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        remove(self.index, self.hosts);
    }
}

fn bridge(index: u8) -> String {
    format!("mtlan{index}")
}

fn veth(index: u8, host: usize) -> String {
    format!("mtl{index}h{host}")
}

fn owners_dir() -> PathBuf {
    std::env::temp_dir().join("mentat-test-lans")
}

fn owner_file(index: u8) -> PathBuf {
    owners_dir().join(index.to_string())
}

/// Delete lan `index`: its namespaces (with any process still in them
/// killed), the root side of its links, its bridge and its owner file.
fn remove(index: u8, hosts: usize) {
    for host in 0..hosts {
        let ns = format!("{}-h{host}", bridge(index));
        if let Ok(out) = ip(&["netns", "pids", &ns]) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = ip(&["netns", "del", &ns]);
        let _ = ip(&["link", "del", &veth(index, host)]);
    }
    let _ = ip(&["link", "del", &bridge(index)]);
    let _ = std::fs::remove_file(owner_file(index));
}

/// Remove every lan whose owning test process is gone.
fn remove_abandoned() {
    let Ok(entries) = std::fs::read_dir(owners_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(index) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
        if !alive {
            let hosts = namespaces_of(index);
            remove(index, hosts);
        }
    }
}

/// How many host namespaces lan `index` has (`mtlanK-h0`, `-h1`, ...).
fn namespaces_of(index: u8) -> usize {
    let Ok(out) = ip(&["netns", "list"]) else {
        return 0;
    };
    let prefix = format!("{}-h", bridge(index));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| name.strip_prefix(&prefix)?.parse::<usize>().ok())
        .map(|h| h + 1)
        .max()
        .unwrap_or(0)
}

fn can_make_namespaces() -> Result<(), String> {
    ip(&["netns", "list"]).map_err(|e| format!("`ip netns list`: {e}"))?;
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        });
    if uid.as_deref() != Some("0") {
        return Err("not running as root".into());
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}
