//! The runner's CLI over the toy stages, for tests: the same command tree and code as
//! `cargo xtask` has for these commands. `TOY_CODE_SALT_<STAGE>` (stage id in upper case, `-`
//! as `_`) changes a stage's code identity as a source edit would.

use std::process::ExitCode;

use clap::Parser;

/// `toy-runner`.
#[derive(Debug, Parser)]
#[command(name = "toy-runner", about = "The runner over toy stages (for tests)")]
struct ToyCli {
    #[command(flatten)]
    globals: cli::GlobalArgs,
    #[command(subcommand)]
    command: cli::CoreCommand,
}

fn main() -> ExitCode {
    cli::main(|parsed: ToyCli, globals| {
        let salts = std::env::vars()
            .filter_map(|(k, v)| {
                k.strip_prefix("TOY_CODE_SALT_")
                    .map(|s| (s.to_lowercase().replace('_', "-"), v))
            })
            .collect();
        cli::execute(
            parsed.command,
            &globals,
            &toy_stages::registry(&salts),
            &cli::NoHooks,
        )
    })
}
