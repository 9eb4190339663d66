//! Deduplication's setting, declared once for the flag, the variable, the default and the help,
//! and turned into the bound of the cache of acknowledged message ids.

use crate::setting::{ConfigError, Setting, number};

/// How many acknowledged message ids are remembered.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Deduplication")]
pub(crate) struct DedupSettings {
    /// Message ids remembered per subscription whose records Kafka acknowledged; a redelivery of one answers 204 without writing (0: off)
    #[arg(
        long,
        env = "DEDUP_CACHE_ENTRIES",
        value_name = "N",
        global = true,
        default_value = "65536",
        value_parser = number(0, 1 << 24),
    )]
    dedup_cache_entries: Setting<u64>,
}

impl DedupSettings {
    /// Acknowledged message ids remembered per subscription; 0 turns deduplication off.
    pub(crate) fn settings(&self) -> Result<usize, ConfigError> {
        Ok(self.dedup_cache_entries.value()? as usize)
    }
}
