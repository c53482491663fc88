//! A campaign's WhatsApp template (docs/CAMPAIGNS.md, "WhatsApp templates"): the approved
//! template's name, its language, and the contact field that fills each of its body
//! parameters (`{{1}}`, `{{2}}`, … in order). Outside the 24-hour customer-service window
//! WhatsApp delivers only approved templates, so a marketing campaign names one; the
//! campaign's body stays Herald's own text of the message (previews, the estimate).

use crate::template::ContactFields;
use serde::{Deserialize, Serialize};

/// Most body parameters one template may be given.
pub const MAX_PARAMETERS: usize = 20;

/// What a campaign sends on a WhatsApp channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppTemplate {
    /// The approved template's name: lowercase letters, digits and underscores.
    #[schema(example = "order_update", pattern = "^[a-z0-9_]{1,512}$")]
    pub name: String,
    /// Its language code, as approved (`en`, `en_US`, `pt_BR`).
    #[schema(example = "en_US", pattern = "^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$")]
    pub language: String,
    /// The contact field for each body parameter, in order: `name`, `address`, or one of
    /// the list's attributes.
    #[serde(default)]
    #[schema(example = json!(["name", "order_id"]), max_items = 20)]
    pub parameters: Vec<String>,
}

/// A template name as WhatsApp allows it.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 512
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "template name `{name}` must be lowercase letters, digits and underscores, like order_update"
        ));
    }
    Ok(())
}

/// A language code as WhatsApp writes them (`en`, `en_US`, `pt_BR`, `zh_Hant`).
pub fn check_language(language: &str) -> Result<(), String> {
    let (base, region) = language.split_once('_').unwrap_or((language, ""));
    let ok = (2..=3).contains(&base.len())
        && base.bytes().all(|b| b.is_ascii_lowercase())
        && (!language.contains('_')
            || ((2..=4).contains(&region.len())
                && region.bytes().all(|b| b.is_ascii_alphanumeric())));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "template language `{language}` must be a language code like en, en_US or pt_BR"
        ))
    }
}

impl WhatsAppTemplate {
    /// The rules that need no list: name, language, how many parameters, each a field name.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        check_language(&self.language)?;
        if self.parameters.len() > MAX_PARAMETERS {
            return Err(format!(
                "a template takes at most {MAX_PARAMETERS} parameters, not {}",
                self.parameters.len()
            ));
        }
        for p in &self.parameters {
            if p.is_empty()
                || p.len() > 64
                || !p
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "parameter `{p}` must be a contact field: name, address, or an attribute of the list"
                ));
            }
        }
        Ok(())
    }

    /// The parameters no contact of a list with `known_attributes` has, in order.
    pub fn unknown_fields<'a>(
        &'a self,
        known_attributes: &std::collections::BTreeSet<String>,
    ) -> Vec<&'a str> {
        self.parameters
            .iter()
            .map(String::as_str)
            .filter(|p| !matches!(*p, "name" | "address") && !known_attributes.contains(*p))
            .collect()
    }

    /// The parameters' values for one contact, or why it cannot have them (a field it lacks
    /// or leaves empty: WhatsApp refuses an empty parameter).
    pub fn values_for(&self, contact: &ContactFields<'_>) -> Result<Vec<String>, String> {
        self.parameters
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let value = match field.as_str() {
                    "name" => contact.name.map(str::to_owned),
                    "address" => Some(contact.address.to_owned()),
                    key => match contact.attributes.get(key) {
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                        _ => None,
                    },
                };
                value.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                    format!(
                        "this contact has no `{field}`, which parameter {{{{{}}}}} of WhatsApp template {} needs; give it a value or pick another field",
                        i + 1,
                        self.name
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(parameters: &[&str]) -> WhatsAppTemplate {
        WhatsAppTemplate {
            name: "order_update".into(),
            language: "en_US".into(),
            parameters: parameters.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn names_languages_and_fields_are_checked() {
        assert_eq!(template(&["name", "order_id"]).check(), Ok(()));
        for (t, expected) in [
            (
                WhatsAppTemplate {
                    name: "Order Update".into(),
                    ..template(&[])
                },
                "lowercase",
            ),
            (
                WhatsAppTemplate {
                    language: "english".into(),
                    ..template(&[])
                },
                "language code",
            ),
            (template(&["na me"]), "contact field"),
            (template(&[""]), "contact field"),
            (template(&["a"; 21]), "at most 20"),
        ] {
            let e = t.check().unwrap_err();
            assert!(e.contains(expected), "{t:?}: {e}");
        }
        for ok in ["en", "en_US", "pt_BR", "zh_Hant"] {
            assert_eq!(check_language(ok), Ok(()), "{ok}");
        }
        for bad in ["", "e", "EN", "en_", "en-US", "en_USAAA"] {
            assert!(check_language(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_come_from_the_contact() {
        let attributes = serde_json::json!({"order_id": 1042, "city": "Lyon", "empty": " "});
        let attributes = attributes.as_object().unwrap();
        let contact = ContactFields {
            address: "+33612345678",
            name: Some("Ada"),
            attributes,
        };
        assert_eq!(
            template(&["name", "order_id", "address", "city"]).values_for(&contact),
            Ok(vec![
                "Ada".into(),
                "1042".into(),
                "+33612345678".into(),
                "Lyon".into()
            ])
        );
        let e = template(&["name", "coupon"])
            .values_for(&contact)
            .unwrap_err();
        assert!(e.contains("`coupon`") && e.contains("{{2}}"), "{e}");
        assert!(template(&["empty"]).values_for(&contact).is_err());
        let known = ["city".to_string()].into_iter().collect();
        assert_eq!(
            template(&["name", "city", "coupon"]).unknown_fields(&known),
            ["coupon"]
        );
    }
}
