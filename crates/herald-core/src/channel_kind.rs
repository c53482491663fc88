//! The channel kinds Herald knows, as plain facts the store, the alert rules and the
//! channels share: which kinds exist and which addresses each can deliver to. It sits below
//! the store and the channels, so the store needs nothing from `channels` (whose code needs
//! the store).

use crate::address::AddressKind;

/// The kinds Herald knows, and which addresses each can deliver to.
pub const KINDS: &[&str] = &["sandbox", "twilio", "whatsapp", "smtp"];

/// The address kind a channel kind requires; None when it takes any.
pub fn address_requirement(kind: &str) -> Option<AddressKind> {
    match kind {
        "twilio" | "whatsapp" | "sms" => Some(AddressKind::Phone),
        "smtp" | "email" => Some(AddressKind::Email),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_its_addresses() {
        assert_eq!(address_requirement("twilio"), Some(AddressKind::Phone));
        assert_eq!(address_requirement("whatsapp"), Some(AddressKind::Phone));
        assert_eq!(address_requirement("smtp"), Some(AddressKind::Email));
        assert_eq!(address_requirement("sandbox"), None);
        assert!(
            KINDS
                .iter()
                .all(|k| *k == "sandbox" || address_requirement(k).is_some())
        );
    }
}
