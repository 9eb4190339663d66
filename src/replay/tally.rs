//! What a replay counts and prints: per code, how many dead letters were replayed and how many
//! still fail; what was skipped; when a progress line is due (pure: the clock is passed in).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a long run prints a progress line.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The dead letters of one error code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeCount {
    /// Written to their topic (or, in a dry run, that would be).
    pub(crate) replayed: u64,
    /// Failing still: left where they are.
    pub(crate) still_failing: u64,
}

/// The counts of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Records read, of any kind.
    pub(crate) read: u64,
    /// By the code the dead letter carries (`pubsub.error`).
    pub(crate) by_code: BTreeMap<String, CodeCount>,
    /// Dead letters a run (this one or an earlier one) replayed already: skipped.
    pub(crate) already_replayed: u64,
    /// Records that are not dead letters of the bridge: skipped.
    pub(crate) foreign: u64,
    /// Replay markers: skipped.
    pub(crate) markers: u64,
}

impl Tally {
    /// A dead letter of `code` written (or that would be).
    pub(crate) fn replayed(&mut self, code: &str) {
        self.by_code.entry(code.to_owned()).or_default().replayed += 1;
    }

    /// A dead letter of `code` that fails still.
    pub(crate) fn still_failing(&mut self, code: &str) {
        self.by_code
            .entry(code.to_owned())
            .or_default()
            .still_failing += 1;
    }

    /// Dead letters written (or that would be), of every code.
    pub(crate) fn replayed_total(&self) -> u64 {
        self.by_code.values().map(|c| c.replayed).sum()
    }

    /// Dead letters that fail still, of every code.
    pub(crate) fn still_failing_total(&self) -> u64 {
        self.by_code.values().map(|c| c.still_failing).sum()
    }

    /// The contract's last line: `replayed N, still failing M`.
    pub(crate) fn final_line(&self) -> String {
        format!(
            "replayed {}, still failing {}",
            self.replayed_total(),
            self.still_failing_total()
        )
    }

    /// What was read and skipped.
    pub(crate) fn read_line(&self) -> String {
        format!(
            "records read: {} (skipped: already replayed {}, not dead letters of the bridge {}, replay markers {})",
            self.read, self.already_replayed, self.foreign, self.markers
        )
    }

    /// One line per code, in code order.
    pub(crate) fn code_lines(&self) -> Vec<String> {
        self.by_code
            .iter()
            .map(|(code, count)| {
                format!(
                    "{code}: replayed {}, still failing {}",
                    count.replayed, count.still_failing
                )
            })
            .collect()
    }

    /// A long run's progress: records read of those to read, and the counts so far.
    pub(crate) fn progress_line(&self, to_read: u64, position: &str) -> String {
        format!(
            "replay: read {} of {to_read} records (at {position}); replayed {}, still failing {}",
            self.read,
            self.replayed_total(),
            self.still_failing_total()
        )
    }
}

/// When the next progress line is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    next: Instant,
}

impl Progress {
    /// The first line is due [`PROGRESS_EVERY`] after `start`: a short run prints none.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            next: start + PROGRESS_EVERY,
        }
    }

    /// Whether a line is due at `now`; if so, the next one is due [`PROGRESS_EVERY`] later.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + PROGRESS_EVERY;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_code_and_summed_for_the_final_line() {
        let mut tally = Tally::default();
        assert_eq!(tally.final_line(), "replayed 0, still failing 0");
        tally.replayed("record_too_large");
        tally.replayed("record_too_large");
        tally.still_failing("record_too_large");
        tally.still_failing("invalid_base64");
        tally.replayed("route_failed");
        assert_eq!(tally.replayed_total(), 3);
        assert_eq!(tally.still_failing_total(), 2);
        assert_eq!(tally.final_line(), "replayed 3, still failing 2");
        assert_eq!(
            tally.code_lines(),
            [
                "invalid_base64: replayed 0, still failing 1",
                "record_too_large: replayed 2, still failing 1",
                "route_failed: replayed 1, still failing 0",
            ]
        );
        tally.read = 9;
        tally.already_replayed = 2;
        tally.foreign = 1;
        tally.markers = 3;
        assert_eq!(
            tally.read_line(),
            "records read: 9 (skipped: already replayed 2, not dead letters of the bridge 1, replay markers 3)"
        );
        assert_eq!(
            tally.progress_line(20, "0:4,1:5"),
            "replay: read 9 of 20 records (at 0:4,1:5); replayed 3, still failing 2"
        );
    }

    #[test]
    fn a_progress_line_is_due_every_interval_and_not_before() {
        let start = Instant::now();
        let mut progress = Progress::new(start);
        assert!(!progress.due(start));
        assert!(!progress.due(start + PROGRESS_EVERY - Duration::from_millis(1)));
        assert!(progress.due(start + PROGRESS_EVERY));
        assert!(!progress.due(start + PROGRESS_EVERY + Duration::from_secs(1)));
        let late = start + PROGRESS_EVERY * 3;
        assert!(progress.due(late));
        assert!(!progress.due(late + PROGRESS_EVERY - Duration::from_millis(1)));
        assert!(progress.due(late + PROGRESS_EVERY));
    }
}
