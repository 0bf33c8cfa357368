//! Global options (`--config`, `--set`, `-q`), accepted before or after any subcommand and
//! acting the same wherever they stand.
//!
//! clap's `global = true` arguments show in every command's help and are accepted everywhere,
//! but a repeated global given at two levels keeps only one level's values (`--set a=1 run
//! --set b=2` loses `a=1`). So clap only validates them; their values are read here, from the
//! command line itself, in order.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

/// The options every command takes. Flatten into the top-level parser.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The pipeline file.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "pipeline.toml"
    )]
    pub config: PathBuf,
    /// Override a setting as an edit of the file would (repeatable; before or after the
    /// command), e.g. `--set dataset.root=../data --set stage.head-nn.params.learning_rate=0.01`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// No progress bars or progress messages (warnings and errors still show).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The global options as given, wherever they stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Globals {
    pub config: PathBuf,
    pub set: Vec<String>,
    pub quiet: bool,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            config: PathBuf::from("pipeline.toml"),
            set: Vec::new(),
            quiet: false,
        }
    }
}

impl Globals {
    /// Reads the global options from a command line (program name first) that clap has
    /// already accepted: every `--set` in order, the last `--config`, any `-q`. Nothing after
    /// a `--` is an option.
    pub fn from_args<I, T>(args: I) -> Globals
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.into().to_string_lossy().into_owned())
            .collect();
        let mut g = Globals::default();
        let mut i = 1;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" {
                break;
            }
            let mut value = |name: &str| -> Option<String> {
                if a == name {
                    i += 1;
                    args.get(i).cloned()
                } else {
                    a.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('='))
                        .map(str::to_string)
                }
            };
            if let Some(v) = value("--set") {
                g.set.push(v);
            } else if let Some(v) = value("--config") {
                g.config = PathBuf::from(v);
            } else if a == "-q" || a == "--quiet" {
                g.quiet = true;
            }
            i += 1;
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_count_wherever_they_stand() {
        let g = Globals::from_args([
            "xtask",
            "--config",
            "p.toml",
            "--set",
            "cache=cacheA",
            "run",
            "loader",
            "--set=seed=2",
            "-q",
            "--",
            "--set",
            "ignored=1",
        ]);
        assert_eq!(g.config, PathBuf::from("p.toml"));
        assert_eq!(g.set, ["cache=cacheA", "seed=2"]);
        assert!(g.quiet);
        let g = Globals::from_args(["xtask", "status", "--config=q.toml"]);
        assert_eq!(g.config, PathBuf::from("q.toml"));
        assert!(g.set.is_empty() && !g.quiet);
    }
}
