//! Where a callback may go: not into the network signoff runs in (server-side request
//! forgery). An address is refused when it is loopback, private, link-local (cloud
//! metadata among them), carrier-grade NAT, unique-local, unspecified, multicast,
//! reserved or kept for documentation (`192.0.2.0/24`, `198.51.100.0/24`,
//! `203.0.113.0/24`, `2001:db8::/32`), a cloud platform's own endpoint (Azure's
//! `168.63.129.16`) or in the NAT64 local-use prefix (`64:ff9b:1::/48`, RFC 8215, whose
//! translators serve the local network), IPv4 addresses inside IPv6 forms
//! (`::ffff:127.0.0.1`, NAT64, 6to4) judged as the IPv4 address they carry, unless the
//! policy's `[callbacks] allow` opens the host or range. Host names that spell an IPv4 address the way `inet_aton` reads it
//! (`2130706433`, `0x7f.1`, `0177.0.0.1`) count as that address. Pure: no IO.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

/// Why `ip` is refused, or `None` when a callback may go there.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b) {
        _ if (a, b, c, d) == (169, 254, 169, 254) => "a cloud metadata address",
        // Azure's platform endpoint (wire server, DNS, metadata-like).
        _ if (a, b, c, d) == (168, 63, 129, 16) => "a cloud metadata address",
        (0, _) => "an unspecified address",
        (127, _) => "a loopback address",
        (10, _) | (192, 168) => "a private address",
        (172, 16..=31) => "a private address",
        (169, 254) => "a link-local address",
        (100, 64..=127) => "a carrier-grade NAT address",
        (192, 0) if c == 0 => "a reserved address",
        (192, 0) if c == 2 => "a documentation address",
        (198, 51) if c == 100 => "a documentation address",
        (203, 0) if c == 113 => "a documentation address",
        (198, 18..=19) => "a reserved address",
        (224..=239, _) => "a multicast address",
        (240..=255, _) => "a reserved address",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded = |at: usize| {
        let bytes = ip.octets();
        Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
    };
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    match segments {
        // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d).
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] => refused_v4(embedded(12)),
        // NAT64 (64:ff9b::a.b.c.d).
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => refused_v4(embedded(12)),
        // NAT64 for local use (64:ff9b:1::/48): its translators sit in the local
        // network, and where the IPv4 address sits depends on their prefix length.
        [0x64, 0xff9b, 1, ..] => Some("a NAT64 local-use address"),
        [0x2001, 0xdb8, ..] => Some("a documentation address"),
        // 6to4 (2002:aabb:ccdd::).
        [0x2002, ..] => refused_v4(embedded(2)),
        [s, ..] if s & 0xfe00 == 0xfc00 => Some("a unique-local address"),
        [s, ..] if s & 0xffc0 == 0xfe80 => Some("a link-local address"),
        [s, ..] if s & 0xffc0 == 0xfec0 => Some("a site-local address"),
        [s, ..] if s & 0xff00 == 0xff00 => Some("a multicast address"),
        _ => None,
    }
}

/// A host as `inet_aton` reads it: 1 to 4 parts, each decimal, octal (leading `0`) or
/// hex (`0x`), the last filling the remaining bytes. `None` when it is not one.
pub fn loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(4);
    for part in &parts {
        let lower = part.to_ascii_lowercase();
        let value = if let Some(hex) = lower.strip_prefix("0x") {
            if hex.is_empty() {
                0
            } else {
                u64::from_str_radix(hex, 16).ok()?
            }
        } else if lower.len() > 1 && lower.starts_with('0') {
            u64::from_str_radix(&lower[1..], 8).ok()?
        } else if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
            lower.parse().ok()?
        } else {
            return None;
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) || *last >= 1u64 << (8 * (5 - values.len())) {
        return None;
    }
    let mut address = *last;
    for (i, &value) in leading.iter().enumerate() {
        address |= value << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(u32::try_from(address).ok()?))
}

