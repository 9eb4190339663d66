//! The `replay` command's own arguments, and the position it starts from and prints.

use std::collections::BTreeMap;

/// What `pubsub-kafka-bridge replay` is asked to do, besides the settings every command reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Replay")]
pub struct ReplayArgs {
    /// Run every dead letter through the pipeline, but write nothing: no record and no replay
    /// marker; the counts say what a run would do
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Start here instead of at the first record: a position as a run prints it
    /// (PARTITION:OFFSET,...); a partition it does not name starts at its first record
    #[arg(long, value_name = "POSITION", value_parser = parse_position)]
    pub(crate) from: Option<Position>,
}

/// Where a read of the dead-letter topic stands: the next offset to read, by partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(pub(crate) BTreeMap<i32, i64>);

impl std::fmt::Display for Position {
    /// `PARTITION:OFFSET` pairs joined by commas, in partition order: what `--from` reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, (partition, offset)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{partition}:{offset}")?;
        }
        Ok(())
    }
}

/// Reads a position as [`Position`]'s `Display` writes it: each partition once, none negative.
pub(crate) fn parse_position(text: &str) -> Result<Position, String> {
    let mut position = BTreeMap::new();
    for pair in text.split(',') {
        let (partition, offset) = parse_pair(pair.trim())
            .ok_or_else(|| format!("{pair:?} is not PARTITION:OFFSET (two whole numbers)"))?;
        if position.insert(partition, offset).is_some() {
            return Err(format!("partition {partition} is named twice"));
        }
    }
    Ok(Position(position))
}

/// `PARTITION:OFFSET`, both whole numbers of at least 0.
pub(crate) fn parse_pair(pair: &str) -> Option<(i32, i64)> {
    let (partition, offset) = pair.split_once(':')?;
    let whole = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !whole(partition) || !whole(offset) {
        return None;
    }
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_position_reads_back_as_itself() {
        let position = Position(BTreeMap::from([(0, 12), (1, 0), (10, 9_000_000_000)]));
        let text = position.to_string();
        assert_eq!(text, "0:12,1:0,10:9000000000");
        assert_eq!(parse_position(&text), Ok(position));
        assert_eq!(
            parse_position(" 2:5 , 0:1"),
            Ok(Position(BTreeMap::from([(0, 1), (2, 5)])))
        );
        assert_eq!(Position::default().to_string(), "");
    }

    #[test]
    fn a_position_that_is_not_one_is_refused_saying_why() {
        for bad in [
            "", "0", "0:", ":1", "a:1", "0:b", "-1:0", "0:-1", "0:1:2", "0:+1", "0:1,",
        ] {
            assert!(parse_position(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_position("0:1,x").unwrap_err(),
            "\"x\" is not PARTITION:OFFSET (two whole numbers)"
        );
        assert_eq!(
            parse_position("0:1,0:2").unwrap_err(),
            "partition 0 is named twice"
        );
        assert!(parse_position("2147483648:0").is_err(), "beyond i32");
        assert_eq!(parse_pair("2147483647:0"), Some((i32::MAX, 0)));
    }
}
