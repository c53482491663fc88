//! WhatsApp Cloud API (Meta Graph API), README §2.
//!
//! A send is one `POST {base}/{api_version}/{phone_number_id}/messages` with a Bearer token
//! and a JSON body. `biz_opaque_callback_data` carries Herald's message id (as a decimal
//! string) so every status webhook names the message without a lookup by wamid.
//!
//! Without a template the rendered body is sent as a `text` message (allowed only inside
//! the 24 h customer-service window; outside it Meta answers 131047). With `--template`,
//! the message is that approved template and the rendered body gives its body parameters:
//! **one text parameter per line**, in order (`{{1}}` is the first line; a `\r\n` line end
//! counts as `\n`; trailing blank lines are ignored; a blank body sends no parameters).

use super::classify::{self, ErrorClass};
use super::http::{self, retry_after};
use super::settings::{self, Checked, Flags, KindRules, Validate};
use super::{
    BoxFuture, BuildContext, BuildInputs, Channel, ChannelError, Implementation, SendRequest,
    SendResult,
};
use crate::channel_kind::{ChannelKind, whatsapp::KIND};
use crate::store::ChannelInfo;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// WhatsApp's registration (`super::IMPLEMENTATIONS`).
pub const IMPLEMENTATION: Implementation = Implementation {
    kind: KIND,
    build: |info, inputs: &BuildInputs<'_>| WhatsAppChannel::build(info, inputs.context),
    check: settings::check::<Rules>,
    from_flags,
};

/// WhatsApp's settings: [`Config`] and [`Secrets`].
pub struct Rules;

impl KindRules for Rules {
    const KIND: ChannelKind = KIND;
    type Config = Config;
    type Secrets = Secrets;
}

/// `herald channel create --kind whatsapp`.
fn from_flags(flags: &Flags) -> Result<Checked, ChannelError> {
    let config = Config {
        phone_number_id: flags.need("phone_number_id", "--phone-number-id")?,
        base_url: flags.text("base_url"),
        api_version: flags.text("api_version"),
        template: flags.text("template"),
        template_language: flags.text("template_language"),
        business_account_id: flags.text("business_account_id"),
    };
    let secrets = Secrets {
        access_token: flags.need("access_token", "--access-token")?,
        app_secret: flags.need("app_secret", "--app-secret")?,
        verify_token: flags.need("verify_token", "--verify-token")?,
    };
    config.validate()?;
    secrets.validate()?;
    Ok(settings::checked(&config, &secrets)?)
}

pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v23.0";
pub const DEFAULT_TEMPLATE_LANGUAGE: &str = "en_US";

/// The channel's public configuration (stored as the channel's `config` JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `--phone-number-id`: the business phone number's Graph id (digits).
    pub phone_number_id: String,
    /// `--base-url`; [`DEFAULT_BASE_URL`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `--api-version`; [`DEFAULT_API_VERSION`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `--template`: an approved template's name; every message is that template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `--template-language`; [`DEFAULT_TEMPLATE_LANGUAGE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_language: Option<String>,
    /// `--business-account-id`: the WhatsApp Business Account (WABA) the number belongs
    /// to. With it, a campaign's template is checked with Meta when the campaign is created
    /// (it exists in that language, is approved, takes that many parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_account_id: Option<String>,
}

/// The channel's credentials (stored sealed). `app_secret` and `verify_token` are used by
/// the webhook receiver, not by sends.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// `--access-token`: a system-user access token.
    pub access_token: String,
    /// `--app-secret`: signs webhooks (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// `--verify-token`: answers the webhook verification handshake.
    pub verify_token: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::secrets::mask;
        f.debug_struct("Secrets")
            .field("access_token", &mask(&self.access_token))
            .field("app_secret", &mask(&self.app_secret))
            .field("verify_token", &mask(&self.verify_token))
            .finish()
    }
}

