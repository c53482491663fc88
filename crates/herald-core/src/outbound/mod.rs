//! The one outbound address guard: every connection Herald opens to a destination that a
//! tenant or an operator configured (provider APIs, SMTP servers, customer webhooks) passes
//! through here, checked on the address actually connected to.
//!
//! By default loopback, private, link-local, unique-local, multicast, broadcast and
//! unspecified addresses are refused, so an admin of one organisation cannot point a channel
//! at the machine's own services or the cloud metadata endpoint (SSRF).
//! `outbound_allow_private = true` lifts the rule (self-hosted providers, tests);
//! `outbound_allow_cidrs` lifts it for listed networks only.

pub mod client;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;

/// Parses `outbound_allow_cidrs`: comma-separated CIDRs (a bare address counts as a /32 or
/// /128). Empty input is an empty list.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{part}` is not a CIDR such as 10.0.5.0/24"))
        })
        .collect()
}

/// Why an address is not a public destination, or `None` when it is one.
pub fn restricted_range(ip: IpAddr) -> Option<&'static str> {
    // `::ffff:127.0.0.1` is 127.0.0.1 on the wire.
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if a == 0 {
                // 0.0.0.0/8: "this network"; Linux connects 0.x.y.z to the local host.
                Some("unspecified")
            } else if a == 100 && (64..128).contains(&b) {
                Some("private (carrier-grade NAT)")
            } else if a >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                // Deprecated site-local, still routed privately where it is used.
                Some("site-local")
            } else if let [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] = v6.segments() {
                // NAT64 (64:ff9b::/96): a gateway connects to the embedded IPv4 address.
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                restricted_range(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            } else {
                None
            }
        }
    }
}

/// The start of every refusal's message: stable, so logs, the API and tests can tell a
/// refused destination from a provider's own error.
pub const REFUSED: &str = "outbound destination refused";

/// Whether an error message is the guard's refusal.
pub fn is_refusal(message: &str) -> bool {
    message.contains(REFUSED)
}

/// A destination the guard will not connect to. The message names the configured host
/// and the kind of range, never an address a name resolved to (that would map the
/// internal network) nor anything about the port: nothing was connected to, so whether
/// something listens there is never revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host as configured (an IP literal or a name).
    pub host: String,
    /// The range of the (first) refused address, from [`restricted_range`].
    pub range: &'static str,
    /// Whether `host` is a name that resolved only to refused addresses.
    pub resolved: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.resolved {
            format!("`{}` resolves only to {} addresses", self.host, self.range)
        } else {
            format!("`{}` is a {} address", self.host, self.range)
        };
        write!(
            f,
            "{REFUSED}: {what}; Herald does not connect to loopback, private, link-local, \
             unique-local, multicast or unspecified addresses unless the operator sets \
             outbound_allow_private = true or lists the network in outbound_allow_cidrs"
        )
    }
}

impl std::error::Error for Refused {}

/// The outbound policy, built once from settings and shared by every channel a process
/// builds. Cloning is cheap and shares the HTTP client built for it.
#[derive(Clone, Default)]
pub struct OutboundGuard {
    allow_private: bool,
    allow_cidrs: Arc<[IpNet]>,
    /// The provider HTTP client that resolves through this guard, built on first use.
    client: Arc<OnceLock<Result<client::ProviderClient, String>>>,
}

impl std::fmt::Debug for OutboundGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundGuard")
            .field("allow_private", &self.allow_private)
            .field("allow_cidrs", &self.allow_cidrs)
            .finish()
    }
}

impl OutboundGuard {
    /// A guard refusing restricted ranges except `allow_cidrs` (everything with
    /// `allow_private`).
    pub fn new(allow_private: bool, allow_cidrs: Vec<IpNet>) -> OutboundGuard {
        OutboundGuard {
            allow_private,
            allow_cidrs: allow_cidrs.into(),
            client: Arc::default(),
        }
    }

    /// The guard of the settings `outbound_allow_private` and `outbound_allow_cidrs`
    /// (`Settings::outbound_guard` passes them).
    pub fn from_settings(allow_private: bool, allow_cidrs: &str) -> Result<OutboundGuard, String> {
        let cidrs = parse_cidrs(allow_cidrs).map_err(|e| format!("outbound_allow_cidrs: {e}"))?;
        Ok(OutboundGuard::new(allow_private, cidrs))
    }

