//! Opt-out keywords in inbound messages (README §1.8). Twilio only blocks the sender or
//! service the person replied to, and short codes outside a Messaging Service get no
//! automatic handling at all, so Herald recognises the keywords itself and keeps the
//! suppression list across senders and channels.
//!
//! A keyword counts only as the **whole message**, in any case: "STOP PLEASE" is not an
//! opt-out. Surrounding whitespace is ignored; so is surrounding ASCII punctuation
//! ("Stop.", "STOP!"), which the README does not mention: our policy, erring on the side of
//! honouring an opt-out. Only the keywords the README lists are recognised (no "STOP ALL"
//! with a space, no other languages).

/// What an inbound keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// Opt out: suppress the address.
    Stop,
    /// Opt back in: lift the suppression.
    Start,
    /// Ask for information; changes nothing.
    Help,
}

const STOP: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const START: &[&str] = &["START", "YES", "UNSTOP"];
const HELP: &[&str] = &["HELP", "INFO"];

/// The keyword an inbound message body consists of, if any.
pub fn keyword(body: &str) -> Option<Keyword> {
    let word = body.trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation());
    let is = |list: &[&str]| list.iter().any(|k| k.eq_ignore_ascii_case(word));
    if is(STOP) {
        Some(Keyword::Stop)
    } else if is(START) {
        Some(Keyword::Start)
    } else if is(HELP) {
        Some(Keyword::Help)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_keyword_in_any_case() {
        for (list, expected) in [
            (STOP, Keyword::Stop),
            (START, Keyword::Start),
            (HELP, Keyword::Help),
        ] {
            for k in list {
                let lower = k.to_lowercase();
                let mut mixed: String = String::new();
                for (i, c) in lower.chars().enumerate() {
                    mixed.push(if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    });
                }
                for body in [k.to_string(), lower, mixed] {
                    assert_eq!(keyword(&body), Some(expected), "{body:?}");
                }
            }
        }
        assert_eq!(STOP.len() + START.len() + HELP.len(), 13);
    }

    #[test]
    fn surrounding_whitespace_and_punctuation_are_ignored() {
        for body in [
            " stop ",
            "\tSTOP\r\n",
            "Stop.",
            "STOP!",
            "\"stop\"",
            "...Unsubscribe?!",
            "\u{a0}End\u{3000}",
        ] {
            assert_eq!(keyword(body), Some(Keyword::Stop), "{body:?}");
        }
        assert_eq!(keyword(" yes! "), Some(Keyword::Start));
        assert_eq!(keyword("info?"), Some(Keyword::Help));
    }

    #[test]
    fn only_the_whole_message_counts() {
        for body in [
            "STOP PLEASE",
            "please stop",
            "PLEASE CANCEL",
            "STOP ALL",
            "stop-all",
            "STOPP",
            "S T O P",
            "yes please",
            "stop\nstop",
            "",
            "   ",
            "!!!",
            "ＳＴＯＰ",
            "STOP😀",
            "arrêt",
            "unsubscribed",
            "opt out",
        ] {
            assert_eq!(keyword(body), None, "{body:?}");
        }
    }
}
