fn main() {
    code_hash::emit();
    // JPEG decoding through the system libjpeg(-turbo) (Debian: libjpeg-dev), as Pillow does.
    cc::Build::new()
        .file("src/jpeg.c")
        .opt_level(2)
        .warnings(true)
        .compile("tlfx_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
    println!("cargo:rerun-if-changed=src/jpeg.c");
}
