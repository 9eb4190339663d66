//! What a process has cost so far: user and system CPU seconds and peak RSS, read from /proc.

use std::process::Command;

/// CPU seconds and peak RSS of a process, from /proc.
pub(crate) struct Usage {
    pub(crate) user: f64,
    pub(crate) system: f64,
    pub(crate) peak_kib: u64,
}

impl Usage {
    pub(crate) fn cpu(&self) -> f64 {
        self.user + self.system
    }
}

/// User and system CPU seconds and peak RSS (KiB) of a process, from /proc.
pub(crate) fn process_usage(pid: u32) -> Usage {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let seconds = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
            / ticks
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Usage {
        user: seconds(11),
        system: seconds(12),
        peak_kib,
    }
}
