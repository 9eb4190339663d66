//! The HTTP server's settings (port, shutdown) and its limits, declared once for the flag, the
//! variable, the default and the help, and turned into a [`ServerConfig`].

use std::time::Duration;

use super::{HttpLimits, InflightLimits};
use crate::setting::{
    ConfigError, OptionalSetting, Setting, all_or_errors, invalid, millis, number,
};

/// Where the server listens and how it stops.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub(crate) struct ServerSettings {
    /// Listen port (Cloud Run sets it)
    #[arg(
        long,
        env = "PORT",
        value_name = "PORT",
        global = true,
        default_value = "8080",
        value_parser = number(0, 65_535),
    )]
    port: Setting<u64>,
    /// After SIGTERM, how long in-flight deliveries may finish before the rest answer 503
    #[arg(
        long,
        env = "SHUTDOWN_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "8000",
        value_parser = millis(0, 3_600_000),
    )]
    shutdown_timeout_ms: Setting<Duration>,
    /// Connection, time, body and in-flight limits.
    #[command(flatten)]
    limits: LimitSettings,
}

/// What any client can make the server hold.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Limits")]
pub(crate) struct LimitSettings {
    /// Larger bodies get 413
    #[arg(
        long,
        env = "MAX_BODY_BYTES",
        value_name = "BYTES",
        global = true,
        default_value = "16777216",
        value_parser = number(1024, 1 << 30),
    )]
    max_body_bytes: Setting<u64>,
    /// Time to tell HTTP/1 from HTTP/2 and to receive a request head
    #[arg(
        long,
        env = "HTTP_HEADER_READ_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "10000",
        value_parser = millis(100, 600_000),
    )]
    http_header_read_timeout_ms: Setting<Duration>,
    /// Longest pause while a body arrives; then 408
    #[arg(
        long,
        env = "HTTP_BODY_IDLE_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "10000",
        value_parser = millis(100, 600_000),
    )]
    http_body_idle_timeout_ms: Setting<Duration>,
    /// Longest time for a whole body; then 408
    #[arg(
        long,
        env = "HTTP_BODY_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "60000",
        value_parser = millis(100, 3_600_000),
    )]
    http_body_timeout_ms: Setting<Duration>,
    /// A connection with no request in progress this long is closed
    #[arg(
        long,
        env = "HTTP_IDLE_TIMEOUT_MS",
        value_name = "MS",
        global = true,
        default_value = "120000",
        value_parser = millis(100, 3_600_000),
    )]
    http_idle_timeout_ms: Setting<Duration>,
    /// Requests one HTTP/2 connection may have open at once
    #[arg(
        long,
        env = "HTTP2_MAX_CONCURRENT_STREAMS",
        value_name = "N",
        global = true,
        default_value = "64",
        value_parser = number(1, 10_000),
    )]
    http2_max_concurrent_streams: Setting<u64>,
    /// Open connections; beyond it new clients wait in the listen backlog
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        value_name = "N",
        global = true,
        default_value = "1024",
        value_parser = number(1, 1 << 20),
    )]
    max_connections: Setting<u64>,
    /// Body bytes of deliveries in flight; beyond it 503 (unset: (container memory - 48 MiB) / 4, else 256 MiB)
    #[arg(
        long,
        env = "MAX_INFLIGHT_BYTES",
        value_name = "BYTES",
        global = true,
        value_parser = number(1024, 1 << 40),
    )]
    max_inflight_bytes: Option<Setting<u64>>,
    /// Deliveries in flight; beyond it 503
    #[arg(
        long,
        env = "MAX_INFLIGHT_REQUESTS",
        value_name = "N",
        global = true,
        default_value = "1000",
        value_parser = number(1, 1 << 20),
    )]
    max_inflight_requests: Setting<u64>,
}

