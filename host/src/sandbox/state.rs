//! What a store holds for one call: the resource limiter and the guest's log.

use super::limits::{SandboxLimits, StoreLimiter};
use super::wit::LogLevel;

/// The data of a per-call `Store`.
pub(crate) struct StoreState {
    pub(crate) limiter: StoreLimiter,
    pub(crate) log: GuestLog,
    /// The host-call copy budget the store runs under, for messages.
    pub(crate) copy_budget: usize,
}

impl StoreState {
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        StoreState {
            limiter: StoreLimiter::new(limits),
            log: GuestLog::new(limits),
            copy_budget: limits.copy_bytes,
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
    pub(crate) fn new(limits: &SandboxLimits) -> Self {
        GuestLog {
            lines: Vec::new(),
            dropped: 0,
            max_lines: limits.log_lines,
            max_line_bytes: limits.log_line_bytes,
        }
    }

    /// Whether another line would be kept; if not, the caller need not
    /// read it, only [`GuestLog::drop_line`] it.
    pub(crate) fn has_room(&self) -> bool {
        self.lines.len() < self.max_lines
    }

    pub(crate) fn drop_line(&mut self) {
        self.dropped += 1;
    }

    /// Keeps `message`, cut to the line cap, or counts it as dropped.
    #[cfg(test)]
    pub(crate) fn push(&mut self, level: LogLevel, message: &str) {
        let kept = self.cut(message);
        self.keep(level, kept);
    }

    /// A copy of at most `max_line_bytes` of `message`, cut at a character
    /// boundary and marked with `…`.
    pub(crate) fn cut(&self, message: &str) -> String {
        let mut end = message.len().min(self.max_line_bytes);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut kept = message[..end].to_owned();
        if end < message.len() {
            kept.push('…');
        }
        kept
    }

    /// Keeps a line already [`cut`](GuestLog::cut), if there is room.
    pub(crate) fn keep(&mut self, level: LogLevel, message: String) {
        if self.has_room() {
            self.lines.push(LogLine { level, message });
        } else {
            self.drop_line();
        }
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
        log.push(LogLevel::Error, "ééé");
        log.push(LogLevel::Info, "ok");
        log.push(LogLevel::Error, "dropped");
        assert_eq!(log.lines[0].message, "éé…");
        assert_eq!(log.dropped, 1);
        assert_eq!(log.last_error(), Some("éé…"));
    }
}
