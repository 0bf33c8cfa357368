//! Which GEMM for EfficientNet-Lite0's 1x1 convolutions: the project's packed micro-kernel
//! (`vgg_extract::kernels`, what `lite0-extract` uses) or the `gemm` crate (what `logreg` and
//! `scratch-cnn` use), on every 1x1 layer's shape of one 224x224 image, one thread.
//!
//! Usage: `cargo run -p lite0-extract --example pointwise_kernels -- REPS`.

use std::time::Instant;

use lite0_weights::{blocks, layout};
use vgg_extract::kernels::{gemm, pack_b, Isa};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    // (m, k, n) of every 1x1 convolution, the stem's patches GEMM included.
    let mut shapes = vec![(112 * 112, 27, layout::STEM_CHANNELS)];
    let mut side: usize = 112;
    for b in blocks() {
        if b.expand != 1 {
            shapes.push((side * side, b.c_in, b.c_mid()));
        }
        side = side.div_ceil(b.stride);
        shapes.push((side * side, b.c_mid(), b.c_out));
    }
    shapes.push((side * side, 320, layout::HEAD_CHANNELS));
    let isa = Isa::detect();
    let (mut ours_total, mut crate_total, mut macs) = (0.0, 0.0, 0.0);
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.05 - 0.15).collect();
        let packed = pack_b(k, n, isa.nr(), |r, c| b[r * n + c]);
        let mut c1 = vec![0.0f32; m * n];
        let mut c2 = vec![0.0f32; m * n];
        let mut t_ours = Vec::new();
        let mut t_crate = Vec::new();
        for _ in 0..=reps {
            let t = Instant::now();
            // SAFETY: `a` is m x k, `packed` k x n for `isa.nr()`, `c1` m x n.
            unsafe {
                gemm(
                    isa,
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    k,
                    packed.as_ptr(),
                    c1.as_mut_ptr(),
                    n,
                )
            };
            t_ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            // SAFETY: row-major `a` (m x k), `b` (k x n), `c2` (m x n), no aliasing.
            unsafe {
                ::gemm::gemm(
                    m,
                    n,
                    k,
                    c2.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    ::gemm::Parallelism::None,
                )
            };
            t_crate.push(t.elapsed().as_secs_f64());
        }
        let max_diff = c1
            .iter()
            .zip(&c2)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-2,
            "({m}, {k}, {n}): the two differ by {max_diff}"
        );
        let (o, c) = (median(t_ours[1..].to_vec()), median(t_crate[1..].to_vec()));
        ours_total += o;
        crate_total += c;
        macs += (m * k * n) as f64;
        println!(
            "m {m:6} k {k:5} n {n:5}: ours {:7.3} ms  gemm crate {:7.3} ms",
            o * 1e3,
            c * 1e3
        );
    }
    println!(
        "RESULT all 1x1 layers of one image: ours {:.2} ms ({:.1} GMAC/s), gemm crate {:.2} ms ({:.1} GMAC/s)",
        ours_total * 1e3,
        macs / ours_total / 1e9,
        crate_total * 1e3,
        macs / crate_total / 1e9
    );
}