/// Where a callback URL points, as far as it can be told without DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as written (IPv6 without its brackets), lower-case.
    pub host: String,
    /// The address, when the host is one (in any form `inet_aton` reads).
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// Reads a callback URL; the error says why it cannot work (answered 422 at request
/// time, never retried): not http(s), no host, credentials, control characters.
pub fn target(url: &str) -> Result<Target, String> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("callback_url must not contain spaces or control characters".into());
    }
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| "callback_url is not a valid URL".to_owned())?;
    let port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err("callback_url must be an http(s) URL".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "callback_url has no host".to_owned())?;
    if authority.as_str().contains('@') {
        return Err("callback_url must not carry credentials (user:password@)".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("callback_url has no host".into());
    }
    // A port written must be one (`Authority::port` reads `:99999` as no port at all,
    // which would send the callback to the scheme's default instead).
    let written = authority.as_str();
    let after_host = written
        .rfind(']')
        .map_or(written, |end| &written[end + 1..]);
    let port = match after_host.rsplit_once(':') {
        None => port,
        Some((_, text)) => match text.parse::<u16>() {
            Ok(given) if given > 0 => given,
            _ => return Err(format!("callback_url's port {text:?} is not 1 to 65535")),
        },
    };
    let host = host.to_ascii_lowercase();
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => loose_ipv4(&host).map(IpAddr::V4),
    };
    let last_label = host.rsplit('.').next().unwrap_or_default();
    let numeric = |l: &str| l.bytes().all(|b| b.is_ascii_digit()) || l.starts_with("0x");
    if ip.is_none() && !last_label.is_empty() && numeric(last_label) {
        return Err(format!(
            "callback_url's host {host:?} is not a valid address"
        ));
    }
    Ok(Target { host, ip, port })
}

/// Refuses `ip` (reached for `host`) unless the policy opens the host or the range.
pub fn check(host: &str, ip: IpAddr, allow: &Allow) -> Result<(), String> {
    match refused(ip) {
        Some(why) if !allow.host(host) && !allow.ip(ip) => Err(format!(
            "callback_url {host} is {why} ({ip}); [callbacks] allow in the policy opens it"
        )),
        _ => Ok(()),
    }
}

/// `[callbacks] allow` from the policy: host names and address ranges callbacks may
/// reach even though they are internal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    hosts: Vec<String>,
    ranges: Vec<(IpAddr, u8)>,
}

impl Allow {
    /// Reads entries such as `"hooks.internal"`, `"10.20.0.0/16"`, `"127.0.0.1"`,
    /// `"::1"`; the error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allow = Allow::default();
        for entry in entries {
            let bad = || {
                format!(
                    "{entry:?} is neither a host name nor an address or range such as 10.20.0.0/16"
                )
            };
            let (address, bits) = match entry.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (entry.as_str(), None),
            };
            match (address.parse::<IpAddr>(), bits) {
                (Ok(ip), bits) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits = match bits {
                        Some(bits) => bits
                            .parse::<u8>()
                            .ok()
                            .filter(|b| *b <= max)
                            .ok_or_else(bad)?,
                        None => max,
                    };
                    allow.ranges.push((ip, bits));
                }
                (Err(_), None) if is_host_name(entry) => {
                    allow.hosts.push(entry.to_ascii_lowercase())
                }
                _ => return Err(bad()),
            }
        }
        Ok(allow)
    }

    /// Whether the host name (as written in the URL) is opened by name.
    pub fn host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether `ip` lies in an opened range.
    pub fn ip(&self, ip: IpAddr) -> bool {
        self.ranges
            .iter()
            .any(|&(net, bits)| in_range(ip, net, bits))
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Resolves host names for callbacks; tests inject their own, so that no test asks
/// real DNS or reaches an address it did not choose.
pub trait Resolver: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system's resolver.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Why a callback is not sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It can never work (a bad URL, an internal address): dead-letter it.
    Never(String),
    /// It may work later (DNS failed): retry.
    NotNow(String),
}

/// The addresses a callback to `url` may connect to: the literal address, or every
/// address its host resolves to, each checked against `allow` (one refused address
/// refuses the callback, so a DNS answer cannot mix an internal one in).
pub async fn checked_addresses(
    url: &str,
    allow: &Allow,
    resolver: &dyn Resolver,
) -> Result<(Target, Vec<SocketAddr>), Refusal> {
    let target = target(url).map_err(Refusal::Never)?;
    let addresses = match target.ip {
        Some(ip) => vec![SocketAddr::new(ip, target.port)],
        None => resolver
            .resolve(&target.host, target.port)
            .await
            .map_err(|error| Refusal::NotNow(format!("cannot resolve {}: {error}", target.host)))?,
    };
    if addresses.is_empty() {
        return Err(Refusal::NotNow(format!("{} has no address", target.host)));
    }
    for address in &addresses {
        check(&target.host, address.ip(), allow).map_err(Refusal::Never)?;
    }
    Ok((target, addresses))
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