    /// A guard that lets every address through: for destinations Herald started itself
    /// (`herald bench`'s local fake) and tests against loopback fakes.
    pub fn allow_all() -> OutboundGuard {
        OutboundGuard::new(true, Vec::new())
    }

    /// Why `ip` is refused, or None when it may be connected to.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private {
            return None;
        }
        let ip = ip.to_canonical();
        if self.allow_cidrs.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        restricted_range(ip)
    }

    /// Checks an address given literally (an IP in a URL or a host setting).
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(range) => Err(Refused {
                host: host.to_string(),
                range,
                resolved: false,
            }),
        }
    }

    /// Checks a URL whose host is an IP literal; a name passes here and is checked on
    /// the addresses it resolves to (reqwest does not ask a resolver about IP literals).
    /// The URL is already WHATWG-parsed, so `127.1`, `2130706433` and `0x7f.1` arrive as
    /// 127.0.0.1.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let Some(host) = url.host_str() else {
            return Ok(());
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// Keeps the addresses that may be connected to; refuses when none is left.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.refusal(a.ip()) {
                None => true,
                Some(range) => {
                    first_refusal.get_or_insert(range);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (true, Some(range)) => Err(Refused {
                host: host.to_string(),
                range,
                resolved: true,
            }),
            _ => Ok(allowed),
        }
    }

    /// Resolves `host` with the system resolver (an IP literal, bracketed or not, as
    /// itself) and returns the addresses that may be connected to. Connecting to exactly
    /// these is what makes the check hold against DNS rebinding.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_ip(host, ip).map_err(ResolveError::Refused)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ResolveError::Lookup(format!("cannot resolve `{host}`: {e}")))?
            .collect();
        if found.is_empty() {
            return Err(ResolveError::Lookup(format!(
                "cannot resolve `{host}`: no addresses"
            )));
        }
        let allowed = self.filter(host, found).map_err(ResolveError::Refused)?;
        Ok(allowed)
    }

    /// The provider HTTP client for this guard: names resolve through the guard, IP
    /// literals are checked before each request, redirects are not followed.
    pub fn http_client(&self) -> Result<client::ProviderClient, String> {
        self.client
            .get_or_init(|| {
                client::build_client(
                    client::CONNECT_TIMEOUT,
                    client::REQUEST_TIMEOUT,
                    self.clone_without_client(),
                )
            })
            .clone()
    }

    /// The same policy without the cached client (the client holds a guard; holding
    /// itself would be a cycle).
    fn clone_without_client(&self) -> OutboundGuard {
        OutboundGuard::new(self.allow_private, self.allow_cidrs.to_vec())
    }
}

