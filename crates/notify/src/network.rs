//! The guard on outgoing requests (SSRF): a webhook URL is chosen by whoever
//! holds an admin key, and must not become a way to reach the services next to
//! Tollgate. Every address a URL's host resolves to is checked (after DNS
//! resolution, at connect time, so a name that later resolves elsewhere is
//! checked again), and loopback, private, link-local, shared (CGNAT),
//! unspecified, multicast and broadcast addresses are refused unless
//! `allow_private_networks` is set or the address is in `allowed_networks`.
//! Redirects are not followed and proxies from the environment are not used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which destinations outgoing requests may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Allows every address (a private deployment where receivers are internal).
    pub allow_private_networks: bool,
    /// Networks allowed even though they are private (`127.0.0.1/32`, `10.1.0.0/16`).
    pub allowed_networks: Vec<IpNet>,
}

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{addr} is a {kind} address: outgoing requests to it are refused (allow it with notify.allowed_networks or notify.allow_private_networks)"
)]
pub struct Refused {
    pub addr: IpAddr,
    pub kind: &'static str,
}

impl NetworkPolicy {
    /// `Ok` when a request may go to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private_networks || self.allowed_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match special_kind(ip) {
            Some(kind) => Err(Refused { addr: ip, kind }),
            None => Ok(()),
        }
    }
}

/// What kind of non-public address `ip` is, if it is one.
fn special_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_kind(v4);
            }
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg0 & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg0 & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.segments()[..6] == [0, 0, 0, 0, 0, 0] || seg0 == 0x0064 {
                // IPv4-compatible and NAT64 forms can reach IPv4 hosts.
                Some("translated")
            } else {
                None
            }
        }
    }
}

fn v4_kind(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if v4.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if v4.is_broadcast() {
        Some("broadcast")
    } else if v4.is_multicast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (CGNAT)")
    } else {
        None
    }
}

/// A DNS resolver for `reqwest` that drops refused addresses and fails when
/// none is left, so the check holds at connect time.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    pub policy: Arc<NetworkPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refused = Some(r);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(r) => format!("{host} resolves to {r}").into(),
                    None => format!("{host} does not resolve").into(),
                };
                return Err(why);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks a URL before a request: an `http`/`https` scheme, a host, and when
/// the host is an IP literal (which skips DNS) the policy.
pub fn check_url(policy: &NetworkPolicy, url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    match parsed.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => policy.check(IpAddr::V4(ip)).map_err(|e| e.to_string())?,
        Some(url::Host::Ipv6(ip)) => policy.check(IpAddr::V6(ip)).map_err(|e| e.to_string())?,
        Some(url::Host::Domain(d)) => {
            if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") {
                policy
                    .check(IpAddr::V6(Ipv6Addr::LOCALHOST))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not carry credentials".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn private_loopback_and_link_local_are_refused_by_default() {
        let p = NetworkPolicy::default();
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.2.3.4", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            assert_eq!(
                p.check(ip(addr)),
                Err(Refused {
                    addr: ip(addr),
                    kind
                }),
                "{addr}"
            );
        }
        for addr in ["93.184.215.14", "1.1.1.1", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn an_allow_list_opens_exactly_its_networks() -> Result<(), ipnet::AddrParseError> {
        let p = NetworkPolicy {
            allow_private_networks: false,
            allowed_networks: vec!["127.0.0.1/32".parse()?],
        };
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert!(p.check(ip("127.0.0.2")).is_err());
        assert!(p.check(ip("10.0.0.1")).is_err());
        let all = NetworkPolicy {
            allow_private_networks: true,
            allowed_networks: vec![],
        };
        assert_eq!(all.check(ip("10.0.0.1")), Ok(()));
        Ok(())
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let p = NetworkPolicy::default();
        assert!(check_url(&p, "https://hooks.example.com/x").is_ok());
        let refused = check_url(&p, "http://127.0.0.1:9000/hook")
            .err()
            .unwrap_or_default();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(check_url(&p, "http://localhost/").is_err());
        assert!(check_url(&p, "http://[::1]/").is_err());
        assert!(check_url(&p, "ftp://example.com/").is_err());
        assert!(check_url(&p, "https://user:pw@example.com/").is_err());
        assert!(check_url(&p, "not a url").is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::new(NetworkPolicy::default()),
            }))
            .build();
        let Ok(client) = client else {
            panic!("client");
        };
        let err = client.get("http://localhost:9/").send().await.err();
        let text = err.map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(text.contains("loopback"), "{text}");
    }
}