impl Config {
    pub fn from_json(v: &serde_json::Value) -> Result<Config, ChannelError> {
        let c: Config = serde_json::from_value(v.clone())
            .map_err(|e| ChannelError::settings(format!("invalid whatsapp configuration: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    fn rules(&self) -> Result<(), String> {
        let id = &self.phone_number_id;
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "--phone-number-id `{id}` must be the phone number's id from the WhatsApp Manager: digits only, like 106540352242922"
            ));
        }
        if let Some(url) = &self.base_url {
            http::validate_base_url("--base-url", url).map_err(|e| e.to_string())?;
        }
        if let Some(v) = &self.api_version {
            let ok = v
                .strip_prefix('v')
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(major, minor)| {
                    !major.is_empty()
                        && !minor.is_empty()
                        && major.bytes().all(|b| b.is_ascii_digit())
                        && minor.bytes().all(|b| b.is_ascii_digit())
                });
            if !ok {
                return Err(format!(
                    "--api-version `{v}` must look like v23.0 (a Graph API version)"
                ));
            }
        }
        if let Some(name) = &self.template {
            crate::whatsapp_template::check_name(name).map_err(|e| format!("--template: {e}"))?;
        }
        if let Some(lang) = &self.template_language {
            if self.template.is_none() {
                return Err(
                    "--template-language only applies with --template NAME: give both or neither"
                        .into(),
                );
            }
            crate::whatsapp_template::check_language(lang)
                .map_err(|e| format!("--template-language: {e}"))?;
        }
        if let Some(id) = &self.business_account_id
            && (id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "--business-account-id `{id}` must be the WhatsApp Business Account's id from the WhatsApp Manager: digits only"
            ));
        }
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
    }

    pub fn api_version(&self) -> &str {
        self.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION)
    }

    pub fn template_language(&self) -> &str {
        self.template_language
            .as_deref()
            .unwrap_or(DEFAULT_TEMPLATE_LANGUAGE)
    }

    /// The send endpoint.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/{}/{}/messages",
            self.base_url(),
            self.api_version(),
            self.phone_number_id
        )
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ChannelError> {
        self.rules().map_err(ChannelError::Settings)
    }
}

impl Secrets {
    pub fn from_json(v: &serde_json::Value) -> Result<Secrets, ChannelError> {
        let s: Secrets = serde_json::from_value(v.clone()).map_err(|_| {
            ChannelError::settings("the whatsapp channel's secrets are incomplete: set --access-token, --app-secret and --verify-token")
        })?;
        s.validate()?;
        Ok(s)
    }
}

impl Validate for Secrets {
    fn validate(&self) -> Result<(), ChannelError> {
        for (flag, value) in [
            ("--access-token", &self.access_token),
            ("--app-secret", &self.app_secret),
            ("--verify-token", &self.verify_token),
        ] {
            if value.trim().is_empty() {
                return Err(ChannelError::settings(format!("{flag} must not be empty")));
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ChannelError::settings(format!(
                    "{flag} must not contain spaces or control characters"
                )));
            }
        }
        Ok(())
    }
}

/// Template body parameters from the rendered body: one per line (module docs).
pub fn template_parameters(body: &str) -> Vec<String> {
    let mut lines: Vec<&str> = body
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines.into_iter().map(str::to_string).collect()
}

/// How many distinct `{{N}}` placeholders a template body has.
pub fn body_placeholders(body: &str) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("}}") else { break };
        if let Ok(n) = rest[..end].trim().parse::<u32>() {
            seen.insert(n);
        }
        rest = &rest[end + 2..];
    }
    seen.len()
}

/// The recipient as the Cloud API wants it: digits only.
fn recipient(address: &str) -> String {
    address.chars().filter(char::is_ascii_digit).collect()
}

/// A Graph API error body.
#[derive(Debug, Default, Deserialize)]
struct GraphError {
    #[serde(default)]
    error: Option<GraphErrorInner>,
}

#[derive(Debug, Default, Deserialize)]
struct GraphErrorInner {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    error_data: Option<serde_json::Value>,
}

