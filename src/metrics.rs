//! Counters and histograms for `GET /metrics` (Prometheus text format): deliveries by status
//! and their latency, batching and Kafka produce latency, tokens, the Kafka connection.
//!
//! Recording takes no lock: each figure is an `AtomicU64` added to with `Relaxed` ordering (a
//! count orders no other memory), and a histogram observation is two such adds, one to the
//! bucket a binary search over a few constant bounds finds, one to the sum. Concurrent
//! deliveries contend only on those cache lines, as on the status counters. A scrape reads the
//! figures one by one, so while deliveries are answered a histogram's `_sum` may lead or trail
//! its buckets by an observation or two; its `_count` is the sum of its buckets, so `_count`
//! and the `+Inf` bucket always agree.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every status a delivery can be answered with; anything else is counted as `other`.
const STATUSES: [u16; 14] = [
    204, 400, 401, 403, 404, 405, 408, 413, 414, 422, 431, 500, 503, 0,
];

/// The status classes delivery latency is kept by, the values of its `status` label.
const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// The slot of `status`'s class in [`STATUS_CLASSES`]: anything but a 2xx or a 4xx is the
/// bridge's failure (5xx); deliveries are answered with nothing else.
fn status_class(status: u16) -> usize {
    match status {
        200..=299 => 0,
        400..=499 => 1,
        _ => 2,
    }
}

/// Figures read from the rest of the bridge at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauges {
    /// Produce requests Kafka acknowledged.
    pub(crate) produce_requests: u64,
    /// Records Kafka acknowledged.
    pub(crate) produced_records: u64,
    /// Verified tokens cached.
    pub(crate) cached_tokens: usize,
    /// Deliveries being read or waiting for Kafka.
    pub(crate) inflight_requests: u64,
    /// Body bytes those deliveries hold.
    pub(crate) inflight_bytes: u64,
    /// `pubsub-schema` revision lookups: `(hits, misses)`.
    pub(crate) schema_cache: (u64, u64),
    /// Latency and records of the produce requests Kafka acknowledged.
    pub(crate) produce: ProduceHistograms,
    /// Whether Kafka answers now (see [`crate::kafka::Produce::connected_within`]).
    pub(crate) kafka_connected: bool,
    /// Token verdicts, accepted or refused, answered from the cache.
    pub(crate) token_cache_hits: u64,
    /// Tokens not in the cache, checked in full.
    pub(crate) token_cache_misses: u64,
}

/// Delivery outcomes since start.
#[derive(Debug, Default)]
pub struct Metrics {
    by_status: [AtomicU64; STATUSES.len()],
    /// Deliveries a routing rule dropped (answered 204, nothing written).
    dropped: AtomicU64,
    /// Latency of answered deliveries, from the admission of the head, by status class.
    delivery_duration: [Histogram<Latency>; STATUS_CLASSES.len()],
    duplicates_suppressed: AtomicU64,
}

