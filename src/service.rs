//! The one service both runtimes run: routes a request, bounds it, runs the [`App`] pipeline,
//! and turns every outcome into a response, its log line and its count, in one place.
//!
//! The hyper server streams bodies ([`Service::admit`], read the body, [`Service::deliver`]);
//! Lambda hands over a body already in memory ([`Service::handle`]). Either way a panic in the
//! pipeline is caught here and answered 500 (counted, logged), without a task per request.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::app::{Acked, App, Outcome};
use crate::config::Config;
use crate::error::DeliveryError;
use crate::kafka::{KafkaProducer, Produce};
use crate::limits::{InflightBudget, InflightPermit};
use crate::metrics::{Gauges, Metrics};

/// What the request head decides, before a byte of the body is read.
#[derive(Debug)]
pub(crate) enum Head {
    /// Answered from the head alone: health, readiness, metrics, a wrong method, a token that
    /// fails verification, or a full in-flight budget.
    Answered(Response<Bytes>),
    /// A verified delivery with its place in the in-flight budget: read the body into the
    /// permit ([`InflightPermit::reserve`]), then [`Service::deliver`].
    Delivery(InflightPermit),
}

/// The pipeline with everything around it that does not depend on the transport.
pub struct Service<P = KafkaProducer> {
    app: App<P>,
    metrics: Metrics,
    inflight: InflightBudget,
    /// Raised when the shutdown grace period is over: waiting deliveries answer 503.
    abandoned: Signal,
}

/// A one-way flag with a wake-up: set once, read cheaply, and every waiter registered before
/// it was set is woken. (A `watch` channel did the same at about twice the cost per delivery:
/// callgrind, whole server under load.) The server's stop and the end of its grace period.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    wake: Notify,
}

impl Signal {
    /// Sets the flag, then wakes every waiter registered so far.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// A waiter. `raise` wakes every one that exists when it is called, polled or not, so one
    /// created before [`Signal::is_raised`] is read misses nothing.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

impl<P> std::fmt::Debug for Service<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("inflight_requests", &self.inflight.requests_in_flight())
            .finish_non_exhaustive()
    }
}

impl<P: Produce> Service<P> {
    /// The service around `app`.
    pub fn new(app: App<P>) -> Self {
        Self {
            inflight: InflightBudget::new(app.config().limits.inflight),
            metrics: Metrics::default(),
            abandoned: Signal::default(),
            app,
        }
    }

    /// The pipeline.
    pub fn app(&self) -> &App<P> {
        &self.app
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        self.app.config()
    }

    /// The in-flight budget (its gauges for tests and metrics).
    pub fn inflight(&self) -> &InflightBudget {
        &self.inflight
    }

    /// Delivery counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ends the shutdown grace period: deliveries still waiting for Kafka answer 503.
    pub fn abandon_in_flight(&self) {
        self.abandoned.raise();
    }

