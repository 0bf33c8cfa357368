//! Progress on the terminal (indicatif), as a [`pipeline::Reporter`].

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipeline::{BarSink, Progress, Reporter};

/// Bars on stderr; messages above them; nothing but warnings with `quiet`.
#[derive(Debug, Clone)]
pub struct Terminal {
    multi: MultiProgress,
    quiet: bool,
}

impl Terminal {
    pub fn new(quiet: bool) -> Terminal {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Terminal { multi, quiet }
    }

    /// A [`Progress`] handle for the core and the stages.
    pub fn progress(quiet: bool) -> Progress {
        Progress::new(Terminal::new(quiet))
    }

    fn line(&self, text: &str) {
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

struct Bar(ProgressBar);

impl BarSink for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    fn set_position(&self, pos: u64) {
        self.0.set_position(pos)
    }
    fn set_message(&self, msg: String) {
        self.0.set_message(msg)
    }
    fn finish(&self) {
        self.0.finish_and_clear()
    }
}

impl Reporter for Terminal {
    fn bar(&self, len: u64, prefix: &str) -> Box<dyn BarSink> {
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
        Box::new(Bar(pb))
    }

    fn spinner(&self, prefix: &str) -> Box<dyn BarSink> {
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{prefix:>14.bold} {spinner} {elapsed} {msg}")
                .expect("valid template"),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        Box::new(Bar(pb))
    }

    fn message(&self, msg: &str) {
        if !self.quiet {
            self.line(msg);
        }
    }

    fn warn(&self, msg: &str) {
        self.line(&format!("warning: {msg}"));
    }

    fn quiet(&self) -> bool {
        self.quiet
    }
}
