//! What can go wrong with a channel outside a send (a send's outcome is a `SendResult`):
//! its settings break its kind's rules, its secrets do not open, it cannot be set up, or
//! its provider cannot answer a probe or a lookup. Every message is a sentence a person
//! acts on, shown as it is (`Display`) by the CLI, the API and the engine's logs.

use crate::secrets::SecretError;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A setting breaks the kind's rules, in words naming the `herald channel create` flag
    /// (`--account-sid must look like AC followed by 32 hex digits (ACxxxxxxxx…)`); the
    /// API renames the flags as its fields.
    #[error("{0}")]
    Settings(String),
    /// The channel's sealed secrets cannot be opened (no key, another key, damaged).
    #[error(transparent)]
    Secrets(#[from] SecretError),
    /// The channel cannot be set up in this process (its HTTP client, its TLS parameters).
    #[error("{0}")]
    Setup(String),
    /// A message cannot be made from what was rendered (a content template's variables,
    /// an email's headers).
    #[error("{0}")]
    Message(String),
    /// The provider could not be reached, or answered that it cannot serve the channel
    /// (a probe, a lookup); the text starts with the provider's name.
    #[error("{0}")]
    Provider(String),
}

impl ChannelError {
    /// The setting's rule broken, as [`ChannelError::Settings`].
    pub fn settings(message: impl Into<String>) -> ChannelError {
        ChannelError::Settings(message.into())
    }

    /// The provider's answer, as [`ChannelError::Provider`].
    pub fn provider(message: impl Into<String>) -> ChannelError {
        ChannelError::Provider(message.into())
    }

    /// Whether the message contains `text` (for tests and for callers that look for a
    /// flag's name in it).
    pub fn mentions(&self, text: &str) -> bool {
        self.to_string().contains(text)
    }
}

/// Settings that were valid but could not be written back as JSON (a bug).
impl From<serde_json::Error> for ChannelError {
    fn from(e: serde_json::Error) -> ChannelError {
        ChannelError::Setup(e.to_string())
    }
}