impl Metrics {
    /// Counts one answered delivery.
    pub(crate) fn record(&self, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one delivery a routing rule dropped.
    pub(crate) fn record_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Times one answered delivery, `elapsed` since its head was admitted, under the class of
    /// its `status`.
    pub(crate) fn observe_delivery(&self, status: u16, elapsed: Duration) {
        self.delivery_duration[status_class(status)].observe_duration(elapsed);
    }

    /// Counts one redelivery answered without writing (its message's record was acknowledged).
    pub(crate) fn duplicate_suppressed(&self) {
        self.duplicates_suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries answered with `status` so far.
    pub fn count(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .map_or(0, |slot| self.by_status[slot].load(Ordering::Relaxed))
    }

    /// The exposition text, with the producer's batching figures, the token cache size and
    /// the in-flight budget in use.
    pub(crate) fn render(&self, gauges: Gauges) -> String {
        let Gauges {
            produce_requests,
            produced_records,
            cached_tokens,
            inflight_requests,
            inflight_bytes,
            schema_cache: (schema_cache_hits, schema_cache_misses),
            ..
        } = gauges;
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP pubsub_kafka_bridge_deliveries_total Push deliveries answered, by HTTP status.\n");
        out.push_str("# TYPE pubsub_kafka_bridge_deliveries_total counter\n");
        for (slot, status) in STATUSES.iter().enumerate() {
            let label = if *status == 0 {
                "other".to_owned()
            } else {
                status.to_string()
            };
            let value = self.by_status[slot].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "pubsub_kafka_bridge_deliveries_total{{status=\"{label}\"}} {value}"
            );
        }
        let _ = write!(
            out,
            "# HELP pubsub_kafka_bridge_produce_requests_total Produce requests acknowledged by Kafka.\n\
             # TYPE pubsub_kafka_bridge_produce_requests_total counter\n\
             pubsub_kafka_bridge_produce_requests_total {produce_requests}\n\
             # HELP pubsub_kafka_bridge_produced_records_total Records acknowledged by Kafka.\n\
             # TYPE pubsub_kafka_bridge_produced_records_total counter\n\
             pubsub_kafka_bridge_produced_records_total {produced_records}\n\
             # HELP pubsub_kafka_bridge_verified_tokens Verified push tokens in the cache.\n\
             # TYPE pubsub_kafka_bridge_verified_tokens gauge\n\
             pubsub_kafka_bridge_verified_tokens {cached_tokens}\n\
             # HELP pubsub_kafka_bridge_inflight_requests Deliveries being read or awaiting Kafka.\n\
             # TYPE pubsub_kafka_bridge_inflight_requests gauge\n\
             pubsub_kafka_bridge_inflight_requests {inflight_requests}\n\
             # HELP pubsub_kafka_bridge_inflight_bytes Body bytes held by deliveries in flight.\n\
             # TYPE pubsub_kafka_bridge_inflight_bytes gauge\n\
             pubsub_kafka_bridge_inflight_bytes {inflight_bytes}\n\
             # HELP pubsub_kafka_bridge_schema_cache_hits_total Schema revision lookups answered from the cache.\n\
             # TYPE pubsub_kafka_bridge_schema_cache_hits_total counter\n\
             pubsub_kafka_bridge_schema_cache_hits_total {schema_cache_hits}\n\
             # HELP pubsub_kafka_bridge_schema_cache_misses_total Schema revision lookups that fetched or waited for a fetch.\n\
             # TYPE pubsub_kafka_bridge_schema_cache_misses_total counter\n\
             pubsub_kafka_bridge_schema_cache_misses_total {schema_cache_misses}\n\
             # HELP pubsub_kafka_bridge_duplicates_suppressed_total Redeliveries answered without writing: their message's record was acknowledged.\n\
             # TYPE pubsub_kafka_bridge_duplicates_suppressed_total counter\n\
             pubsub_kafka_bridge_duplicates_suppressed_total {}\n",
            self.duplicates_suppressed.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP pubsub_kafka_bridge_dropped_total Deliveries a routing rule dropped (answered 204, nothing written).\n\
             # TYPE pubsub_kafka_bridge_dropped_total counter\n\
             pubsub_kafka_bridge_dropped_total {}\n",
            self.dropped.load(Ordering::Relaxed)
        );
        self.render_latency_and_state(&mut out, &gauges);
        out
    }

    /// The histograms, the Kafka connection state and the token cache's lookups.
    fn render_latency_and_state(&self, out: &mut String, gauges: &Gauges) {
        let name = "pubsub_kafka_bridge_delivery_duration_seconds";
        out.push_str("# HELP pubsub_kafka_bridge_delivery_duration_seconds Time from a push delivery's admitted request head to its answer, by status class.\n");
        out.push_str("# TYPE pubsub_kafka_bridge_delivery_duration_seconds histogram\n");
        for (class, histogram) in STATUS_CLASSES.iter().zip(&self.delivery_duration) {
            histogram
                .snapshot()
                .write(out, name, &format!("status=\"{class}\""));
        }
        out.push_str("# HELP pubsub_kafka_bridge_produce_duration_seconds Time Kafka took to acknowledge a produce request (acks=all), retries included.\n");
        out.push_str("# TYPE pubsub_kafka_bridge_produce_duration_seconds histogram\n");
        gauges
            .produce
            .duration
            .write(out, "pubsub_kafka_bridge_produce_duration_seconds", "");
        out.push_str("# HELP pubsub_kafka_bridge_produce_batch_records Records per produce request Kafka acknowledged.\n");
        out.push_str("# TYPE pubsub_kafka_bridge_produce_batch_records histogram\n");
        gauges
            .produce
            .batch_records
            .write(out, "pubsub_kafka_bridge_produce_batch_records", "");
        let _ = write!(
            out,
            "# HELP pubsub_kafka_bridge_kafka_connected 1 while Kafka answers: reached recently, and no delivery failed for want of an answer since; else 0.\n\
             # TYPE pubsub_kafka_bridge_kafka_connected gauge\n\
             pubsub_kafka_bridge_kafka_connected {}\n\
             # HELP pubsub_kafka_bridge_token_cache_hits_total Push token verdicts, accepted or refused, answered from the cache.\n\
             # TYPE pubsub_kafka_bridge_token_cache_hits_total counter\n\
             pubsub_kafka_bridge_token_cache_hits_total {}\n\
             # HELP pubsub_kafka_bridge_token_cache_misses_total Push tokens not in the cache, checked in full.\n\
             # TYPE pubsub_kafka_bridge_token_cache_misses_total counter\n\
             pubsub_kafka_bridge_token_cache_misses_total {}\n",
            u8::from(gauges.kafka_connected),
            gauges.token_cache_hits,
            gauges.token_cache_misses,
        );
    }
}

/// Most finite bounds a histogram may have: its counts are a fixed array, so recording never
/// allocates.
const MAX_BOUNDS: usize = 17;

/// The fixed buckets of one kind of histogram.
pub(crate) trait Buckets: Copy + Default + std::fmt::Debug {
    /// Inclusive upper bounds (`le`), strictly ascending, in the unit observations are made
    /// in; the `+Inf` bucket follows them. At most [`MAX_BOUNDS`].
    const BOUNDS: &'static [u64];
    /// Observation units per unit shown (1,000,000: microseconds shown as seconds).
    const PER_SHOWN_UNIT: u64;
}

/// Latency of a delivery or a produce request: observed in microseconds, shown in seconds.
///
/// 100 µs to 30 s. A delivery refused from its head (a token that fails, a full in-flight
/// budget) is answered in well under a millisecond; a produce to Kafka with acks=all takes
/// from a fraction of a millisecond (a local broker) to tens of milliseconds (across zones),
/// plus `KAFKA_LINGER_MS`; a delivery Kafka never acknowledges is answered at
/// `KAFKA_PRODUCE_TIMEOUT_MS` (default 10 s, so it lands in the 10-30 s bucket), and Pub/Sub's
/// push deadline is its ack deadline, 10 s to 600 s. The steps are the 1-2.5-5 series of
/// Prometheus's default buckets (5 ms to 10 s), extended below and above.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Latency;

impl Buckets for Latency {
    const BOUNDS: &'static [u64] = &[
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
    ];
    const PER_SHOWN_UNIT: u64 = 1_000_000;
}