/// Only a Graph error with a code is quoted (its text bounded); any other answer is
/// described by status, type and size (`http::unexpected_answer`).
fn error_result(answer: &http::Answer) -> SendResult {
    let (status, headers) = (answer.status, &answer.headers);
    let inner = serde_json::from_str::<GraphError>(&answer.body)
        .ok()
        .and_then(|e| e.error)
        .unwrap_or_default();
    let details = inner
        .error_data
        .as_ref()
        .and_then(|d| d.get("details"))
        .and_then(|d| d.as_str())
        .filter(|d| !d.is_empty());
    let error = match inner.code {
        Some(code) => {
            let mut e = format!("whatsapp {code}");
            if let Some(sub) = inner.error_subcode {
                e.push_str(&format!("/{sub}"));
            }
            e.push_str(": ");
            let mut text = inner
                .message
                .as_deref()
                .unwrap_or("(no message)")
                .to_string();
            if let Some(d) = details
                && !text.contains(d)
            {
                text.push_str(&format!(" ({d})"));
            }
            e.push_str(&http::provider_text(&text));
            e
        }
        None => format!(
            "whatsapp: {}",
            http::unexpected_answer(status, headers, answer.size)
        ),
    };
    match classify::classify_whatsapp(status, inner.code, inner.error_subcode) {
        ErrorClass::Retry => SendResult::Transient {
            error,
            retry_after: retry_after(headers),
        },
        ErrorClass::Permanent => SendResult::Permanent { error },
        ErrorClass::OptOut => SendResult::OptOut { error },
        ErrorClass::StopCampaign => match classify::credentials_refused(
            "WhatsApp",
            "phone number id and access token",
            status,
        ) {
            Some(reason) => SendResult::CredentialsRefused { reason, error },
            None => SendResult::StopCampaign { error },
        },
        ErrorClass::Unknown => SendResult::Unknown { error },
    }
}

pub struct WhatsAppChannel {
    name: String,
    config: Config,
    secrets: Secrets,
    messages_url: String,
    client: http::ProviderClient,
}

impl WhatsAppChannel {
    /// The channel for the registry.
    pub fn build(info: &ChannelInfo, ctx: &BuildContext) -> Result<Arc<dyn Channel>, ChannelError> {
        let config = Config::from_json(&info.config)?;
        let secrets = Secrets::from_json(&ctx.open_secrets(info)?)?;
        Ok(Arc::new(WhatsAppChannel::new(
            info.name.clone(),
            config,
            secrets,
            ctx.outbound.http_client().map_err(ChannelError::Setup)?,
        )?))
    }

    pub fn new(
        name: String,
        config: Config,
        secrets: Secrets,
        client: http::ProviderClient,
    ) -> Result<WhatsAppChannel, ChannelError> {
        config.validate()?;
        secrets.validate()?;
        Ok(WhatsAppChannel {
            name,
            messages_url: config.messages_url(),
            config,
            secrets,
            client,
        })
    }

