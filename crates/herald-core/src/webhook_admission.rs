//! Admission for provider webhooks: at most `webhook_rate_per_minute` requests per source
//! address and channel in each one-minute window, counted in memory per instance. It runs
//! before any signature check or database work, so a flood costs one map lookup per
//! request, and the map is bounded, so a flood from many addresses cannot grow it.

use crate::ids::ChannelId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// The window: a fixed minute, so the whole map is forgotten at once when it turns.
const WINDOW_MS: i64 = 60_000;

/// Most (source, channel) pairs counted in one window (a few MB at most). Once full, pairs
/// not seen yet this window share one allowance: an attacker with many addresses can then
/// slow newcomers for the rest of the minute, but never grow memory.
pub const MAX_TRACKED: usize = 50_000;

/// Who is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    /// An IPv4 address, or the /64 of an IPv6 one (one host is given a whole /64, so the
    /// low bits are free to change).
    Network(IpAddr),
    /// The server did not record the connecting address (in-process callers).
    Unrecorded,
    /// The map was full when this pair first came in the window.
    Overflow,
}

#[derive(Debug, Default)]
struct Window {
    /// `now_ms / WINDOW_MS` of the window being counted.
    index: i64,
    counts: HashMap<(Source, ChannelId), u64>,
}

/// Shared by every clone of the HTTP state; one per process.
#[derive(Debug, Default)]
pub struct WebhookLimiter {
    window: Mutex<Window>,
}

fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !(u64::MAX as u128)).into()),
        },
    }
}

impl WebhookLimiter {
    /// Counts one request from `peer` for `channel_id` and admits it, or refuses it with the
    /// seconds until the window turns (for `Retry-After`).
    pub fn admit(
        &self,
        peer: Option<IpAddr>,
        channel_id: ChannelId,
        per_minute: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        let index = now_ms.div_euclid(WINDOW_MS);
        // A panic elsewhere while holding the lock leaves plain counters: still usable.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if window.index != index {
            window.index = index;
            window.counts.clear();
        }
        let source = peer.map_or(Source::Unrecorded, |ip| Source::Network(network(ip)));
        let mut key = (source, channel_id);
        if !window.counts.contains_key(&key) && window.counts.len() >= MAX_TRACKED {
            // One key for all latecomers, whatever channel they name: the channel id comes
            // from the path, so it must not be able to mint keys either.
            key = (Source::Overflow, ChannelId(0));
        }
        let count = window.counts.entry(key).or_insert(0);
        if *count >= per_minute {
            let window_ends = (index + 1) * WINDOW_MS;
            let wait_ms = u64::try_from(window_ends - now_ms).unwrap_or(0);
            return Err(wait_ms.div_ceil(1000).max(1));
        }
        *count += 1;
        Ok(())
    }

    /// How many (source, channel) pairs the current window counts.
    pub fn tracked(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counts
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn limits_each_address_and_channel_within_a_window() {
        let limiter = WebhookLimiter::default();
        let t = 10 * WINDOW_MS + 15_000;
        for _ in 0..3 {
            assert_eq!(limiter.admit(ip("192.0.2.1"), ChannelId(7), 3, t), Ok(()));
        }
        assert_eq!(limiter.admit(ip("192.0.2.1"), ChannelId(7), 3, t), Err(45));
        assert_eq!(
            limiter.admit(ip("192.0.2.1"), ChannelId(7), 3, t + 44_500),
            Err(1)
        );
        // Other address, other channel: their own allowance.
        assert_eq!(limiter.admit(ip("192.0.2.2"), ChannelId(7), 3, t), Ok(()));
        assert_eq!(limiter.admit(ip("192.0.2.1"), ChannelId(8), 3, t), Ok(()));
        // The next window starts afresh.
        assert_eq!(
            limiter.admit(ip("192.0.2.1"), ChannelId(7), 3, 11 * WINDOW_MS),
            Ok(())
        );
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = WebhookLimiter::default();
        assert_eq!(limiter.admit(ip("2001:db8::1"), ChannelId(1), 1, 0), Ok(()));
        assert_eq!(
            limiter.admit(ip("2001:db8::ffff:2"), ChannelId(1), 1, 0),
            Err(60)
        );
        assert_eq!(
            limiter.admit(ip("2001:db8:0:1::1"), ChannelId(1), 1, 0),
            Ok(())
        );
        assert_eq!(limiter.admit(ip("192.0.2.9"), ChannelId(1), 1, 0), Ok(()));
        assert_eq!(
            limiter.admit(ip("::ffff:192.0.2.9"), ChannelId(1), 1, 0),
            Err(60)
        );
    }

    #[test]
    fn the_map_never_grows_past_its_bound() {
        let limiter = WebhookLimiter::default();
        // Many addresses, each naming a different channel id.
        for i in 0..(MAX_TRACKED as u32 + 1_000) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.admit(Some(addr), ChannelId(i64::from(i)), 1_000_000, 0);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED + 1);
        // Pairs already counted keep their own allowance; latecomers share one.
        assert_eq!(limiter.admit(ip("10.0.0.0"), ChannelId(0), 2, 0), Ok(()));
        assert_eq!(limiter.admit(ip("10.0.0.0"), ChannelId(0), 2, 0), Err(60));
        assert_eq!(
            limiter.admit(ip("203.0.113.1"), ChannelId(5), 1_001, 0),
            Ok(())
        );
        assert_eq!(
            limiter.admit(ip("203.0.113.2"), ChannelId(6), 1_001, 0),
            Err(60)
        );
    }
}