    /// Handles one request whose body is already in memory (Lambda, tests).
    pub async fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        let (head, body) = request.into_parts();
        let mut permit = match self.admit(&head).await {
            Head::Answered(response) => return response,
            Head::Delivery(permit) => permit,
        };
        let limit = self.config().max_body_bytes;
        let admitted = permit.admitted();
        if body.len() > limit {
            return self.refuse(
                DeliveryError::BodyTooLarge { limit },
                &head.headers,
                admitted,
            );
        }
        if let Err(overloaded) = permit.reserve(body.len()) {
            return self.refuse(overloaded.into(), &head.headers, admitted);
        }
        self.deliver(&head, body, permit).await
    }

    /// Decides what the head alone can: the head limits, routes, method, token, room in the
    /// in-flight budget.
    ///
    /// The token is verified here, before the body is read, so an unauthenticated client never
    /// gets a `100 Continue`, never has its body read, and never holds in-flight budget.
    pub(crate) async fn admit(&self, head: &Parts) -> Head {
        // Where the delivery's latency is measured from: its head is complete, nothing of it
        // is checked yet (the token may wait for a JWKS fetch).
        let admitted = Instant::now();
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Err(too_large) =
            crate::limits::check_head(head.method.as_str(), target, &head.headers)
        {
            return Head::Answered(self.refuse(too_large.into(), &head.headers, admitted));
        }
        match (&head.method, head.uri.path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => return Head::Answered(self.liveness()),
            (&Method::GET | &Method::HEAD, "/readyz") => return Head::Answered(self.readiness()),
            (&Method::GET, "/metrics") => return Head::Answered(self.metrics_text()),
            (&Method::POST, _) => {}
            (method, _) => {
                let method = crate::error::bounded_echo(method.as_str());
                return Head::Answered(self.refuse(
                    DeliveryError::MethodNotAllowed(method),
                    &head.headers,
                    admitted,
                ));
            }
        }
        if let Err(e) = self.app.authorize(&head.headers).await {
            return Head::Answered(self.refuse(e, &head.headers, admitted));
        }
        match self.inflight.admit(admitted) {
            Ok(permit) => Head::Delivery(permit),
            Err(overloaded) => {
                Head::Answered(self.refuse(overloaded.into(), &head.headers, admitted))
            }
        }
    }

    /// Runs an admitted delivery through the pipeline and answers it; `permit` (its share of
    /// the in-flight budget) is released with the answer, or by the producer after it.
    ///
    /// Dropping the returned future (the client went away) cancels the delivery: Pub/Sub
    /// redelivers what it got no answer for.
    pub(crate) async fn deliver(
        &self,
        head: &Parts,
        body: Bytes,
        permit: InflightPermit,
    ) -> Response<Bytes> {
        let admitted = permit.admitted();
        // Created before the flag is read, so none is missed (see `Signal::notified`).
        let abandon = self.abandoned.notified();
        let outcome = if self.abandoned.is_raised() {
            Outcome {
                message_id: None,
                result: Err(DeliveryError::ShuttingDown),
            }
        } else {
            let pipeline =
                AssertUnwindSafe(self.app.deliver(&head.headers, body, permit)).catch_unwind();
            tokio::select! {
                biased;
                outcome = pipeline => outcome.unwrap_or_else(|_| {
                    tracing::error!("delivery pipeline panicked");
                    Outcome { message_id: None, result: Err(DeliveryError::Internal) }
                }),
                () = abandon => {
                    Outcome { message_id: None, result: Err(DeliveryError::ShuttingDown) }
                }
            }
        };
        let response = match outcome.result {
            Ok(Acked::Record(ack)) => {
                tracing::debug!(
                    message_id = outcome.message_id.as_deref(),
                    partition = ack.partition,
                    offset = ack.offset,
                    "delivered"
                );
                no_content()
            }
            Ok(Acked::Dropped { rule }) => {
                tracing::debug!(
                    message_id = outcome.message_id.as_deref(),
                    rule,
                    "dropped by a routing rule"
                );
                self.metrics.record_dropped();
                no_content()
            }
            Ok(Acked::Duplicate) => {
                tracing::debug!(
                    message_id = outcome.message_id.as_deref(),
                    "redelivery of an acknowledged message: not written again"
                );
                self.metrics.duplicate_suppressed();
                no_content()
            }
            Ok(Acked::DeadLetter { ack, error }) => {
                tracing::warn!(
                    message_id = outcome.message_id.as_deref(),
                    reason = %error,
                    code = error.code(),
                    dlq_topic = self.config().kafka.dlq_topic.as_deref(),
                    partition = ack.partition,
                    offset = ack.offset,
                    trace = self.trace(&head.headers).as_deref(),
                    "delivery dead-lettered"
                );
                no_content()
            }
            Err(error) => self.fail(&error, outcome.message_id.as_deref(), &head.headers),
        };
        self.count(response.status().as_u16(), admitted);
        response
    }

    /// Answers a delivery that failed before its pipeline ran (method, token, body, budget):
    /// one log line, counted and timed (from `admitted`, its head's admission) in the metrics.
    pub(crate) fn refuse(
        &self,
        error: DeliveryError,
        headers: &HeaderMap,
        admitted: Instant,
    ) -> Response<Bytes> {
        let response = self.fail(&error, None, headers);
        self.count(response.status().as_u16(), admitted);
        response
    }

    /// Counts an answered delivery by its status and times it from its head's admission.
    fn count(&self, status: u16, admitted: Instant) {
        self.metrics.record(status);
        self.metrics.observe_delivery(status, admitted.elapsed());
    }

    /// Logs and counts a request the HTTP parser refused and answered itself (a head it could
    /// not read, or over its bounds), which never reached the service: one line and one count,
    /// as every other refusal gets. Not timed: no head was admitted to time it from.
    pub(crate) fn refused_by_transport(&self, error: &DeliveryError) {
        self.log_failure(error, None, None);
        self.metrics.record(error.status().as_u16());
    }

    /// Logs the one line a failed delivery gets and builds its response.
    fn fail(
        &self,
        error: &DeliveryError,
        message_id: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Bytes> {
        self.log_failure(error, message_id, self.trace(headers));
        error.to_response()
    }

    fn log_failure(&self, error: &DeliveryError, message_id: Option<&str>, trace: Option<String>) {
        let status = error.status().as_u16();
        if error.level() == tracing::Level::ERROR {
            tracing::error!(message_id, status, code = error.code(), reason = %error, trace = trace.as_deref(), "delivery failed");
        } else {
            tracing::warn!(message_id, status, code = error.code(), reason = %error, trace = trace.as_deref(), "delivery failed");
        }
    }

    /// Cloud Logging trace name from `X-Cloud-Trace-Context` or `traceparent`.
    fn trace(&self, headers: &HeaderMap) -> Option<String> {
        let id = trace_id(headers)?;
        Some(match &self.config().gcp_project {
            Some(project) => format!("projects/{project}/traces/{id}"),
            None => id.to_owned(),
        })
    }

    fn metrics_text(&self) -> Response<Bytes> {
        let (produce_requests, produced_records) = self.app.producer().produced();
        let (token_cache_hits, token_cache_misses) = self.app.token_cache_lookups();
        let gauges = Gauges {
            produce_requests,
            produced_records,
            cached_tokens: self.app.cached_tokens(),
            inflight_requests: self.inflight.requests_in_flight(),
            inflight_bytes: self.inflight.bytes_in_flight(),
            schema_cache: self.app.schema_cache(),
            produce: self.app.producer().produce_histograms(),
            kafka_connected: self.app.producer().connected_within(self.contact_window()),
            token_cache_hits,
            token_cache_misses,
        };
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Bytes::from(self.metrics.render(gauges)))
            .unwrap_or_default()
    }

    /// Liveness: 200 while the process serves and its Kafka client can make progress (see
    /// [`Produce::liveness`]); no Kafka round trip. A 503 asks the platform for a restart, the
    /// repair the bridge cannot make itself (Cloud Run: "unrecoverable instance failures, such
    /// as a deadlock where an instance is running but unable to make progress").
    fn liveness(&self) -> Response<Bytes> {
        match self.app.producer().liveness() {
            Ok(()) => plain(StatusCode::OK, "ok"),
            Err(reason) => {
                tracing::error!(reason, "liveness check failed");
                plain(StatusCode::SERVICE_UNAVAILABLE, reason)
            }
        }
    }

    /// How recently Kafka must have answered to count as reached: metadata is re-read every
    /// refresh interval, so two missed reads mean Kafka is gone.
    fn contact_window(&self) -> Duration {
        (self.config().kafka.metadata_refresh * 2).max(Duration::from_secs(10))
    }

    fn readiness(&self) -> Response<Bytes> {
        if self.app.producer().reached_within(self.contact_window()) {
            plain(StatusCode::OK, "ready")
        } else {
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka not reached recently",
            )
        }
    }
}

/// The trace id of a request: `X-Cloud-Trace-Context: TRACE/SPAN;o=1` or W3C `traceparent`.
pub(crate) fn trace_id(headers: &HeaderMap) -> Option<&str> {
    let valid = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(value) = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
    {
        let id = value.split(['/', ';']).next().unwrap_or_default();
        if valid(id) {
            return Some(id);
        }
    }
    let value = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    let id = value.split('-').nth(1)?;
    valid(id).then_some(id)
}

fn no_content() -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Bytes::new())
        .unwrap_or_default()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Bytes::from_static(text.as_bytes()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_comes_from_either_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1".parse().unwrap(),
        );
        assert_eq!(trace_id(&headers), Some("105445aa7843bc8bf206b12000100000"));
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(trace_id(&headers), Some("0af7651916cd43dd8448eb211c80319c"));
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(trace_id(&headers), None);
    }
}
