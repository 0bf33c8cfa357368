//! How the core and the stages report progress, without printing anything themselves: a
//! [`Reporter`] (the CLI's terminal UI, a test's collector, or nothing) receives bars,
//! messages and warnings.

use std::sync::Arc;

/// Where progress goes. Implemented by the command line (bars on the terminal); the core
/// never prints.
pub trait Reporter: Send + Sync {
    /// A bar of `len` steps.
    fn bar(&self, len: u64, prefix: &str) -> Box<dyn BarSink>;
    /// A spinner for work of unknown length.
    fn spinner(&self, prefix: &str) -> Box<dyn BarSink>;
    /// A progress message (silenced by `-q`).
    fn message(&self, msg: &str);
    /// A warning (shown even with `-q`).
    fn warn(&self, msg: &str);
    /// Whether progress output is silenced.
    fn quiet(&self) -> bool;
}

/// One bar or spinner.
pub trait BarSink: Send + Sync {
    fn inc(&self, n: u64);
    fn set_position(&self, pos: u64);
    fn set_message(&self, msg: String);
    fn finish(&self);
}

/// A [`Reporter`] that drops everything (library use, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl BarSink for Silent {
    fn inc(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn set_message(&self, _: String) {}
    fn finish(&self) {}
}

impl Reporter for Silent {
    fn bar(&self, _: u64, _: &str) -> Box<dyn BarSink> {
        Box::new(Silent)
    }
    fn spinner(&self, _: &str) -> Box<dyn BarSink> {
        Box::new(Silent)
    }
    fn message(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn quiet(&self) -> bool {
        true
    }
}

/// The reporter handle shared by every stage of a run.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<dyn Reporter>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("quiet", &self.quiet())
            .finish()
    }
}

impl Progress {
    pub fn new(reporter: impl Reporter + 'static) -> Progress {
        Progress {
            inner: Arc::new(reporter),
        }
    }

    /// Reports nothing.
    pub fn silent() -> Progress {
        Progress::new(Silent)
    }

    pub fn quiet(&self) -> bool {
        self.inner.quiet()
    }

    /// A bar with counts, rate and ETA.
    pub fn bar(&self, len: u64, prefix: &str) -> Bar {
        Bar(self.inner.bar(len, prefix))
    }

    /// A spinner for work of unknown length.
    pub fn spinner(&self, prefix: &str) -> Bar {
        Bar(self.inner.spinner(prefix))
    }

    /// A progress line (nothing with `-q`).
    pub fn println(&self, msg: impl AsRef<str>) {
        self.inner.message(msg.as_ref());
    }

    /// A warning: shown even with `-q`.
    pub fn warn(&self, msg: impl AsRef<str>) {
        self.inner.warn(msg.as_ref());
    }
}

/// A progress bar or spinner; usable from many threads at once.
pub struct Bar(Box<dyn BarSink>);

impl Bar {
    pub fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    pub fn set_position(&self, pos: u64) {
        self.0.set_position(pos)
    }
    pub fn set_message(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into())
    }
    /// Removes the bar.
    pub fn finish_and_clear(&self) {
        self.0.finish()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish()
    }
}
