//! `cargo xtask`: the runner's commands over the study's stages, plus `predict` and `fetch`.

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(|parsed: xtask::StudyCli, globals| parsed.command.execute(&globals))
}