/// Records in one produce request: powers of two up to what `KAFKA_MAX_BATCH_BYTES` (1 MiB by
/// default) holds of small records. 1 is a delivery that had its partition to itself.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BatchRecords;

impl Buckets for BatchRecords {
    const BOUNDS: &'static [u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096, 16_384];
    const PER_SHOWN_UNIT: u64 = 1;
}

/// A Prometheus histogram with fixed buckets `B`, recorded without a lock.
#[derive(Debug, Default)]
pub(crate) struct Histogram<B> {
    /// Observations per bucket, not cumulative: `counts[i]` those in (`BOUNDS[i - 1]`,
    /// `BOUNDS[i]`], `counts[BOUNDS.len()]` those above the last bound.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of the observations, in the observed unit (microseconds overflow after 584,000
    /// years of summed latency).
    sum: AtomicU64,
    buckets: PhantomData<B>,
}

impl<B: Buckets> Histogram<B> {
    /// Fails the build for a `B` with more bounds than the counts hold.
    const FITS: () = assert!(B::BOUNDS.len() <= MAX_BOUNDS);

    /// Records one observation of `value` (in `B`'s observed unit).
    pub(crate) fn observe(&self, value: u64) {
        let () = Self::FITS;
        // The first bound at or above `value`; past the last one is the `+Inf` bucket.
        let slot = B::BOUNDS.partition_point(|bound| *bound < value);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The figures so far.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot<B> {
        HistogramSnapshot {
            counts: std::array::from_fn(|slot| self.counts[slot].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
            buckets: PhantomData,
        }
    }
}

impl Histogram<Latency> {
    /// Records one latency.
    pub(crate) fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }
}

/// A histogram's figures read at one scrape.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HistogramSnapshot<B> {
    counts: [u64; MAX_BOUNDS + 1],
    sum: u64,
    buckets: PhantomData<B>,
}

