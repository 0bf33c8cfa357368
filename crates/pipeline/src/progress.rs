//! Progress bars and messages, silenced by `-q`.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared by every stage of a run.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: MultiProgress,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress { multi, quiet }
    }

    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// A bar with counts, rate and ETA.
    pub fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new(len));
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>14.bold} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(500));
        pb
    }

    /// A spinner for work of unknown length.
    pub fn spinner(&self, prefix: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{prefix:>14.bold} {spinner} {elapsed} {msg}")
                .expect("valid template"),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// A line on stderr, above any bars (nothing with `-q`).
    pub fn println(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            if self.multi.is_hidden() {
                eprintln!("{}", msg.as_ref());
            } else {
                let _ = self.multi.println(msg.as_ref());
            }
        }
    }

    /// A warning: shown even with `-q`.
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.multi.is_hidden() {
            eprintln!("warning: {}", msg.as_ref());
        } else {
            let _ = self.multi.println(format!("warning: {}", msg.as_ref()));
        }
    }
}
