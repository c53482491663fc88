//! The one outbound address guard: every connection Herald opens to a destination that a
//! tenant or an operator configured (provider APIs, SMTP servers, customer webhooks) passes
//! through here, checked on the address actually connected to.
//!
//! By default loopback, private, link-local, unique-local, multicast, broadcast and
//! unspecified addresses are refused, so an admin of one organisation cannot point a channel
//! at the machine's own services or the cloud metadata endpoint (SSRF).
//! `outbound_allow_private = true` lifts the rule (self-hosted providers, tests);
//! `outbound_allow_cidrs` lifts it for listed networks only.

use std::net::IpAddr;

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
            } else {
                None
            }
        }
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
            ("8.8.8.8", None),
            ("2001:4860:4860::8888", None),
        ] {
            let parsed: IpAddr = ip.parse().expect("test address");
            assert_eq!(restricted_range(parsed), want, "{ip}");
        }
    }
}
