fn main() {
    pipeline::cli::main(pipeline::Registry::new(), |_, _, _| Ok(()))
}
