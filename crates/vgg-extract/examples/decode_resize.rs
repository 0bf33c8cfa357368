//! Decodes photos with the `image` crate and resizes them with `preprocess::resize_nearest_pillow`,
//! writing the raw `u8` RGB pixels (HWC) to `OUT_DIR/<index>.rgb` — what the integration test
//! feeds the network. Used by `tests/fixtures/make_fixtures.py` so that PyTorch's reference
//! can be computed on exactly these pixels too (the `image` crate's JPEG decoder is not
//! bit-exact with the libjpeg-turbo that Pillow uses).
//!
//! Usage: `cargo run --release -p vgg-extract --example decode_resize -- SIZE OUT_DIR IMAGE...`

use std::path::PathBuf;

use preprocess::resize_nearest_pillow;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: decode_resize SIZE OUT_DIR IMAGE...");
        std::process::exit(2);
    }
    let size: usize = args[0].parse().expect("SIZE must be a number");
    let out = PathBuf::from(&args[1]);
    for (i, path) in args[2..].iter().enumerate() {
        let img = image::open(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let rgb = resize_nearest_pillow(img.as_raw(), w, h, size, size);
        std::fs::write(out.join(format!("{i}.rgb")), rgb).expect("write pixels");
    }
}
