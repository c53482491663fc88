//! Wall-clock time as integer milliseconds since the Unix epoch, the unit both stores use.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-28T11:00:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// Parses an RFC 3339 timestamp (any offset) into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!("`{s}` is not an RFC 3339 time ({e}): write it like 2026-12-01T09:00:00Z")
        })
}

/// A duration as a person reads it: `5.9 s`, `4 min 10 s`, `1 h 2 min 5 s`.
pub fn human_duration(secs: f64) -> String {
    if secs < 60.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        return format!("{tenths} s");
    }
    let total = secs.ceil() as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    if h == 0 {
        format!("{m} min {s} s")
    } else {
        format!("{h} h {m} min {s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(5.9), "5.9 s");
        assert_eq!(human_duration(250.0), "4 min 10 s");
        assert_eq!(human_duration(3725.0), "1 h 2 min 5 s");
    }

    #[test]
    fn round_trips_through_rfc3339() {
        let t = 1_790_000_000_123;
        assert_eq!(parse_rfc3339(&rfc3339(t)), Ok(t));
        assert!(parse_rfc3339("tomorrow").is_err());
    }
}
