//! A channel's price, for the estimate before a campaign starts (docs/CAMPAIGNS.md): a
//! price per billing unit (an SMS segment on an SMS channel, a message otherwise), in
//! one currency, optionally different by destination prefix (`+44`, `+1`, `+1787`).
//!
//! Prices are decimal strings (`0.0079`) kept as integer millionths of the currency unit,
//! so sums over a million messages are exact; a price finer than a millionth is refused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Most per-prefix prices a channel may have.
pub const MAX_PREFIXES: usize = 500;
/// The largest price per unit: 1,000 currency units.
const MAX_MICROS: i64 = 1_000_000_000;

/// Millionths of a currency unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(pub i64);

impl Micros {
    /// `0.0079` → 7,900: one to four digits, optionally a point and one to six more
    /// (the API's schema states the same, `PRICE_PATTERN`), at most 1,000.
    pub fn parse(text: &str) -> Result<Micros, String> {
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(whole, 4) || (text.contains('.') && !digits(frac, 6)) {
            return Err(format!(
                "`{}` is not a price: write a decimal number with at most six decimals, such as 0.0079",
                text.chars().take(40).collect::<String>()
            ));
        }
        let whole: i64 = whole.parse().unwrap_or(i64::MAX);
        let frac_micros: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
        let micros = whole.saturating_mul(1_000_000).saturating_add(frac_micros);
        if micros > MAX_MICROS {
            return Err(format!("`{text}` is more than 1000 per unit"));
        }
        Ok(Micros(micros))
    }
}

/// A price as the API's schema states it: what [`Micros::parse`] reads, before its limit.
pub const PRICE_PATTERN: &str = r"^[0-9]{1,4}(\.[0-9]{1,6})?$";
/// A number prefix: `+` and one to eight digits.
pub const PREFIX_PATTERN: &str = r"^\+[0-9]{1,8}$";
/// An ISO 4217 code, in either case.
pub const CURRENCY_PATTERN: &str = "^[A-Za-z]{3}$";

impl fmt::Display for Micros {
    /// The shortest decimal: 7,900 → `0.0079`, 2,000,000 → `2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.unsigned_abs();
        let (whole, frac) = (v / 1_000_000, v % 1_000_000);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{frac:06}");
        write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// A channel's prices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// The price per unit where no prefix matches; None: unknown there.
    pub default: Option<Micros>,
    /// Prices by destination prefix (`+44`), the longest matching prefix wins.
    pub by_prefix: Vec<(String, Micros)>,
}

impl Pricing {
    /// From the API's fields, exactly as given: a currency (three letters), a default
    /// price and prices by prefix (`+44`); the document's patterns state the same rules.
    pub fn new(
        currency: &str,
        default: Option<&str>,
        by_prefix: &[(String, String)],
    ) -> Result<Pricing, String> {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "`{}` is not a currency code: use three letters (ISO 4217), e.g. USD or EUR",
                currency.chars().take(20).collect::<String>()
            ));
        }
        let default = default.map(Micros::parse).transpose()?;
        if by_prefix.len() > MAX_PREFIXES {
            return Err(format!("at most {MAX_PREFIXES} prefix prices"));
        }
        let mut prices: Vec<(String, Micros)> = Vec::with_capacity(by_prefix.len());
        for (prefix, price) in by_prefix {
            let digits = prefix.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "`{}` is not a number prefix: write + and 1 to 8 digits, e.g. +44",
                    prefix.chars().take(20).collect::<String>()
                ));
            }
            if prices.iter().any(|(p, _)| p == prefix) {
                return Err(format!("the prefix {prefix} is priced twice"));
            }
            prices.push((prefix.clone(), Micros::parse(price)?));
        }
        // Longest first, so the first match is the most specific.
        prices.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        if default.is_none() && prices.is_empty() {
            return Err("give a price per unit, a prefix price, or both".into());
        }
        Ok(Pricing {
            currency: currency.to_ascii_uppercase(),
            default,
            by_prefix: prices,
        })
    }

    /// From the command line's words: `PREFIX=PRICE` entries (`+44=0.04`), white space
    /// around each part allowed.
    pub fn parse(
        currency: &str,
        default: Option<&str>,
        entries: &[String],
    ) -> Result<Pricing, String> {
        let mut by_prefix = Vec::with_capacity(entries.len());
        for entry in entries {
            let (prefix, price) = entry.split_once('=').ok_or_else(|| {
                format!(
                    "`{}` is not PREFIX=PRICE (e.g. +44=0.04)",
                    entry.chars().take(40).collect::<String>()
                )
            })?;
            by_prefix.push((prefix.trim().to_string(), price.trim().to_string()));
        }
        Pricing::new(currency.trim(), default.map(str::trim), &by_prefix)
    }

    /// The price of one unit to `address`: the longest prefix that matches, else the
    /// default; None when neither applies.
    pub fn unit_price(&self, address: &str) -> Option<Micros> {
        self.by_prefix
            .iter()
            .find(|(p, _)| address.starts_with(p.as_str()))
            .map(|(_, m)| *m)
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly_and_print_short() {
        assert_eq!(Micros::parse("0.0079"), Ok(Micros(7_900)));
        assert_eq!(Micros::parse("2"), Ok(Micros(2_000_000)));
        assert_eq!(Micros::parse("0.000001"), Ok(Micros(1)));
        assert_eq!(Micros(7_900).to_string(), "0.0079");
        assert_eq!(Micros(2_000_000).to_string(), "2");
        assert_eq!(Micros(12_345_678).to_string(), "12.345678");
        for bad in [
            "",
            "-1",
            "1e3",
            "0.0000001",
            "abc",
            "1.",
            ".5",
            "1001",
            " 1",
            "12345",
        ] {
            assert!(Micros::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_longest_prefix_wins_then_the_default() {
        let p = Pricing::parse(
            "usd",
            Some("0.0079"),
            &["+44=0.04".into(), "+4477=0.05".into()],
        )
        .unwrap();
        assert_eq!(p.currency, "USD");
        assert_eq!(p.unit_price("+447700900123"), Some(Micros(50_000)));
        assert_eq!(p.unit_price("+442079460958"), Some(Micros(40_000)));
        assert_eq!(p.unit_price("+14155550100"), Some(Micros(7_900)));
        let only = Pricing::parse("EUR", None, &["+33=0.07".into()]).unwrap();
        assert_eq!(only.unit_price("+14155550100"), None);
        assert!(Pricing::parse("dollars", Some("1"), &[]).is_err());
        assert!(Pricing::parse("USD", None, &[]).is_err());
        assert!(Pricing::parse("USD", None, &["44=0.1".into()]).is_err());
        assert!(Pricing::parse("USD", None, &["+44=0.1".into(), "+44=0.2".into()]).is_err());
    }
}