    /// The JSON body for a send (README §2.1).
    pub fn payload(&self, request: &SendRequest) -> serde_json::Value {
        let mut body = serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": recipient(request.address.as_str()),
            // The bare row number, as statuses of messages sent before ids were typed carry it.
            "biz_opaque_callback_data": request.message_id.get().to_string(),
        });
        // The campaign's template first, with its parameters from the contact's fields; then
        // the channel's, with one parameter per line of the rendered body.
        let chosen = match (&request.template, &self.config.template) {
            (Some(t), _) => Some((t.name.as_str(), t.language.as_str(), t.parameters.clone())),
            (None, Some(name)) => Some((
                name.as_str(),
                self.config.template_language(),
                template_parameters(&request.body),
            )),
            (None, None) => None,
        };
        match chosen {
            Some((name, language, parameters)) => {
                let parameters: Vec<serde_json::Value> = parameters
                    .into_iter()
                    .map(|text| serde_json::json!({"type": "text", "text": text}))
                    .collect();
                let mut template = serde_json::json!({
                    "name": name,
                    "language": {"policy": "deterministic", "code": language},
                });
                if !parameters.is_empty() {
                    template["components"] =
                        serde_json::json!([{"type": "body", "parameters": parameters}]);
                }
                body["type"] = "template".into();
                body["template"] = template;
            }
            None => {
                body["type"] = "text".into();
                body["text"] = serde_json::json!({"body": request.body, "preview_url": false});
            }
        }
        body
    }

    /// `GET {base}/{version}/{waba}/message_templates?name=NAME`: the template must be
    /// there in the campaign's language, `APPROVED`, with as many body placeholders
    /// (`{{1}}`, `{{2}}`, …) as the campaign gives parameters.
    async fn check_template(
        &self,
        waba: &str,
        wanted: &crate::whatsapp_template::WhatsAppTemplate,
    ) -> Result<(), super::TemplateCheckError> {
        use super::TemplateCheckError::{Refused, Unreachable};
        let url = format!(
            "{}/{}/{waba}/message_templates",
            self.config.base_url(),
            self.config.api_version()
        );
        let request = self
            .client
            .get(&url)
            .query(&[("name", wanted.name.as_str()), ("limit", "100")])
            .bearer_auth(&self.secrets.access_token);
        let response = self.client.send(request).await.map_err(|f| match f {
            http::Failure::Refused(r) => Refused(format!("whatsapp: {r}")),
            http::Failure::Transport(e) => Unreachable(format!(
                "whatsapp: asking Meta for template `{}` failed: {}",
                wanted.name,
                http::describe(&e)
            )),
        })?;
        let status = response.status().as_u16();
        let (text, _) = http::read_bounded(response, 1 << 20)
            .await
            .map_err(|e| Unreachable(format!("whatsapp: {}", http::describe(&e))))?;
        if !(200..300).contains(&status) {
            let inner = serde_json::from_str::<GraphError>(&text)
                .ok()
                .and_then(|e| e.error)
                .unwrap_or_default();
            let said = inner
                .message
                .as_deref()
                .map(http::provider_text)
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(if status >= 500 || status == 429 {
                Unreachable(format!(
                    "whatsapp: Meta could not list templates now: {said}"
                ))
            } else {
                Refused(format!(
                    "whatsapp: Meta refused to list the templates of business account {waba} ({said}): check the channel's business_account_id and access token"
                ))
            });
        }
        #[derive(Deserialize)]
        struct Listed {
            #[serde(default)]
            data: Vec<ListedTemplate>,
        }
        #[derive(Deserialize)]
        struct ListedTemplate {
            #[serde(default)]
            name: String,
            #[serde(default)]
            language: String,
            #[serde(default)]
            status: String,
            #[serde(default)]
            components: Vec<serde_json::Value>,
        }
        let listed: Listed = serde_json::from_str(&text).map_err(|e| {
            Unreachable(format!(
                "whatsapp: Meta's template list is not what its API documents: {e}"
            ))
        })?;
        let same_name: Vec<&ListedTemplate> = listed
            .data
            .iter()
            .filter(|t| t.name == wanted.name)
            .collect();
        let Some(found) = same_name.iter().find(|t| t.language == wanted.language) else {
            let languages: Vec<&str> = same_name.iter().map(|t| t.language.as_str()).collect();
            return Err(Refused(if languages.is_empty() {
                format!(
                    "WhatsApp Business Account {waba} has no template `{}`: create it in the WhatsApp Manager, or check the name",
                    wanted.name
                )
            } else {
                format!(
                    "template `{}` has no {} version (it has {}): pick one of those languages",
                    wanted.name,
                    wanted.language,
                    languages.join(", ")
                )
            }));
        };
        if !found.status.eq_ignore_ascii_case("APPROVED") {
            return Err(Refused(format!(
                "template `{}` ({}) is {}, not approved: WhatsApp sends only approved templates",
                wanted.name,
                wanted.language,
                if found.status.is_empty() {
                    "of unknown status"
                } else {
                    &found.status
                }
            )));
        }
        let body = found
            .components
            .iter()
            .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("BODY"))
            .and_then(|c| c.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let expected = body_placeholders(body);
        if expected != wanted.parameters.len() {
            return Err(Refused(format!(
                "template `{}` ({}) has {expected} body parameter{} and the campaign gives {}: name one contact field per parameter",
                wanted.name,
                wanted.language,
                if expected == 1 { "" } else { "s" },
                wanted.parameters.len()
            )));
        }
        Ok(())
    }

    async fn send_inner(&self, request: SendRequest) -> SendResult {
        let request = self
            .client
            .post(&self.messages_url)
            .bearer_auth(&self.secrets.access_token)
            .json(&self.payload(&request));
        let response = self.client.send(request).await;
        let answer = match http::read_answer("whatsapp", response).await {
            Ok(a) => a,
            Err(result) => return result,
        };
        if answer.is_success() {
            let wamid = serde_json::from_str::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| {
                    v.get("messages")?
                        .get(0)?
                        .get("id")?
                        .as_str()
                        .map(str::to_string)
                })
                .filter(|s| !s.is_empty());
            return match wamid {
                Some(provider_id) => SendResult::Accepted { provider_id },
                None => SendResult::Unknown {
                    error: format!(
                        "whatsapp: no message id in the {}",
                        http::unexpected_answer(answer.status, &answer.headers, answer.size)
                    ),
                },
            };
        }
        error_result(&answer)
    }
}

