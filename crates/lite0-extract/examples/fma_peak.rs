//! The core's multiply-add ceiling, against which the forward pass's speed is read (README,
//! "Backbones"): twelve independent chains of fused multiply-adds on registers only (no
//! memory traffic), 16 lanes on AVX-512, 8 on AVX2. Prints G multiply-adds per second for each
//! of five repeats on one thread, then on every core at once (one chain set per thread).
//!
//! Usage: `cargo run -p lite0-extract --example fma_peak`

use std::time::Instant;

/// Iterations of the twelve chains per repeat.
const ITERS: u64 = 40_000_000;

#[cfg(target_arch = "x86_64")]
fn chains(iters: u64) -> Option<(f64, usize, f32)> {
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F detected above.
        Some(unsafe { avx512::chains(iters) })
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX2 and FMA detected above.
        Some(unsafe { avx2::chains(iters) })
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn chains(_iters: u64) -> Option<(f64, usize, f32)> {
    None
}

macro_rules! chain_kernel {
    ($name:ident, $feat:literal, $lanes:expr, $ty:ty, $set1:ident, $fma:ident, $store:ident) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use std::arch::x86_64::*;
            use std::time::Instant;

            /// Seconds for `iters` rounds of twelve dependent-chain multiply-adds, the lane
            /// count, and a checksum that keeps the work alive.
            #[target_feature(enable = $feat)]
            pub unsafe fn chains(iters: u64) -> (f64, usize, f32) {
                let b = $set1(0.999_999);
                let c = $set1(1e-7);
                let mut a: [$ty; 12] = std::array::from_fn(|i| $set1(i as f32));
                let t = Instant::now();
                for _ in 0..iters {
                    for x in a.iter_mut() {
                        *x = $fma(*x, b, c);
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                let mut sum = 0.0f32;
                let mut buf = [0.0f32; $lanes];
                for x in a {
                    // SAFETY: `buf` holds one register's lanes.
                    unsafe { $store(buf.as_mut_ptr(), x) };
                    sum += buf.iter().sum::<f32>();
                }
                (secs, $lanes, sum)
            }
        }
    };
}

chain_kernel!(
    avx512,
    "avx512f",
    16,
    __m512,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);
chain_kernel!(
    avx2,
    "avx2,fma",
    8,
    __m256,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);

fn gmacs(secs: f64, lanes: usize) -> f64 {
    (ITERS * 12 * lanes as u64) as f64 / secs / 1e9
}

fn main() {
    let Some((_, lanes, _)) = chains(1000) else {
        eprintln!("fma_peak: needs an x86-64 CPU with AVX-512F or AVX2 + FMA");
        std::process::exit(1)
    };
    println!("{lanes} lanes per register");
    for r in 1..=5 {
        let (secs, lanes, sum) = chains(ITERS).expect("detected above");
        println!(
            "one thread, repeat {r}: {:.1} G multiply-adds/s (checksum {sum:.3})",
            gmacs(secs, lanes)
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for r in 1..=5 {
        let t = Instant::now();
        let per: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| chains(ITERS).expect("detected above")))
                .collect();
            hs.into_iter()
                .map(|h| {
                    let (secs, lanes, _) = h.join().expect("thread");
                    gmacs(secs, lanes)
                })
                .collect()
        });
        let per_text: Vec<String> = per.iter().map(|g| format!("{g:.1}")).collect();
        println!(
            "{threads} threads, repeat {r}: {} G multiply-adds/s per thread ({:.2} s)",
            per_text.join(" / "),
            t.elapsed().as_secs_f64()
        );
    }
}
