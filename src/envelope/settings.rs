//! How push bodies are read (`PUSH_PAYLOAD`), declared once for the flag, the variable, the
//! default and the help.

use super::PushPayload;
use crate::setting::{ConfigError, Setting, parsed};

/// The push body settings.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub(crate) struct EnvelopeSettings {
    /// `auto` (an unwrapped push is recognised by its x-goog-pubsub-message-id header), `wrapped` or `unwrapped`
    #[arg(
        long,
        env = "PUSH_PAYLOAD",
        value_name = "MODE",
        global = true,
        default_value = "auto",
        value_parser = parsed::<PushPayload>(),
    )]
    push_payload: Setting<PushPayload>,
}

impl EnvelopeSettings {
    /// How push bodies are read.
    pub(crate) fn settings(&self) -> Result<PushPayload, ConfigError> {
        self.push_payload.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    #[test]
    fn push_payload_defaults_to_auto() {
        let payload = |vars: &[(&str, &str)]| from_vars::<EnvelopeSettings>(vars).settings();
        assert_eq!(payload(&[]), Ok(PushPayload::Auto));
        assert_eq!(payload(&[("PUSH_PAYLOAD", " ")]), Ok(PushPayload::Auto));
        assert_eq!(
            payload(&[("PUSH_PAYLOAD", "unwrapped")]),
            Ok(PushPayload::Unwrapped)
        );
        assert_eq!(
            payload(&[("PUSH_PAYLOAD", "wrapped")]),
            Ok(PushPayload::Wrapped)
        );
        assert_eq!(
            payload(&[("PUSH_PAYLOAD", "raw")]).unwrap_err().to_string(),
            "PUSH_PAYLOAD=\"raw\" is invalid: expected auto, wrapped or unwrapped"
        );
    }
}
