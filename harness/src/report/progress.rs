//! Progress on long runs: a bar on a terminal, plain lines everywhere else.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows how many runs are done; verdict lines are printed above the bar.
pub struct Progress {
    bar: Option<ProgressBar>,
}

/// Runs up to this many get no bar.
const FEW: usize = 3;

impl Progress {
    /// A bar for `total` runs when there are more than a few, stdout is a terminal and the
    /// `CI` environment variable is not set; otherwise plain output.
    pub fn new(total: usize) -> Self {
        let wanted =
            total > FEW && std::io::stdout().is_terminal() && std::env::var_os("CI").is_none();
        let bar = wanted.then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {pos}/{len} runs [{elapsed_precise}] {msg}",
                )
                .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    /// Prints `text` (one or more lines) above the bar and counts one run done.
    pub fn finished(&self, text: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(text.trim_end());
                bar.inc(1);
            }
            None => print!("{text}"),
        }
    }

    /// Removes the bar.
    pub fn done(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_runs_or_no_terminal_print_plain_lines() {
        assert!(Progress::new(2).bar.is_none());
        // Test output is captured, so stdout is not a terminal.
        assert!(Progress::new(100).bar.is_none());
    }
}