/// Why a host gave no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The guard refused every address.
    Refused(Refused),
    /// The name did not resolve.
    Lookup(String),
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Refused(r) => r.fmt(f),
            ResolveError::Lookup(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ResolveError {}

/// reqwest's resolver for guarded clients: the system resolver, then the guard's filter,
/// so the addresses reqwest connects to are the checked ones.
pub struct GuardedResolver {
    pub guard: OutboundGuard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            match guard.resolve(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(ResolveError::Refused(r)) => Err(Box::new(r) as _),
                Err(ResolveError::Lookup(m)) => Err(m.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_name_the_bad_one() {
        assert_eq!(parse_cidrs("").map(|v| v.len()), Ok(0));
        assert_eq!(
            parse_cidrs(" 10.0.5.0/24 , fd00::/64,192.0.2.7").map(|v| v.len()),
            Ok(3)
        );
        let err = parse_cidrs("10.0.0.0/8,nonsense").unwrap_err();
        assert!(err.contains("`nonsense`"), "{err}");
    }

    #[test]
    fn restricted_ranges_are_named() {
        for (ip, want) in [
            ("127.0.0.1", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("224.0.0.1", Some("multicast")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("fd12::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::808:808", None),
            ("8.8.8.8", None),
            ("2001:4860:4860::8888", None),
        ] {
            let parsed: IpAddr = ip.parse().expect("test address");
            assert_eq!(restricted_range(parsed), want, "{ip}");
        }
    }

    fn sock(text: &str) -> SocketAddr {
        text.parse().expect("test socket address")
    }

    #[test]
    fn the_filter_keeps_public_addresses_and_refuses_when_none_is_left() {
        let guard = OutboundGuard::default();
        // A name with a public and a private address: only the public one is connected to.
        let kept = guard
            .filter(
                "mixed.example",
                [sock("10.0.0.5:443"), sock("93.184.216.34:443")],
            )
            .unwrap();
        assert_eq!(kept, vec![sock("93.184.216.34:443")]);
        // Only restricted ones: refused, naming the host and the range, not the address
        // (the name's internal address stays unknown to whoever reads the error).
        let refused = guard
            .filter("rebind.example", [sock("127.0.0.1:80"), sock("[::1]:80")])
            .unwrap_err();
        assert_eq!(refused.range, "loopback");
        assert!(refused.resolved);
        let message = refused.to_string();
        assert!(message.starts_with(REFUSED), "{message}");
        assert!(message.contains("`rebind.example`"), "{message}");
        assert!(!message.contains("127.0.0.1"), "{message}");
        assert!(message.contains("outbound_allow_private"), "{message}");
        assert!(is_refusal(&message));
        // Nothing found is not a refusal (the caller reports the lookup failure).
        assert_eq!(guard.filter("empty.example", []), Ok(vec![]));
    }

    #[test]
    fn operator_switches_lift_the_rule() {
        let metadata = sock("169.254.169.254:80");
        assert!(OutboundGuard::default().filter("m", [metadata]).is_err());
        assert_eq!(
            OutboundGuard::allow_all().filter("m", [metadata]),
            Ok(vec![metadata])
        );
        let cidr = OutboundGuard::new(false, parse_cidrs("10.0.5.0/24,fd00::/64").unwrap());
        assert!(cidr.refusal("10.0.5.9".parse().unwrap()).is_none());
        assert!(cidr.refusal("fd00::7".parse().unwrap()).is_none());
        assert!(cidr.refusal("::ffff:10.0.5.9".parse().unwrap()).is_none());
        assert_eq!(cidr.refusal("10.0.6.1".parse().unwrap()), Some("private"));
        assert_eq!(cidr.refusal("127.0.0.1".parse().unwrap()), Some("loopback"));
    }

    #[test]
    fn url_ip_literals_are_checked_in_every_spelling() {
        let guard = OutboundGuard::default();
        for url in [
            "http://127.0.0.1:4010/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://0.0.0.0:8080/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
            "http://[fd00::1]/",
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            let err = guard.check_url(&parsed).unwrap_err();
            assert!(!err.resolved, "{url}");
        }
        for url in [
            "https://api.twilio.com/",
            "http://93.184.216.34/",
            "http://localhost/",
        ] {
            // Names are the resolver's to check.
            assert!(
                guard.check_url(&reqwest::Url::parse(url).unwrap()).is_ok(),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn resolving_checks_literals_and_names() {
        let guard = OutboundGuard::default();
        for host in ["127.0.0.1", "::1", "[::1]", "0.0.0.0", "localhost", "127.1"] {
            match guard.resolve(host, 25).await {
                Err(ResolveError::Refused(r)) => assert_eq!(r.host, host),
                other => panic!("{host}: {other:?}"),
            }
        }
        assert_eq!(
            OutboundGuard::allow_all().resolve("127.0.0.1", 25).await,
            Ok(vec![sock("127.0.0.1:25")])
        );
        assert!(matches!(
            guard.resolve("no-such-host.invalid", 25).await,
            Err(ResolveError::Lookup(_))
        ));
    }

    #[tokio::test]
    async fn the_reqwest_resolver_refuses_with_the_guards_error() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver {
            guard: OutboundGuard::default(),
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let Err(err) = resolver.resolve(name).await else {
            panic!("localhost resolved through the guard");
        };
        let refused = err.downcast_ref::<Refused>().expect("the guard's error");
        assert_eq!(refused.range, "loopback");
        let allowing = GuardedResolver {
            guard: OutboundGuard::allow_all(),
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = match allowing.resolve(name).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