impl Channel for WhatsAppChannel {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult> {
        Box::pin(self.send_inner(request))
    }

    fn verify_template<'a>(
        &'a self,
        template: &'a crate::whatsapp_template::WhatsAppTemplate,
    ) -> Option<BoxFuture<'a, Result<(), super::TemplateCheckError>>> {
        let waba = self.config.business_account_id.as_deref()?;
        Some(Box::pin(self.check_template(waba, template)))
    }

    /// An authenticated read of the sending phone number: sends nothing.
    fn probe(&self) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            let url = format!(
                "{}/{}/{}",
                self.config.base_url(),
                self.config.api_version(),
                self.config.phone_number_id
            );
            let request = self
                .client
                .get(url)
                .bearer_auth(&self.secrets.access_token)
                .header(reqwest::header::ACCEPT, "application/json");
            http::probe("whatsapp", &self.client, request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::http::fake::{FakeServer, Reply, closed_port_url};
    use crate::ids::{CampaignId, MessageId};
    use std::time::Duration;

    const TOKEN: &str = "EAAtest0123456789";

    fn secrets() -> Secrets {
        Secrets {
            access_token: TOKEN.into(),
            app_secret: "6f1c2e3d4b5a69788796a5b4c3d2e1f0".into(),
            verify_token: "verify-me".into(),
        }
    }

    fn config(base: &str) -> Config {
        Config {
            phone_number_id: "106540352242922".into(),
            base_url: Some(format!("{base}/")),
            ..Default::default()
        }
    }

    fn channel_with(config: Config, timeout_ms: u64) -> WhatsAppChannel {
        let client = http::build_client(
            Duration::from_millis(1000),
            Duration::from_millis(timeout_ms),
            crate::outbound::OutboundGuard::allow_all(),
        )
        .unwrap();
        WhatsAppChannel::new("wa".into(), config, secrets(), client).unwrap()
    }

    fn request(body: &str) -> SendRequest {
        SendRequest {
            message_id: MessageId(9001),
            campaign_id: CampaignId(3),
            address: crate::address::Address::parse("+16505551234").unwrap(),
            body: body.into(),
            attempt: 1,
            unsubscribe_url: None,
            template: None,
            email: None,
        }
    }

    fn accepted(id: &str) -> Reply {
        Reply::json(
            200,
            serde_json::json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
                "messages": [{"id": id, "message_status": "accepted"}],
            }),
        )
    }

    #[tokio::test]
    async fn sends_text_with_the_contract_shape() {
        let fake = FakeServer::start().await;
        fake.reply(accepted("wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI"));
        let ch = channel_with(config(&fake.base), 5000);
        assert_eq!(
            ch.send(request("hello \"you\"")).await,
            SendResult::Accepted {
                provider_id: "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI".into()
            }
        );
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v23.0/106540352242922/messages");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "text",
                "text": {"body": "hello \"you\"", "preview_url": false},
                "biz_opaque_callback_data": "9001",
            })
        );
    }

    #[tokio::test]
    async fn sends_templates_with_one_parameter_per_line() {
        let fake = FakeServer::start().await;
        fake.reply(accepted("wamid.A"));
        fake.reply(accepted("wamid.B"));
        let cfg = Config {
            api_version: Some("v24.0".into()),
            template: Some("order_update".into()),
            template_language: Some("pt_BR".into()),
            ..config(&fake.base)
        };
        let ch = channel_with(cfg, 5000);
        assert!(matches!(
            ch.send(request("Ann\r\nFriday\n\n")).await,
            SendResult::Accepted { .. }
        ));
        assert!(matches!(
            ch.send(request("")).await,
            SendResult::Accepted { .. }
        ));
        let reqs = fake.requests();
        assert_eq!(reqs[0].path, "/v24.0/106540352242922/messages");
        assert_eq!(
            reqs[0].json(),
            serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "template",
                "template": {
                    "name": "order_update",
                    "language": {"policy": "deterministic", "code": "pt_BR"},
                    "components": [{"type": "body", "parameters": [
                        {"type": "text", "text": "Ann"},
                        {"type": "text", "text": "Friday"},
                    ]}],
                },
                "biz_opaque_callback_data": "9001",
            })
        );
        let t = &reqs[1].json()["template"];
        assert!(t.get("components").is_none());
        assert_eq!(t["language"]["code"], "pt_BR");
    }

    #[tokio::test]
    async fn a_campaigns_template_wins_with_its_own_values() {
        let fake = FakeServer::start().await;
        fake.reply(accepted("wamid.A"));
        let cfg = Config {
            template: Some("channel_default".into()),
            ..config(&fake.base)
        };
        let ch = channel_with(cfg, 5000);
        let mut req = request("Line one\nLine two");
        req.template = Some(super::super::TemplateSend {
            name: "order_update".into(),
            language: "en_US".into(),
            parameters: vec!["Ada".into(), "A-1\nwith a newline".into()],
        });
        assert!(matches!(ch.send(req).await, SendResult::Accepted { .. }));
        let t = &fake.requests()[0].json()["template"];
        assert_eq!(t["name"], "order_update");
        assert_eq!(t["language"]["code"], "en_US");
        assert_eq!(
            t["components"][0]["parameters"],
            serde_json::json!([
                {"type": "text", "text": "Ada"},
                {"type": "text", "text": "A-1\nwith a newline"},
            ])
        );
    }

    #[test]
    fn body_placeholders_are_counted_once_each() {
        assert_eq!(body_placeholders("Hi {{1}}, order {{2}} ({{ 1 }})"), 2);
        assert_eq!(body_placeholders("Welcome!"), 0);
        assert_eq!(body_placeholders("{{1}} {{2}} {{3"), 2);
        assert_eq!(body_placeholders("{{name}}"), 0);
    }

    async fn outcome(reply: Reply) -> SendResult {
        let fake = FakeServer::start().await;
        fake.reply(reply);
        channel_with(config(&fake.base), 5000)
            .send(request("x"))
            .await
    }

    fn graph_error(status: u16, code: i64, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"error": {
                "message": message, "type": "OAuthException", "code": code,
                "error_subcode": 2494010,
                "error_data": {"messaging_product": "whatsapp", "details": "More detail."},
                "fbtrace_id": "Atrace", "is_transient": false,
            }}),
        )
    }

    #[tokio::test]
    async fn classifies_graph_errors() {
        assert_eq!(
            outcome(graph_error(400, 131026, "Message undeliverable")).await,
            SendResult::Permanent {
                error: "whatsapp 131026/2494010: Message undeliverable (More detail.)".into()
            }
        );
        assert!(matches!(
            outcome(graph_error(400, 131047, "(#131047) Re-engagement message")).await,
            SendResult::Permanent { .. }
        ));
        assert!(matches!(
            outcome(graph_error(400, 131050, "User stopped marketing")).await,
            SendResult::OptOut { .. }
        ));
        assert!(matches!(
            outcome(graph_error(401, 190, "Access token expired")).await,
            SendResult::CredentialsRefused { reason, error } if error.contains("190")
                && reason.starts_with("credentials refused by WhatsApp (401)")
        ));
        assert!(matches!(
            outcome(graph_error(404, 132001, "Template does not exist")).await,
            SendResult::StopCampaign { .. }
        ));
        let mut rate = graph_error(400, 130429, "Rate limit hit");
        if let Reply::Respond { headers, .. } = &mut rate {
            headers.push(("retry-after", "7".into()));
        }
        assert_eq!(
            outcome(rate).await,
            SendResult::Transient {
                error: "whatsapp 130429/2494010: Rate limit hit (More detail.)".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        assert!(matches!(
            outcome(graph_error(500, 131000, "Something went wrong")).await,
            SendResult::Transient {
                retry_after: None,
                ..
            }
        ));
        // No Graph error body: the HTTP status decides, and the body (which may be any
        // service's) is described, not quoted.
        assert!(matches!(
            outcome(Reply::Respond { status: 500, headers: vec![], body: "upstream".into() }).await,
            SendResult::Unknown { error } if error == "whatsapp: unexpected answer (HTTP 500, no content type, 8 bytes)"
        ));
        assert!(matches!(
            outcome(Reply::Respond { status: 429, headers: vec![("retry-after", "3".into())], body: String::new() }).await,
            SendResult::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            outcome(Reply::json(200, serde_json::json!({"messages": []}))).await,
            SendResult::Unknown { .. }
        ));
    }

    #[tokio::test]
    async fn no_answer_is_unknown_and_no_connection_is_transient() {
        let fake = FakeServer::start().await;
        fake.reply(Reply::Hang);
        let ch = channel_with(config(&fake.base), 300);
        assert!(matches!(
            ch.send(request("x")).await,
            SendResult::Unknown { .. }
        ));
        assert_eq!(fake.requests().len(), 1);
        let ch = channel_with(config(&closed_port_url().await), 300);
        assert!(matches!(
            ch.send(request("x")).await,
            SendResult::Unreachable { .. }
        ));
    }

    #[test]
    fn config_and_secrets_validation() {
        let ok = config("http://127.0.0.1:1");
        assert!(ok.validate().is_ok());
        assert_eq!(
            Config::from_json(&serde_json::to_value(&ok).unwrap()).unwrap(),
            ok
        );
        assert!(
            Config::from_json(&serde_json::json!({"phone_number_id": "1", "token": "x"})).is_err()
        );
        let err = |c: Config| c.validate().unwrap_err().to_string();
        assert!(
            err(Config {
                phone_number_id: "+1 650".into(),
                ..ok.clone()
            })
            .contains("--phone-number-id")
        );
        assert!(
            err(Config {
                api_version: Some("23".into()),
                ..ok.clone()
            })
            .contains("--api-version")
        );
        assert!(
            err(Config {
                template: Some("Order Update".into()),
                ..ok.clone()
            })
            .contains("--template")
        );
        assert!(
            err(Config {
                template_language: Some("en_US".into()),
                ..ok.clone()
            })
            .contains("--template-language")
        );
        assert!(
            err(Config {
                template: Some("t".into()),
                template_language: Some("english".into()),
                ..ok.clone()
            })
            .contains("--template-language")
        );
        assert!(
            err(Config {
                base_url: Some("graph.facebook.com".into()),
                ..ok.clone()
            })
            .contains("--base-url")
        );
        let defaults = Config {
            phone_number_id: "1".into(),
            ..Default::default()
        };
        assert_eq!(
            defaults.messages_url(),
            "https://graph.facebook.com/v23.0/1/messages"
        );
        assert_eq!(defaults.template_language(), "en_US");

        assert!(secrets().validate().is_ok());
        assert!(
            Secrets {
                access_token: "".into(),
                ..secrets()
            }
            .validate()
            .unwrap_err()
            .mentions("--access-token")
        );
        assert!(
            Secrets {
                app_secret: " ".into(),
                ..secrets()
            }
            .validate()
            .unwrap_err()
            .mentions("--app-secret")
        );
        assert!(
            Secrets {
                verify_token: "a b".into(),
                ..secrets()
            }
            .validate()
            .unwrap_err()
            .mentions("--verify-token")
        );
        assert!(
            Secrets::from_json(&serde_json::json!({"access_token": "x"}))
                .unwrap_err()
                .mentions("--verify-token")
        );
        assert!(!format!("{:?}", secrets()).contains(TOKEN));
        assert_eq!(recipient("+16505551234"), "16505551234");
    }
}
