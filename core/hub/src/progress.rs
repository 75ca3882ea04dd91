//! Progress display: indicatif bars on stderr (drawn only on a terminal),
//! plus a log line per file so that non-interactive runs show progress too.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether to draw progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars on stderr when it is a terminal.
    #[default]
    Bars,
    /// Nothing (tests, `--quiet`).
    Hidden,
}

impl ProgressMode {
    fn target(self) -> ProgressDrawTarget {
        match self {
            ProgressMode::Bars => ProgressDrawTarget::stderr(),
            ProgressMode::Hidden => ProgressDrawTarget::hidden(),
        }
    }

    /// A byte-count bar for one file; `total` in bytes when known.
    pub fn bytes_bar(self, label: &str, total: Option<u64>) -> ProgressBar {
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), self.target()).with_style(
                ProgressStyle::with_template(
                    "{msg:30!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::with_draw_target(None, self.target()).with_style(
                ProgressStyle::with_template("{spinner} {msg:30!} {bytes:>10} {bytes_per_sec:>12}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(label.to_string());
        bar
    }

    /// A bar counting items (requests, prompts).
    pub fn count_bar(self, label: &str, total: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), self.target()).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar
    }

    /// A spinner for a step of unknown length.
    pub fn spinner(self, label: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }
}
