//! Which clients the router trusts with forwarding fields
//! (`--trusted-proxies`): a proxy in front of it whose `X-Forwarded-*` and
//! `X-Request-Id` it keeps and whose `X-Forwarded-For` chain it extends.
//! From any other client those fields are replaced by the router's own
//! (see [`crate::headers::forward_request`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Most networks in `--trusted-proxies`: a list to scan per connection.
pub const MAX_TRUSTED_PROXIES: usize = 256;

/// An IP network, `address/prefix` (IPv4 or IPv6); a bare address is the
/// network of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (a
    /// client of a dual-stack listener) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (a `width`-bit address) with all but its first `prefix` bits cleared.
fn mask(bits: u128, prefix: u8, width: u32) -> u128 {
    let host_bits = width - u32::from(prefix);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits << host_bits
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{text}` is not a CIDR such as 10.0.0.0/8: {why}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let width: u8 = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(|| bad(&format!("the prefix must be 0 to {width}")))?,
            Some(_) => return Err(bad("bad prefix length")),
        };
        let cidr = Cidr { network, prefix };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if mask(bits, prefix, u32::from(width)) != bits {
            return Err(bad("bits are set past the prefix length"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The networks of `--trusted-proxies` (none by default: no client is
/// trusted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parse a comma-separated list of CIDRs (spaces around each are
    /// ignored; an empty list trusts nobody). The error names the first
    /// entry that is not a CIDR.
    pub fn parse(list: &str) -> Result<Self, String> {
        let networks = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, String>>()?;
        if networks.len() > MAX_TRUSTED_PROXIES {
            return Err(format!(
                "{} networks; at most {MAX_TRUSTED_PROXIES}",
                networks.len()
            ));
        }
        Ok(TrustedProxies(networks))
    }

    /// Whether a client at `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// Whether no network is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn networks_contain_their_addresses_and_only_those() {
        let trusted =
            TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/16, 0.0.0.0/0x").err();
        assert!(
            trusted.is_some_and(|e| e.contains("`0.0.0.0/0x`")),
            "the bad entry is named"
        );
        let trusted = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/16,").expect("valid");
        for yes in [
            "10.1.2.3",
            "10.255.255.255",
            "192.168.1.7",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(trusted.trusts(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "fd01::1", "127.0.0.1", "::1"] {
            assert!(!trusted.trusts(ip(no)), "{no}");
        }
        let everyone = TrustedProxies::parse("0.0.0.0/0,::/0").expect("valid");
        assert!(everyone.trusts(ip("203.0.113.9")) && everyone.trusts(ip("2001:db8::1")));
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        assert!(!TrustedProxies::default().trusts(ip("127.0.0.1")));
    }

    #[test]
    fn what_is_not_a_cidr_is_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "localhost",
            "10.0.0.0/8/8",
        ] {
            let e = bad.parse::<Cidr>().expect_err(bad);
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().expect("valid").to_string(),
            "10.0.0.0/8"
        );
        let many = vec!["10.0.0.1"; MAX_TRUSTED_PROXIES + 1].join(",");
        assert!(TrustedProxies::parse(&many).is_err());
    }
}
