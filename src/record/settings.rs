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
pub(crate) struct RecordSettings {
    /// Target topic [required, or --kafka-topic-by-subscription]; with --routes, where deliveries no rule matches go
    #[arg(long, env = "KAFKA_TOPIC", value_name = "TOPIC", global = true, value_parser = text())]
    kafka_topic: Option<Setting<String>>,
    /// Route by subscription instead: SUBSCRIPTION=TOPIC,...; `*=TOPIC` is an explicit default, others get 404
    #[arg(
        long,
        env = "KAFKA_TOPIC_BY_SUBSCRIPTION",
        value_name = "SUB=TOPIC,...",
        global = true,
        value_parser = text(),
    )]
    kafka_topic_by_subscription: Option<Setting<String>>,
    /// `ordering_key`, `message_id`, `attribute:NAME` or `none`
    #[arg(
        long,
        env = "KAFKA_KEY",
        value_name = "SOURCE",
        global = true,
        default_value = "ordering_key",
        value_parser = parsed::<KeySource>(),
    )]
    kafka_key: Setting<KeySource>,
    /// Take the record timestamp from this attribute (epoch ms or RFC 3339) (unset: publishTime)
    #[arg(
        long,
        env = "KAFKA_TIMESTAMP_ATTRIBUTE",
        value_name = "NAME",
        global = true,
        value_parser = text(),
    )]
    kafka_timestamp_attribute: Option<Setting<String>>,
    /// `all`, `none` or `only:NAME,...`: which attributes become headers
    #[arg(
        long,
        env = "KAFKA_ATTRIBUTE_HEADERS",
        value_name = "WHICH",
        global = true,
        default_value = "all",
        value_parser = parsed::<AttributeHeaders>(),
    )]
    kafka_attribute_headers: Setting<AttributeHeaders>,
    /// Put before every attribute header name; never in the reserved `pubsub.` namespace (unset: none)
    #[arg(
        long,
        env = "KAFKA_ATTRIBUTE_HEADER_PREFIX",
        value_name = "PREFIX",
        global = true,
        value_parser = text(),
    )]
    kafka_attribute_header_prefix: Option<Setting<String>>,
    /// `false` drops the pubsub.* metadata headers
    #[arg(
        long,
        env = "KAFKA_METADATA_HEADERS",
        value_name = "BOOL",
        global = true,
        default_value = "true",
        value_parser = boolean(),
    )]
    kafka_metadata_headers: Setting<bool>,
}

impl RecordSettings {
    /// Where records go: `KAFKA_TOPIC`, or `KAFKA_TOPIC_BY_SUBSCRIPTION`.
    pub(crate) fn route(&self) -> Result<TopicRoute, ConfigError> {
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
    pub(crate) fn options(&self) -> Result<RecordOptions, Vec<ConfigError>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    fn record(vars: &[(&str, &str)]) -> Result<RecordOptions, Vec<ConfigError>> {
        from_vars::<RecordSettings>(vars).options()
    }

    fn route(vars: &[(&str, &str)]) -> Result<TopicRoute, ConfigError> {
        from_vars::<RecordSettings>(vars).route()
    }

    #[test]
    fn defaults_follow_the_contract() {
        assert_eq!(record(&[]).unwrap(), RecordOptions::default());
        assert_eq!(
            route(&[("KAFKA_TOPIC", " t ")]).unwrap(),
            TopicRoute::Single("t".into())
        );
    }

    #[test]
    fn an_attribute_prefix_never_enters_the_reserved_namespace() {
        let error =
            record(&[("KAFKA_ATTRIBUTE_HEADER_PREFIX", "PubSub.")]).unwrap_err()[0].to_string();
        assert!(
            error.starts_with("KAFKA_ATTRIBUTE_HEADER_PREFIX"),
            "{error}"
        );
        assert!(record(&[("KAFKA_ATTRIBUTE_HEADER_PREFIX", "attr.")]).is_ok());
    }

    #[test]
    fn one_topic_or_a_routing_table() {
        assert_eq!(route(&[]).unwrap_err().var(), "KAFKA_TOPIC");
        assert_eq!(
            route(&[("KAFKA_TOPIC", "t"), ("KAFKA_TOPIC_BY_SUBSCRIPTION", "a=b")])
                .unwrap_err()
                .var(),
            "KAFKA_TOPIC_BY_SUBSCRIPTION"
        );
        for broken in ["a", "a=", "=b", " , "] {
            let error = route(&[("KAFKA_TOPIC_BY_SUBSCRIPTION", broken)]).unwrap_err();
            assert_eq!(error.var(), "KAFKA_TOPIC_BY_SUBSCRIPTION", "{broken}");
        }
        assert_eq!(
            route(&[("KAFKA_TOPIC_BY_SUBSCRIPTION", " a = x , *=y")]).unwrap(),
            TopicRoute::BySubscription([("*".into(), "y".into()), ("a".into(), "x".into())].into())
        );
    }

    #[test]
    fn booleans_are_strict_so_a_typo_never_flips_a_setting() {
        assert!(record(&[]).unwrap().metadata_headers);
        for off in ["false", "0", "no", "FALSE"] {
            let c = record(&[("KAFKA_METADATA_HEADERS", off)]).unwrap();
            assert!(!c.metadata_headers, "{off}");
        }
        assert!(
            record(&[("KAFKA_METADATA_HEADERS", "true")])
                .unwrap()
                .metadata_headers
        );
        let error = record(&[("KAFKA_METADATA_HEADERS", "flase")]).unwrap_err()[0].to_string();
        assert!(
            error.starts_with("KAFKA_METADATA_HEADERS=\"flase\""),
            "{error}"
        );
    }

    #[test]
    fn parses_key_sources() {
        let mut vars = vec![];
        vars.push(("KAFKA_KEY", "attribute:tenant"));
        assert_eq!(
            record(&vars).unwrap().key_source,
            KeySource::Attribute("tenant".into())
        );
        vars.pop();
        vars.push(("KAFKA_KEY", "message_id"));
        assert_eq!(record(&vars).unwrap().key_source, KeySource::MessageId);
        vars.pop();
        vars.push(("KAFKA_KEY", "none"));
        assert_eq!(record(&vars).unwrap().key_source, KeySource::None);
    }

    #[test]
    fn header_and_time_options() {
        let mut vars = vec![];
        vars.extend([
            ("KAFKA_ATTRIBUTE_HEADERS", "only:a, b"),
            ("KAFKA_ATTRIBUTE_HEADER_PREFIX", "attr."),
            ("KAFKA_METADATA_HEADERS", "false"),
            ("KAFKA_TIMESTAMP_ATTRIBUTE", "event_time"),
        ]);
        let c = record(&vars).unwrap();
        assert_eq!(
            c.attribute_headers,
            AttributeHeaders::Only(vec!["a".into(), "b".into()])
        );
        assert_eq!(c.attribute_prefix, "attr.");
        assert!(!c.metadata_headers);
        assert_eq!(c.timestamp_attribute.as_deref(), Some("event_time"));
    }
}
