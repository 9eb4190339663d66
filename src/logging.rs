//! Logs through tracing-subscriber: plain text, or Cloud Logging's structured JSON lines.

pub(crate) mod settings;

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use settings::LogFormat;

/// Field that, when a log call carries it, becomes Cloud Logging's trace correlation key.
pub(crate) const TRACE_FIELD: &str = "trace";

/// Default filter: rskafka reports every connection at info and a harmless notice when a
/// producer is dropped at shutdown; neither helps an operator.
pub(crate) const DEFAULT_FILTER: &str =
    "info,rskafka=warn,rskafka::client::producer::broadcast=error";

/// Installs the global subscriber; `RUST_LOG` filters (default [`DEFAULT_FILTER`]).
pub(crate) fn init(format: LogFormat, filter: Option<&str>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    // Colour codes only on a terminal: piped or collected logs stay plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(CloudLoggingJson).try_init(),
    };
}

/// One JSON object per line with `severity`, `message`, `time`, the event's fields and
/// `logging.googleapis.com/trace`, so Cloud Logging groups lines with their request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CloudLoggingJson;

/// Cloud Logging's severity names.
pub(crate) fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(key(field), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(key(field), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(key(field), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(key(field), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(key(field), value.into());
    }
}

fn key(field: &Field) -> String {
    match field.name() {
        TRACE_FIELD => "logging.googleapis.com/trace".to_owned(),
        name => name.to_owned(),
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonFields(Map::new());
        fields
            .0
            .insert("severity".into(), severity(event.metadata().level()).into());
        fields
            .0
            .insert("time".into(), chrono::Utc::now().to_rfc3339().into());
        fields
            .0
            .insert("target".into(), event.metadata().target().into());
        event.record(&mut fields);
        writeln!(writer, "{}", Value::Object(fields.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Self;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_cloud_logging_fields() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(CloudLoggingJson)
            .with_writer(capture.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                message_id = "42",
                status = 503u64,
                trace = "projects/p/traces/abc",
                "delivery failed"
            );
        });
        let line = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["severity"], "WARNING");
        assert_eq!(v["message"], "delivery failed");
        assert_eq!(v["message_id"], "42");
        assert_eq!(v["status"], 503);
        assert_eq!(v["logging.googleapis.com/trace"], "projects/p/traces/abc");
    }
}
