//! The runner's command line, shared by `cargo xtask` and the toy runner of the tests: one
//! clap command tree ([`CoreCommand`], flattened into each binary's own), global options that
//! act the same wherever they stand ([`Globals`]), terminal progress ([`Terminal`]) and the
//! tables. The core (`pipeline`) returns values and typed errors; printing, progress bars and
//! exit codes live here.

mod commands;
mod globals;
mod run_args;
mod scale;
mod slurm;
mod table;
mod terminal;
mod timeline;

pub use commands::{execute, print_summary, ArtifactsCommand, CoreCommand, Hooks, NoHooks};
pub use globals::{GlobalArgs, Globals};
pub use run_args::RunArgs;
pub use slurm::ExecutorSettings;
pub use table::{human_bytes, seconds};
pub use terminal::Terminal;

use std::process::ExitCode;

/// Parses the command line into `P`, reads the global options wherever they stand, runs
/// `body`, and turns every error into one `error: ...` line (with its causes) and a non-zero
/// exit code. Help and version requests print and exit 0.
pub fn main<P: clap::Parser>(body: impl FnOnce(P, Globals) -> anyhow::Result<()>) -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = match P::try_parse_from(&args) {
        Ok(p) => p,
        Err(e) => return clap_error(e),
    };
    let globals = Globals::from_args(&args);
    match body(parsed, globals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A clap error as one line (help and version go to stdout as clap prints them).
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            eprintln!("{}", one_line(&e.render().to_string()));
            ExitCode::from(2)
        }
    }
}

/// The first line of a clap message, with its tip folded in: `error: unexpected argument
/// '--x' found (see --help)`.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("error: invalid arguments")
        .to_string();
    let first = if first.starts_with("error:") {
        first
    } else {
        format!("error: {first}")
    };
    let tip = lines
        .find(|l| l.starts_with("tip:"))
        .map(|t| format!("; {}", t.trim_start_matches("tip:").trim()))
        .unwrap_or_default();
    format!("{first}{tip} (see --help)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_errors_fold_into_one_line() {
        let r = "error: unexpected argument '--lr' found\n\n  tip: to pass '--lr' as a value, use '-- --lr'\n\nUsage: x run\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(r),
            "error: unexpected argument '--lr' found; to pass '--lr' as a value, use '-- --lr' (see --help)"
        );
    }
}
