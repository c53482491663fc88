//! SMS segment counting (README §1.6): providers bill and rate-limit by segment, not by
//! message, so the send limiter and cost estimates need the same count the carrier will
//! make.
//!
//! A body that fits the GSM 03.38 default alphabet (basic table plus the extension table,
//! whose characters take two septets: an escape and the character) is sent as GSM-7: 160
//! septets in one segment, 153 per segment once split. Anything else is UCS-2, counted in
//! UTF-16 code units: 70 in one segment, 67 per segment once split. A split never separates
//! an escape pair or a surrogate pair, so a segment can end one unit short. An empty body
//! counts as one segment, as Twilio bills it. Twilio's `SmartEncoded` substitutions are not
//! modelled: this counts the body as given.

/// How the body will be encoded on the air interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmsSegments {
    pub encoding: Encoding,
    /// Number of segments (at least 1).
    pub segments: u32,
    /// Septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2.
    pub units: u32,
}

const GSM7_SINGLE: u32 = 160;
const GSM7_MULTI: u32 = 153;
const UCS2_SINGLE: u32 = 70;
const UCS2_MULTI: u32 = 67;

/// Septets a character takes in GSM-7: 1 in the basic table, 2 in the extension table
/// (escape + character), `None` when GSM-7 cannot carry it.
fn gsm7_septets(c: char) -> Option<u32> {
    match c {
        // Basic table (3GPP TS 23.038 §6.2.1), without the escape code 0x1B itself.
        '@'
        | '£'
        | '$'
        | '¥'
        | 'è'
        | 'é'
        | 'ù'
        | 'ì'
        | 'ò'
        | 'Ç'
        | '\n'
        | 'Ø'
        | 'ø'
        | '\r'
        | 'Å'
        | 'å'
        | 'Δ'
        | '_'
        | 'Φ'
        | 'Γ'
        | 'Λ'
        | 'Ω'
        | 'Π'
        | 'Ψ'
        | 'Σ'
        | 'Θ'
        | 'Ξ'
        | 'Æ'
        | 'æ'
        | 'ß'
        | 'É'
        | ' '
        | '!'
        | '"'
        | '#'
        | '¤'
        | '%'
        | '&'
        | '\''
        | '('
        | ')'
        | '*'
        | '+'
        | ','
        | '-'
        | '.'
        | '/'
        | '0'..='9'
        | ':'
        | ';'
        | '<'
        | '='
        | '>'
        | '?'
        | '¡'
        | 'A'..='Z'
        | 'Ä'
        | 'Ö'
        | 'Ñ'
        | 'Ü'
        | '§'
        | '¿'
        | 'a'..='z'
        | 'ä'
        | 'ö'
        | 'ñ'
        | 'ü'
        | 'à' => Some(1),
        // Extension table (§6.2.1.1).
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Segments needed for items of the given widths: one segment if the total fits `single`,
/// else greedy packing into segments of `multi` that never splits an item.
fn pack(widths: impl Iterator<Item = u32> + Clone, single: u32, multi: u32) -> (u32, u32) {
    let units: u32 = widths.clone().fold(0, u32::saturating_add);
    if units <= single {
        return (1, units);
    }
    let (mut segments, mut used) = (1u32, 0u32);
    for w in widths {
        if used + w > multi {
            segments += 1;
            used = 0;
        }
        used += w;
    }
    (segments, units)
}

/// The encoding, segment count and unit count of an SMS body.
pub fn sms_segments(body: &str) -> SmsSegments {
    let gsm = body.chars().map(gsm7_septets);
    if gsm.clone().all(|w| w.is_some()) {
        let (segments, units) = pack(gsm.flatten(), GSM7_SINGLE, GSM7_MULTI);
        SmsSegments {
            encoding: Encoding::Gsm7,
            segments,
            units,
        }
    } else {
        let widths = body.chars().map(|c| c.len_utf16() as u32);
        let (segments, units) = pack(widths, UCS2_SINGLE, UCS2_MULTI);
        SmsSegments {
            encoding: Encoding::Ucs2,
            segments,
            units,
        }
    }
}

/// The characters of `body` that GSM-7 cannot carry (each forces the whole message into
/// UCS-2), in order of first appearance, each once.
pub fn ucs2_characters(body: &str) -> Vec<char> {
    let mut found: Vec<char> = Vec::new();
    for c in body.chars() {
        if gsm7_septets(c).is_none() && !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

/// A GSM-7 replacement for a character that forces UCS-2, when a common one exists: the
/// typographic quotes, dashes, spaces and ellipsis word processors insert, and accented
/// letters outside the GSM alphabet. Based on the substitutions Twilio's Smart Encoding
/// documents; None for characters with no readable replacement (emoji, other scripts).
pub fn gsm7_replacement(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{02BC}' | '`'
        | '\u{00B4}' => "'",
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
        | '\u{00BB}' => "\"",
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
        | '\u{2212}' => "-",
        '\u{2026}' => "...",
        '\u{00A0}' | '\u{2002}' | '\u{2003}' | '\u{2009}' | '\u{200A}' | '\u{202F}'
        | '\u{3000}' => " ",
        '\u{200B}' | '\u{FEFF}' | '\u{00AD}' => "",
        '\u{2022}' | '\u{00B7}' => "-",
        '\u{2039}' => "<",
        '\u{203A}' => ">",
        '\u{02C6}' => "^",
        '\u{02DC}' => "~",
        '\u{00A9}' => "(c)",
        '\u{00AE}' => "(R)",
        '\u{2122}' => "TM",
        'á' | 'â' | 'ã' | 'ā' | 'ă' | 'ą' => "a",
        'Á' | 'Â' | 'Ã' | 'À' | 'Ā' | 'Ă' | 'Ą' => "A",
        'ç' | 'ć' | 'č' | 'ĉ' => "c",
        'Ć' | 'Č' | 'Ĉ' => "C",
        'ê' | 'ë' | 'ē' | 'ę' | 'ě' => "e",
        'È' | 'Ê' | 'Ë' | 'Ē' | 'Ę' | 'Ě' => "E",
        'í' | 'î' | 'ï' | 'ī' | 'į' => "i",
        'Í' | 'Ì' | 'Î' | 'Ï' | 'Ī' | 'Į' => "I",
        'ó' | 'ô' | 'õ' | 'ō' | 'ő' => "o",
        'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ō' | 'Ő' => "O",
        'ú' | 'û' | 'ū' | 'ű' | 'ů' | 'ų' => "u",
        'Ú' | 'Ù' | 'Û' | 'Ū' | 'Ű' | 'Ů' | 'Ų' => "U",
        'ý' | 'ÿ' => "y",
        'Ý' | 'Ÿ' => "Y",
        'ł' => "l",
        'Ł' => "L",
        'ń' | 'ň' => "n",
        'Ń' | 'Ň' => "N",
        'ś' | 'š' => "s",
        'Ś' | 'Š' => "S",
        'ź' | 'ż' | 'ž' => "z",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'ř' => "r",
        'Ř' => "R",
        'ť' => "t",
        'Ť' => "T",
        'ď' => "d",
        'Ď' => "D",
        'œ' => "oe",
        'Œ' => "OE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ucs2_characters_are_named_with_gsm7_replacements() {
        let body = "It’s “great” — café… ❤ it’s";
        assert_eq!(ucs2_characters(body), vec!['’', '“', '”', '—', '…', '❤']);
        assert_eq!(sms_segments(body).encoding, Encoding::Ucs2);
        // Every suggestion is itself GSM-7, so applying them all makes the body GSM-7.
        let fixed: String = body
            .chars()
            .filter(|c| *c != '❤')
            .map(|c| gsm7_replacement(c).map_or(c.to_string(), str::to_string))
            .collect();
        assert_eq!(sms_segments(&fixed).encoding, Encoding::Gsm7, "{fixed}");
        assert_eq!(gsm7_replacement('❤'), None);
        assert_eq!(gsm7_replacement('é'), None, "é is GSM-7 already");
    }

    proptest! {
        #[test]
        fn every_replacement_is_gsm7(c in any::<char>()) {
            if let Some(r) = gsm7_replacement(c) {
                prop_assert!(r.chars().all(|x| gsm7_septets(x).is_some()), "{c:?} -> {r:?}");
                prop_assert!(gsm7_septets(c).is_none(), "{c:?} is GSM-7 already");
            }
        }
    }

    fn seg(body: &str) -> (Encoding, u32, u32) {
        let s = sms_segments(body);
        (s.encoding, s.segments, s.units)
    }

    #[test]
    fn empty_is_one_gsm_segment() {
        assert_eq!(seg(""), (Encoding::Gsm7, 1, 0));
    }

    #[test]
    fn gsm7_boundaries() {
        assert_eq!(seg(&"a".repeat(160)), (Encoding::Gsm7, 1, 160));
        assert_eq!(seg(&"a".repeat(161)), (Encoding::Gsm7, 2, 161));
        assert_eq!(seg(&"a".repeat(306)), (Encoding::Gsm7, 2, 306));
        assert_eq!(seg(&"a".repeat(307)), (Encoding::Gsm7, 3, 307));
        assert_eq!(seg(&"a".repeat(459)), (Encoding::Gsm7, 3, 459));
        assert_eq!(
            seg("Hello, world! @£$¥ ÄÖÑÜ§¿ äöñüà\r\n"),
            (Encoding::Gsm7, 1, 33)
        );
    }

    #[test]
    fn extension_characters_take_two_septets() {
        assert_eq!(seg("€"), (Encoding::Gsm7, 1, 2));
        assert_eq!(seg("{}[]~|^\\\u{0C}"), (Encoding::Gsm7, 1, 18));
        assert_eq!(seg(&"€".repeat(80)), (Encoding::Gsm7, 1, 160));
        assert_eq!(
            seg(&format!("{}a", "€".repeat(80))),
            (Encoding::Gsm7, 2, 161)
        );
        // 152 septets then an escape pair: it cannot straddle, so it opens segment 2
        // (153 + 153 would otherwise fit 306 septets exactly in two).
        let body = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(seg(&body), (Encoding::Gsm7, 3, 306));
        let body = format!("{}€{}", "a".repeat(151), "a".repeat(153));
        assert_eq!(seg(&body), (Encoding::Gsm7, 2, 306));
    }

    #[test]
    fn ucs2_boundaries() {
        assert_eq!(seg(&"й".repeat(70)), (Encoding::Ucs2, 1, 70));
        assert_eq!(seg(&"й".repeat(71)), (Encoding::Ucs2, 2, 71));
        assert_eq!(seg(&"й".repeat(134)), (Encoding::Ucs2, 2, 134));
        assert_eq!(seg(&"й".repeat(135)), (Encoding::Ucs2, 3, 135));
        // One non-GSM character switches the whole body, and € is one unit in UCS-2.
        assert_eq!(
            seg(&format!("{}ç", "a".repeat(69))),
            (Encoding::Ucs2, 1, 70)
        );
        assert_eq!(seg("€ç"), (Encoding::Ucs2, 1, 2));
        assert_eq!(
            seg("\u{1B}"),
            (Encoding::Ucs2, 1, 1),
            "a raw escape is not text"
        );
    }

    #[test]
    fn emoji_are_surrogate_pairs() {
        assert_eq!(seg("😀"), (Encoding::Ucs2, 1, 2));
        assert_eq!(seg(&"😀".repeat(35)), (Encoding::Ucs2, 1, 70));
        assert_eq!(
            seg(&format!("{}a", "😀".repeat(35))),
            (Encoding::Ucs2, 2, 71)
        );
        // 66 units then a pair: it cannot straddle, so it opens segment 2.
        let body = format!("{}😀{}", "a".repeat(66), "a".repeat(66));
        assert_eq!(seg(&body), (Encoding::Ucs2, 3, 134));
        let body = format!("{}😀{}", "a".repeat(65), "a".repeat(67));
        assert_eq!(seg(&body), (Encoding::Ucs2, 2, 134));
    }

    fn body_char() -> impl Strategy<Value = char> {
        prop_oneof![
            Just('a'),
            Just(' '),
            Just('€'),
            Just('['),
            Just('é'),
            Just('й'),
            Just('😀'),
            any::<char>(),
        ]
    }

    proptest! {
        #[test]
        fn segments_never_decrease_as_the_body_grows(chars in prop::collection::vec(body_char(), 0..400)) {
            let mut body = String::new();
            let mut last = sms_segments(&body);
            for c in chars {
                body.push(c);
                let now = sms_segments(&body);
                prop_assert!(now.segments >= last.segments, "{body:?}");
                prop_assert!(now.units > last.units || now.encoding != last.encoding);
                let (single, multi) = match now.encoding {
                    Encoding::Gsm7 => (GSM7_SINGLE, GSM7_MULTI),
                    Encoding::Ucs2 => (UCS2_SINGLE, UCS2_MULTI),
                };
                // Never fewer than the naive count, at most one short unit lost per split.
                let naive = if now.units <= single { 1 } else { now.units.div_ceil(multi) };
                prop_assert!(now.segments >= naive);
                prop_assert!(now.segments <= naive.max(1) + now.units / multi + 1);
                last = now;
            }
        }
    }
}
