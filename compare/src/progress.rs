//! A one-line progress bar on standard error, redrawn in place with `\r`, shown only when
//! standard error is a terminal. Messages printed while it runs go above it.

use std::io::{IsTerminal, Write};

/// Width of the bar in characters.
const BAR: usize = 30;

/// The progress of a comparison: steps done out of a total.
pub struct Progress {
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    /// A bar for `total` steps, drawn only when stderr is a terminal.
    pub fn new(total: usize) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            shown: std::io::stderr().is_terminal(),
        }
    }

    /// The text of the bar line.
    pub fn line(&self, what: &str) -> String {
        let filled = BAR * self.done.min(self.total) / self.total;
        format!(
            "[{}{}] {:>3}% {}",
            "#".repeat(filled),
            " ".repeat(BAR - filled),
            100 * self.done.min(self.total) / self.total,
            what
        )
    }

    /// Shows that `what` is under way.
    pub fn show(&mut self, what: &str) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            // \x1b[K clears what a longer previous line left.
            let _ = write!(e, "\r{}\x1b[K", self.line(what));
            let _ = e.flush();
        }
    }

    /// One more step done.
    pub fn step(&mut self, n: usize) {
        self.done += n;
    }

    /// Prints a message on its own line, above the bar.
    pub fn message(&mut self, text: &str) {
        let mut e = std::io::stderr().lock();
        if self.shown {
            let _ = write!(e, "\r\x1b[K");
        }
        let _ = writeln!(e, "{text}");
    }

    /// Removes the bar.
    pub fn clear(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_steps() {
        let mut p = Progress {
            total: 4,
            done: 0,
            shown: false,
        };
        assert!(p
            .line("x")
            .starts_with(&format!("[{}]   0% x", " ".repeat(BAR))));
        p.step(2);
        assert!(p.line("y").contains(" 50% y"));
        p.step(9);
        assert!(p
            .line("z")
            .starts_with(&format!("[{}] 100%", "#".repeat(BAR))));
    }
}
