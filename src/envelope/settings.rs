//! How push bodies are read (`PUSH_PAYLOAD`), declared once for the flag, the variable, the
//! default and the help.

use super::PushPayload;
use crate::setting::{ConfigError, Setting, parsed};

/// The push body settings.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub struct EnvelopeSettings {
    /// `auto` (an unwrapped push is recognised by its x-goog-pubsub-message-id header), `wrapped` or `unwrapped`
    #[arg(long, env = "PUSH_PAYLOAD", value_name = "MODE", global = true, default_value = "auto", value_parser = parsed::<PushPayload>())]
    push_payload: Setting<PushPayload>,
}

impl EnvelopeSettings {
    /// How push bodies are read.
    pub fn settings(&self) -> Result<PushPayload, ConfigError> {
        self.push_payload.value()
    }
}
