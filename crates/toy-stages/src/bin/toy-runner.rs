//! The runner's CLI over the toy stages, for tests. `TOY_CODE_SALT_<STAGE>` (stage id in upper
//! case, `-` as `_`) changes a stage's code identity as a source edit would.

fn main() {
    let salts = std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("TOY_CODE_SALT_")
                .map(|s| (s.to_lowercase().replace('_', "-"), v))
        })
        .collect();
    pipeline::cli::main(toy_stages::registry(&salts), |_, _, _| Ok(()))
}
