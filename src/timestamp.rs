//! Kafka record timestamps: the one range every record's timestamp lies in, whatever its source.

use std::time::{SystemTime, UNIX_EPOCH};

/// A record timestamp (CreateTime, milliseconds since the Unix epoch) within
/// `RecordTimestamp::MIN``..=`[`RecordTimestamp::MAX`]. No other value can be built, so what
/// reaches the producer is a time that Kafka and its consumers read as it was written.
///
/// Not below 0: Kafka reads -1 as "no timestamp" (`RecordBatch.NO_TIMESTAMP`), the Java
/// client's `ProducerRecord` refuses any negative timestamp, and Kafka Streams' default
/// extractor (`FailOnInvalidTimestamp`) stops the application on one.
///
/// Not above 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write (four-digit
/// years). Everything a record's time is compared with or written as holds it:
/// `google.protobuf.Timestamp` (the protobuf value format's `publish_time`, valid up to
/// 9999-12-31T23:59:59.999999999Z), Python's `datetime` (`MAXYEAR` 9999), Java's `Instant`
/// and chrono (hundreds of thousands of years). The broker's own bound is relative to its
/// clock and per topic (`message.timestamp.after.max.ms`, KIP-937: unbounded by default
/// before Kafka 4.0, one hour since, KIP-1030); a record it refuses that way is answered
/// `INVALID_TIMESTAMP`, a permanent `record_rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordTimestamp(i64);

impl RecordTimestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub(crate) const MIN: Self = Self(0);
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: Self = Self(253_402_300_799_999);

    /// The timestamp `millis` after the epoch, if it lies within the range.
    pub fn from_millis(millis: i64) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&millis)
            .then_some(Self(millis))
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The same instant as a chrono time (what the Kafka client takes).
    pub(crate) fn to_utc(self) -> chrono::DateTime<chrono::Utc> {
        // The range lies well within chrono's (±262,143 years): never the default.
        chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// The system clock, for records the bridge writes of its own (dead letters). A clock
    /// outside the range is a broken host, not input: it is clamped rather than refused, so a
    /// dead letter is never lost to it.
    pub(crate) fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        Self(millis.clamp(Self::MIN.0, Self::MAX.0))
    }
}

impl std::fmt::Display for RecordTimestamp {
    /// RFC 3339 in UTC with milliseconds (`2024-01-01T00:00:00.000Z`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            &self
                .to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_the_epoch_to_the_last_rfc_3339_millisecond() {
        assert_eq!(RecordTimestamp::MIN.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(RecordTimestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z")
                .unwrap()
                .timestamp_millis(),
            RecordTimestamp::MAX.millis()
        );
        for inside in [0, 1, 1_700_000_000_000, 253_402_300_799_999] {
            let timestamp = RecordTimestamp::from_millis(inside).unwrap();
            assert_eq!(timestamp.millis(), inside);
            assert_eq!(timestamp.to_utc().timestamp_millis(), inside);
        }
        for outside in [-1, i64::MIN, 253_402_300_800_000, i64::MAX] {
            assert_eq!(RecordTimestamp::from_millis(outside), None, "{outside}");
        }
    }

    #[test]
    fn the_clock_reads_within_the_range() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let now = RecordTimestamp::now().millis();
        assert!(
            (before..before + 60_000).contains(&now),
            "{now} vs {before}"
        );
    }
}
