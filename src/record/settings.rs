//! Record mapping and routing settings: the topic or the routing table, the key, the headers
//! and the timestamp, declared once for the flag, the variable, the default and the help.

use std::collections::BTreeMap;

use super::{AttributeHeaders, KeySource, RecordOptions, TopicRoute, is_reserved_header};
use crate::setting::{
    ConfigError, OptionalSetting, Setting, all_or_errors, boolean, invalid, parsed, split_list,
    text,
};

/// Where records go and how a message becomes one.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Record")]
pub struct RecordSettings {
    /// Target topic [required, or --kafka-topic-by-subscription]
    #[arg(long, env = "KAFKA_TOPIC", value_name = "TOPIC", global = true, value_parser = text())]
    kafka_topic: Option<Setting<String>>,
    /// Route by subscription instead: SUBSCRIPTION=TOPIC,...; `*=TOPIC` is an explicit default, others get 404
    #[arg(long, env = "KAFKA_TOPIC_BY_SUBSCRIPTION", value_name = "SUB=TOPIC,...", global = true, value_parser = text())]
    kafka_topic_by_subscription: Option<Setting<String>>,
    /// `ordering_key`, `message_id`, `attribute:NAME` or `none`
    #[arg(long, env = "KAFKA_KEY", value_name = "SOURCE", global = true, default_value = "ordering_key", value_parser = parsed::<KeySource>())]
    kafka_key: Setting<KeySource>,
    /// Take the record timestamp from this attribute (epoch ms or RFC 3339) (unset: publishTime)
    #[arg(long, env = "KAFKA_TIMESTAMP_ATTRIBUTE", value_name = "NAME", global = true, value_parser = text())]
    kafka_timestamp_attribute: Option<Setting<String>>,
    /// `all`, `none` or `only:NAME,...`: which attributes become headers
    #[arg(long, env = "KAFKA_ATTRIBUTE_HEADERS", value_name = "WHICH", global = true, default_value = "all", value_parser = parsed::<AttributeHeaders>())]
    kafka_attribute_headers: Setting<AttributeHeaders>,
    /// Put before every attribute header name; never in the reserved `pubsub.` namespace (unset: none)
    #[arg(long, env = "KAFKA_ATTRIBUTE_HEADER_PREFIX", value_name = "PREFIX", global = true, value_parser = text())]
    kafka_attribute_header_prefix: Option<Setting<String>>,
    /// `false` drops the pubsub.* metadata headers
    #[arg(long, env = "KAFKA_METADATA_HEADERS", value_name = "BOOL", global = true, default_value = "true", value_parser = boolean())]
    kafka_metadata_headers: Setting<bool>,
}

impl RecordSettings {
    /// Where records go: `KAFKA_TOPIC`, or `KAFKA_TOPIC_BY_SUBSCRIPTION`.
    pub fn route(&self) -> Result<TopicRoute, ConfigError> {
        match (
            self.kafka_topic.get()?,
            self.kafka_topic_by_subscription.get()?,
        ) {
            (Some(topic), None) => Ok(TopicRoute::Single(topic)),
            (None, None) => Err(ConfigError::Missing {
                var: "KAFKA_TOPIC",
                hint: "the Kafka topic records go to (or KAFKA_TOPIC_BY_SUBSCRIPTION)",
            }),
            (Some(_), Some(map)) => Err(invalid(
                "KAFKA_TOPIC_BY_SUBSCRIPTION",
                &map,
                "set either KAFKA_TOPIC or KAFKA_TOPIC_BY_SUBSCRIPTION (use *=TOPIC for a default)",
            )),
            (None, Some(raw)) => routing_table(&raw).map(TopicRoute::BySubscription),
        }
    }

    /// Key, headers and timestamp, or every error among them.
    pub fn options(&self) -> Result<RecordOptions, Vec<ConfigError>> {
        let key_source = self.kafka_key.value();
        let attribute_headers = self.kafka_attribute_headers.value();
        let attribute_prefix = self.kafka_attribute_header_prefix.get().and_then(|prefix| {
            let prefix = prefix.unwrap_or_default();
            if is_reserved_header(&prefix) {
                Err(invalid(
                    "KAFKA_ATTRIBUTE_HEADER_PREFIX",
                    &prefix,
                    "the pubsub. header namespace is reserved for the bridge's own headers",
                ))
            } else {
                Ok(prefix)
            }
        });
        let metadata_headers = self.kafka_metadata_headers.value();
        let timestamp_attribute = self.kafka_timestamp_attribute.get();
        all_or_errors!(
            attribute_prefix,
            key_source,
            attribute_headers,
            metadata_headers,
            timestamp_attribute,
        );
        Ok(RecordOptions {
            key_source,
            attribute_headers,
            attribute_prefix,
            metadata_headers,
            timestamp_attribute,
        })
    }
}

/// `SUBSCRIPTION=TOPIC,...`, at least one entry.
fn routing_table(raw: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in split_list(raw) {
        match entry.split_once('=').map(|(s, t)| (s.trim(), t.trim())) {
            Some((subscription, topic)) if !subscription.is_empty() && !topic.is_empty() => {
                map.insert(subscription.to_owned(), topic.to_owned());
            }
            _ => {
                return Err(invalid(
                    "KAFKA_TOPIC_BY_SUBSCRIPTION",
                    raw,
                    &format!("{entry:?} is not SUBSCRIPTION=TOPIC"),
                ));
            }
        }
    }
    if map.is_empty() {
        return Err(invalid(
            "KAFKA_TOPIC_BY_SUBSCRIPTION",
            raw,
            "no SUBSCRIPTION=TOPIC entry",
        ));
    }
    Ok(map)
}