/// The HTTP server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerConfig {
    /// `PORT`.
    pub(crate) port: u16,
    /// `SHUTDOWN_TIMEOUT_MS`: how long in-flight deliveries may finish after SIGTERM.
    pub(crate) shutdown_timeout: Duration,
    /// `MAX_BODY_BYTES`: larger requests are answered 413.
    pub(crate) max_body_bytes: usize,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`: slow clients are cut off after this.
    pub(crate) header_read_timeout: Duration,
    /// Connection, time, body and in-flight limits.
    pub(crate) limits: HttpLimits,
}

impl ServerSettings {
    /// The server's configuration for a container with `memory_limit` bytes (from which the
    /// in-flight budget's default is derived), or every error among the settings.
    pub(crate) fn settings(
        &self,
        memory_limit: Option<u64>,
    ) -> Result<ServerConfig, Vec<ConfigError>> {
        let limits = &self.limits;
        let max_body_bytes = limits.max_body_bytes.value();
        let inflight = limits.http_limits(
            // Reported once, as MAX_BODY_BYTES.
            max_body_bytes.as_ref().map_or(0, |&bytes| bytes as usize),
            memory_limit,
        );
        let port = self.port.value();
        let header_read_timeout = limits.http_header_read_timeout_ms.value();
        let shutdown_timeout = self.shutdown_timeout_ms.value();
        all_or_errors!(
            max_body_bytes,
            inflight,
            port,
            header_read_timeout,
            shutdown_timeout,
        );
        Ok(ServerConfig {
            port: port as u16,
            shutdown_timeout,
            max_body_bytes: max_body_bytes as usize,
            header_read_timeout,
            limits: inflight,
        })
    }
}

impl LimitSettings {
    /// The server's limits; the in-flight byte budget defaults from the container's memory and
    /// is never below one largest body.
    fn http_limits(
        &self,
        max_body_bytes: usize,
        memory_limit: Option<u64>,
    ) -> Result<HttpLimits, ConfigError> {
        let max_bytes = self
            .max_inflight_bytes
            .get()?
            .unwrap_or_else(|| InflightLimits::default_bytes(memory_limit, max_body_bytes));
        if max_bytes < max_body_bytes as u64 {
            return Err(invalid(
                "MAX_INFLIGHT_BYTES",
                &max_bytes.to_string(),
                &format!(
                    "below MAX_BODY_BYTES ({max_body_bytes}): the largest delivery could never pass"
                ),
            ));
        }
        Ok(HttpLimits {
            max_connections: self.max_connections.value()? as usize,
            body_idle_timeout: self.http_body_idle_timeout_ms.value()?,
            body_timeout: self.http_body_timeout_ms.value()?,
            idle_timeout: self.http_idle_timeout_ms.value()?,
            h2_max_streams: self.http2_max_concurrent_streams.value()? as u32,
            inflight: InflightLimits {
                max_bytes,
                max_requests: self.max_inflight_requests.value()? as u32,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::from_vars;

    fn server(
        vars: &[(&str, &str)],
        memory_limit: Option<u64>,
    ) -> Result<ServerConfig, Vec<ConfigError>> {
        from_vars::<ServerSettings>(vars).settings(memory_limit)
    }

    #[test]
    fn server_defaults_follow_the_contract() {
        let c = server(&[], None).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_body_bytes, 16 << 20);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(8));
        let c = server(&[("PORT", "0"), ("SHUTDOWN_TIMEOUT_MS", "0")], None).unwrap();
        assert_eq!((c.port, c.shutdown_timeout), (0, Duration::ZERO));
        assert_eq!(server(&[("PORT", "65535")], None).unwrap().port, 65535);
    }

    #[test]
    fn a_bad_body_limit_is_reported_once() {
        let errors = server(&[("MAX_BODY_BYTES", "big"), ("PORT", "65536")], None).unwrap_err();
        let vars: Vec<_> = errors.iter().map(ConfigError::var).collect();
        assert_eq!(vars, ["MAX_BODY_BYTES", "PORT"]);
    }

    #[test]
    fn server_limits_have_defaults_and_refuse_a_budget_below_one_body() {
        let c = server(&[], None).unwrap();
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.h2_max_streams, 64);
        assert_eq!(c.limits.body_idle_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.body_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.inflight.max_requests, 1000);
        assert_eq!(c.limits.inflight.max_bytes, 256 << 20);
        let in_256_mib = server(&[], Some(256 << 20));
        assert_eq!(in_256_mib.unwrap().limits.inflight.max_bytes, 52 << 20);
        let c = server(
            &[
                ("MAX_INFLIGHT_BYTES", "33554432"),
                ("MAX_INFLIGHT_REQUESTS", "7"),
                ("MAX_CONNECTIONS", "9"),
                ("HTTP2_MAX_CONCURRENT_STREAMS", "3"),
                ("HTTP_BODY_IDLE_TIMEOUT_MS", "1500"),
                ("HTTP_BODY_TIMEOUT_MS", "2500"),
                ("HTTP_IDLE_TIMEOUT_MS", "3500"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.limits.inflight.max_bytes, 32 << 20);
        assert_eq!(c.limits.inflight.max_requests, 7);
        assert_eq!(c.limits.max_connections, 9);
        assert_eq!(c.limits.h2_max_streams, 3);
        assert_eq!(c.limits.body_idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.limits.body_timeout, Duration::from_millis(2500));
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(3500));
        // Exactly one largest body is enough; one byte less is not.
        assert!(
            server(
                &[("MAX_BODY_BYTES", "4096"), ("MAX_INFLIGHT_BYTES", "4096")],
                None
            )
            .is_ok()
        );
        let error = server(
            &[("MAX_BODY_BYTES", "4096"), ("MAX_INFLIGHT_BYTES", "4095")],
            None,
        )
        .unwrap_err()[0]
            .to_string();
        assert!(error.starts_with("MAX_INFLIGHT_BYTES"), "{error}");
    }
}
