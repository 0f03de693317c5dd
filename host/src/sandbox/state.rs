//! What a store holds for one call: the resource limiter and the guest's log.

use super::limits::{SandboxLimits, StoreLimiter};
use super::wit::LogLevel;

/// The data of a per-call `Store`.
pub(crate) struct StoreState {
    pub(crate) limiter: StoreLimiter,
    pub(crate) log: GuestLog,
}

impl StoreState {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        StoreState {
            limiter: StoreLimiter::new(limits),
            log: GuestLog::new(limits),
        }
    }
}

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub(crate) level: LogLevel,
    pub(crate) message: String,
}

/// A guest's log lines during one call, bounded in count and length.
#[derive(Debug)]
pub(crate) struct GuestLog {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: usize,
    max_lines: usize,
    max_line_bytes: usize,
}

impl GuestLog {
    fn new(limits: &SandboxLimits) -> Self {
        GuestLog {
            lines: Vec::new(),
            dropped: 0,
            max_lines: limits.log_lines,
            max_line_bytes: limits.log_line_bytes,
        }
    }

    pub(crate) fn push(&mut self, level: LogLevel, mut message: String) {
        if self.lines.len() >= self.max_lines {
            self.dropped += 1;
            return;
        }
        if message.len() > self.max_line_bytes {
            let mut end = self.max_line_bytes;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        self.lines.push(LogLine { level, message });
    }

    /// The last error the guest logged (a panic hook's message).
    pub(crate) fn last_error(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find(|l| l.level == LogLevel::Error)
            .map(|l| l.message.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_lines_and_their_length() {
        let mut log = GuestLog::new(&SandboxLimits {
            log_lines: 2,
            log_line_bytes: 4,
            ..SandboxLimits::default()
        });
        log.push(LogLevel::Error, "ééé".into());
        log.push(LogLevel::Info, "ok".into());
        log.push(LogLevel::Error, "dropped".into());
        assert_eq!(log.lines[0].message, "éé…");
        assert_eq!(log.dropped, 1);
        assert_eq!(log.last_error(), Some("éé…"));
    }
}
