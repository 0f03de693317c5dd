//! The one way `cretok run` and `cretok train` print lines while a progress bar may be drawn:
//! above the bar when it is drawn (stderr is a terminal), else as plain lines on stderr (logs,
//! CI, pipes, `--quiet`). Every line goes through here exactly once.

use indicatif::ProgressBar;

/// A progress bar and the lines printed around it.
#[derive(Clone)]
pub struct Console {
    bar: ProgressBar,
}

impl Console {
    /// `quiet` hides the bar; lines still go to stderr.
    pub fn new(quiet: bool, len: u64) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(len)
        };
        Console { bar }
    }

    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Prints one line (or several, separated by newlines).
    pub fn line(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}
