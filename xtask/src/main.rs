//! `cargo xtask`: the runner's CLI over the study's stages.

fn main() {
    pipeline::cli::main(xtask::registry(), |_, _, _| Ok(()))
}
