//! The check of a campaign's WhatsApp template at create and edit, shared by the API and
//! the CLI: its own rules, a whatsapp channel, parameters that are fields of the list, and,
//! when the channel can ask (a `business_account_id`), Meta's word that the template exists
//! in that language, is approved and takes that many parameters.

use super::{BuildContext, ChannelRegistry, TemplateCheckError};
use crate::ids::ListId;
use crate::store::{ChannelInfo, Store, StoreError};
use crate::whatsapp_template::WhatsAppTemplate;

/// Why a campaign's template is refused.
#[derive(Debug)]
pub enum TemplateProblem {
    /// The request must change: `rule` names the rule, the message says what to do.
    Invalid {
        rule: &'static str,
        message: String,
    },
    /// Meta could not be asked now; nothing was created.
    Unavailable(String),
    Store(StoreError),
}

impl From<StoreError> for TemplateProblem {
    fn from(e: StoreError) -> Self {
        TemplateProblem::Store(e)
    }
}

impl std::fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateProblem::Invalid { message, .. } => write!(f, "{message}"),
            TemplateProblem::Unavailable(m) => {
                write!(f, "{m}; nothing was created or changed: try again")
            }
            TemplateProblem::Store(e) => write!(f, "{e}"),
        }
    }
}

fn invalid(rule: &'static str, message: String) -> TemplateProblem {
    TemplateProblem::Invalid { rule, message }
}

pub async fn check_whatsapp_template(
    store: &Store,
    context: &BuildContext,
    template: &WhatsAppTemplate,
    channel: &ChannelInfo,
    list_id: ListId,
    list_name: &str,
) -> Result<(), TemplateProblem> {
    template.check().map_err(|e| invalid("format", e))?;
    if channel.kind != crate::channel_kind::whatsapp::NAME {
        return Err(invalid(
            "channel_kind",
            format!(
                "a WhatsApp template needs a whatsapp channel, and channel `{}` is {}: pick a whatsapp channel, or send the body without a template",
                channel.name, channel.kind
            ),
        ));
    }
    let known = store.list_attribute_keys(list_id).await?;
    let unknown = template.unknown_fields(&known);
    if !unknown.is_empty() {
        let mut fields: Vec<&str> = vec!["name", "address"];
        fields.extend(known.iter().map(String::as_str));
        return Err(invalid(
            "unknown_variable",
            format!(
                "template parameter {} is no field of list {list_name:?}; its fields: {}",
                unknown
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                fields.join(", ")
            ),
        ));
    }
    let registry = ChannelRegistry::new(store.clone(), None, context.clone());
    // A channel that cannot be built fails its messages with the reason at send time.
    let Ok(built) = registry.get(channel.id).await else {
        return Ok(());
    };
    let Some(check) = built.verify_template(template) else {
        return Ok(());
    };
    match check.await {
        Ok(()) => Ok(()),
        Err(TemplateCheckError::Refused(why)) => Err(invalid("template_not_approved", why)),
        Err(TemplateCheckError::Unreachable(why)) => Err(TemplateProblem::Unavailable(why)),
    }
}