impl<B: Buckets> HistogramSnapshot<B> {
    /// Observations recorded.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Writes the series `NAME_bucket{le=...}` (cumulative, `+Inf` last), `NAME_sum` and
    /// `NAME_count`, each with `label` (`key="value"`, or empty) first.
    fn write(&self, out: &mut String, name: &str, label: &str) {
        let (comma, braced) = if label.is_empty() {
            ("", String::new())
        } else {
            (",", format!("{{{label}}}"))
        };
        let per_unit = B::PER_SHOWN_UNIT as f64;
        let mut cumulative = 0;
        for (bound, count) in B::BOUNDS.iter().zip(self.counts) {
            cumulative += count;
            let le = *bound as f64 / per_unit;
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}{comma}le=\"{le}\"}} {cumulative}"
            );
        }
        let total = self.count();
        let sum = self.sum as f64 / per_unit;
        let _ = writeln!(out, "{name}_bucket{{{label}{comma}le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {total}");
    }
}

/// The producer's histograms, read at one scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProduceHistograms {
    /// Time from sending a produce request to Kafka's acknowledgement, retries included.
    pub(crate) duration: HistogramSnapshot<Latency>,
    /// Records per acknowledged produce request.
    pub(crate) batch_records: HistogramSnapshot<BatchRecords>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status_and_renders_prometheus_text() {
        let m = Metrics::default();
        m.record(204);
        m.record(204);
        m.record(503);
        m.record(418);
        m.record_dropped();
        m.duplicate_suppressed();
        assert_eq!((m.count(204), m.count(503), m.count(0)), (2, 1, 1));
        let text = m.render(Gauges {
            produce_requests: 3,
            produced_records: 7,
            cached_tokens: 1,
            inflight_requests: 2,
            inflight_bytes: 4096,
            schema_cache: (5, 2),
            ..Gauges::default()
        });
        assert!(text.contains("pubsub_kafka_bridge_deliveries_total{status=\"204\"} 2\n"));
        assert!(text.contains("pubsub_kafka_bridge_deliveries_total{status=\"other\"} 1\n"));
        assert!(text.contains("pubsub_kafka_bridge_produced_records_total 7\n"));
        assert!(text.contains("pubsub_kafka_bridge_produce_requests_total 3\n"));
        assert!(text.contains("pubsub_kafka_bridge_verified_tokens 1\n"));
        assert!(text.contains("pubsub_kafka_bridge_inflight_requests 2\n"));
        assert!(text.contains("pubsub_kafka_bridge_inflight_bytes 4096\n"));
        assert!(text.contains("pubsub_kafka_bridge_schema_cache_hits_total 5\n"));
        assert!(text.contains("pubsub_kafka_bridge_schema_cache_misses_total 2\n"));
        assert!(text.contains("pubsub_kafka_bridge_dropped_total 1\n"));
        assert!(text.contains("pubsub_kafka_bridge_duplicates_suppressed_total 1\n"));
    }

    /// A sample parsed back: its name, its labels in order, its value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// The exposition parsed back, line by line: every line is either a `# HELP`/`# TYPE`
    /// comment or a sample.
    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|line| !line.starts_with("# HELP ") && !line.starts_with("# TYPE "))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                let value: f64 = value.parse().expect("a number");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let inner = rest.strip_suffix('}').expect("closed labels");
                        let labels = inner
                            .split(',')
                            .map(|pair| {
                                let (key, quoted) = pair.split_once('=').expect("key=value");
                                let value = quoted
                                    .strip_prefix('"')
                                    .and_then(|v| v.strip_suffix('"'))
                                    .expect("quoted value");
                                (key.to_owned(), value.to_owned())
                            })
                            .collect();
                        (name, labels)
                    }
                    None => (series, Vec::new()),
                };
                (name.to_owned(), labels, value)
            })
            .collect()
    }

    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = samples(text)
            .into_iter()
            .filter(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        found[0]
    }

    #[test]
    fn an_observation_goes_to_the_first_bucket_at_or_above_it() {
        let histogram = Histogram::<Latency>::default();
        // At a bound, just above it, zero, and past the last bound.
        for value in [0, 100, 101, 250, 30_000_000, 30_000_001, u64::MAX / 2] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        let mut expected = [0; MAX_BOUNDS + 1];
        expected[0] = 2; // 0 and 100 (le 0.0001)
        expected[1] = 2; // 101 and 250 (le 0.00025)
        expected[16] = 1; // 30 s (le 30)
        expected[17] = 2; // above 30 s (+Inf)
        assert_eq!(snapshot.counts, expected);
        assert_eq!(snapshot.count(), 7);
        assert_eq!(
            snapshot.sum,
            100 + 101 + 250 + 30_000_000 + 30_000_001 + u64::MAX / 2
        );
    }

    #[test]
    fn a_duration_is_observed_in_microseconds() {
        let histogram = Histogram::<Latency>::default();
        histogram.observe_duration(Duration::from_nanos(1_000_999));
        histogram.observe_duration(Duration::from_secs(u64::MAX));
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.counts[3], 1,
            "1.000999 ms is at most 1 ms, in microseconds"
        );
        assert_eq!(
            snapshot.counts[MAX_BOUNDS], 1,
            "beyond u64 microseconds: +Inf"
        );
        assert_eq!(
            snapshot.sum,
            1_000u64.wrapping_add(u64::MAX),
            "saturated, then wrapped"
        );
    }

    #[test]
    fn deliveries_are_timed_by_status_class() {
        let metrics = Metrics::default();
        for (status, millis) in [(204, 2), (204, 30), (400, 1), (401, 0), (404, 7), (500, 3)] {
            metrics.observe_delivery(status, Duration::from_millis(millis));
        }
        metrics.observe_delivery(503, Duration::from_secs(12));
        metrics.observe_delivery(199, Duration::from_secs(1));
        let text = metrics.render(Gauges::default());
        let name = "pubsub_kafka_bridge_delivery_duration_seconds";
        let count = |class| sample(&text, &format!("{name}_count"), &[("status", class)]);
        assert_eq!((count("2xx"), count("4xx"), count("5xx")), (2.0, 3.0, 3.0));
        let sum = |class| sample(&text, &format!("{name}_sum"), &[("status", class)]);
        assert_eq!((sum("2xx"), sum("4xx"), sum("5xx")), (0.032, 0.008, 13.003));
        let bucket = |class, le| {
            sample(
                &text,
                &format!("{name}_bucket"),
                &[("status", class), ("le", le)],
            )
        };
        assert_eq!(bucket("2xx", "0.0025"), 1.0);
        assert_eq!(bucket("2xx", "0.025"), 1.0);
        assert_eq!(bucket("2xx", "0.05"), 2.0);
        assert_eq!(bucket("4xx", "0.0001"), 1.0);
        assert_eq!(bucket("4xx", "0.001"), 2.0);
        assert_eq!(bucket("4xx", "0.01"), 3.0);
        assert_eq!(bucket("5xx", "0.005"), 1.0);
        assert_eq!(
            bucket("5xx", "1"),
            2.0,
            "an unexpected status counts as the bridge's failure"
        );
        assert_eq!(bucket("5xx", "10"), 2.0);
        assert_eq!(bucket("5xx", "30"), 3.0);
        assert_eq!(bucket("5xx", "+Inf"), 3.0);
    }

    #[test]
    fn the_exposition_parses_back_to_cumulative_buckets_a_sum_and_a_count() {
        let metrics = Metrics::default();
        metrics.observe_delivery(204, Duration::from_micros(700));
        let stats = (
            Histogram::<Latency>::default(),
            Histogram::<BatchRecords>::default(),
        );
        for (micros, records) in [(150, 1), (900, 3), (900, 4), (40_000_000, 20_000)] {
            stats.0.observe(micros);
            stats.1.observe(records);
        }
        let text = metrics.render(Gauges {
            produce: ProduceHistograms {
                duration: stats.0.snapshot(),
                batch_records: stats.1.snapshot(),
            },
            kafka_connected: true,
            token_cache_hits: 41,
            token_cache_misses: 2,
            ..Gauges::default()
        });
        for (name, bounds, per_unit) in [
            (
                "pubsub_kafka_bridge_delivery_duration_seconds",
                Latency::BOUNDS,
                1e6,
            ),
            (
                "pubsub_kafka_bridge_produce_duration_seconds",
                Latency::BOUNDS,
                1e6,
            ),
            (
                "pubsub_kafka_bridge_produce_batch_records",
                BatchRecords::BOUNDS,
                1.0,
            ),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{name}"
            );
            // Every family's samples: its buckets in ascending `le`, then +Inf, sum, count.
            let series: Vec<_> = samples(&text)
                .into_iter()
                .filter(|(n, l, _)| {
                    n.starts_with(name) && !l.iter().any(|(k, v)| k == "status" && v != "2xx")
                })
                .collect();
            assert_eq!(series.len(), bounds.len() + 3, "{name}");
            let mut previous = 0.0;
            for ((sample_name, labels, value), bound) in series.iter().zip(bounds) {
                assert_eq!(sample_name, &format!("{name}_bucket"));
                let le = &labels.last().expect("le").1;
                assert_eq!(le.parse::<f64>().unwrap(), *bound as f64 / per_unit);
                assert!(*value >= previous, "{name} le {le}: cumulative");
                previous = *value;
            }
            let tail: Vec<_> = series[bounds.len()..]
                .iter()
                .map(|(n, l, v)| {
                    (
                        n.as_str(),
                        l.last().map(|(k, v)| (k.as_str(), v.as_str())),
                        *v,
                    )
                })
                .collect();
            let count = tail[2].2;
            assert_eq!(tail[0].0, format!("{name}_bucket"));
            assert_eq!(tail[0].1, Some(("le", "+Inf")));
            assert_eq!(tail[0].2, count, "+Inf is the count");
            assert_eq!(tail[1].0, format!("{name}_sum"));
            assert_eq!(tail[2].0, format!("{name}_count"));
        }
        let produce = "pubsub_kafka_bridge_produce_duration_seconds";
        assert_eq!(
            sample(&text, &format!("{produce}_bucket"), &[("le", "0.00025")]),
            1.0
        );
        assert_eq!(
            sample(&text, &format!("{produce}_bucket"), &[("le", "0.001")]),
            3.0
        );
        assert_eq!(
            sample(&text, &format!("{produce}_bucket"), &[("le", "30")]),
            3.0
        );
        assert_eq!(
            sample(&text, &format!("{produce}_bucket"), &[("le", "+Inf")]),
            4.0
        );
        assert_eq!(sample(&text, &format!("{produce}_sum"), &[]), 40.00195);
        assert_eq!(sample(&text, &format!("{produce}_count"), &[]), 4.0);
        let records = "pubsub_kafka_bridge_produce_batch_records";
        assert_eq!(
            sample(&text, &format!("{records}_bucket"), &[("le", "1")]),
            1.0
        );
        assert_eq!(
            sample(&text, &format!("{records}_bucket"), &[("le", "2")]),
            1.0
        );
        assert_eq!(
            sample(&text, &format!("{records}_bucket"), &[("le", "4")]),
            3.0
        );
        assert_eq!(
            sample(&text, &format!("{records}_bucket"), &[("le", "16384")]),
            3.0
        );
        assert_eq!(
            sample(&text, &format!("{records}_bucket"), &[("le", "+Inf")]),
            4.0
        );
        assert_eq!(sample(&text, &format!("{records}_sum"), &[]), 20_008.0);
        let delivery = "pubsub_kafka_bridge_delivery_duration_seconds";
        assert_eq!(
            sample(
                &text,
                &format!("{delivery}_bucket"),
                &[("status", "2xx"), ("le", "0.0005")]
            ),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{delivery}_bucket"),
                &[("status", "2xx"), ("le", "0.001")]
            ),
            1.0
        );
        assert_eq!(
            sample(&text, &format!("{delivery}_sum"), &[("status", "2xx")]),
            0.0007
        );
        assert_eq!(
            sample(&text, "pubsub_kafka_bridge_kafka_connected", &[]),
            1.0
        );
        assert_eq!(
            sample(&text, "pubsub_kafka_bridge_token_cache_hits_total", &[]),
            41.0
        );
        assert_eq!(
            sample(&text, "pubsub_kafka_bridge_token_cache_misses_total", &[]),
            2.0
        );
        let disconnected = metrics.render(Gauges::default());
        assert_eq!(
            sample(&disconnected, "pubsub_kafka_bridge_kafka_connected", &[]),
            0.0
        );
        for name in [
            "pubsub_kafka_bridge_kafka_connected",
            "pubsub_kafka_bridge_token_cache_hits_total",
            "pubsub_kafka_bridge_token_cache_misses_total",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name} is typed once"
            );
        }
    }
}
