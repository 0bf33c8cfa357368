fn main() {
    code_hash::emit();
    // JPEG decoding through libjpeg, as Pillow does (see src/jpeg.c). The library is built
    // from source by `mozjpeg-sys` (libjpeg-turbo's code, statically linked; SIMD where nasm is
    // installed, portable C otherwise), so a machine needs only a C compiler: its headers come
    // through the `links = "jpeg"` metadata.
    let mut build = cc::Build::new();
    if let Some(inc) = std::env::var_os("DEP_JPEG_INCLUDE") {
        for dir in std::env::split_paths(&inc) {
            build.include(dir);
        }
    }
    build
        .file("src/jpeg.c")
        .opt_level(2)
        .warnings(true)
        .compile("tlfx_jpeg");
    println!("cargo:rerun-if-changed=src/jpeg.c");
}
