//! The machine's single-precision FMA peak, and how near the GEMM micro-kernel comes to it:
//! the ceiling under every convolution this project runs, so a speed goal can be checked
//! against the arithmetic it needs before anyone tunes code for it.
//!
//!     cargo run -p vgg-extract --example fma_peak [-- THREADS]
//!
//! 1. Pure FMA: 12 independent accumulators of the widest vectors the CPU has (8 lanes with
//!    AVX2, 16 with AVX-512), no memory traffic; 2 flops per lane per FMA.
//! 2. The micro-kernel (`Isa::detect`'s) on one `mr x k` block of A and one `k x nr` panel of B
//!    that stay in L1, as in the 36 GEMMs of a Winograd convolution.
//!
//! Each line is the median of 5 runs, per thread and for THREADS threads at once (default 2).

use std::time::Instant;
use vgg_extract::kernels::{microkernel, AlignedBuf, Isa};

/// Flops per thread of one pure-FMA run.
const FMA_ITERS: usize = 50_000_000;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 12];
    let x = _mm256_set1_ps(1.000_000_1);
    let y = _mm256_set1_ps(0.999_999);
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(x, y, *a);
        }
    }
    let mut s = 0.0;
    for a in acc {
        let mut o = [0.0f32; 8];
        // SAFETY: `o` holds 8 floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), a) };
        s += o.iter().sum::<f32>();
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 12];
    let x = _mm512_set1_ps(1.000_000_1);
    let y = _mm512_set1_ps(0.999_999);
    for _ in 0..n {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(x, y, *a);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

/// One pure-FMA run on this thread: flops done and a value that keeps the loop alive.
fn fma_run(isa: Isa) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` came from `Isa::detect`, which checked these features.
        match isa {
            Isa::Avx512 => {
                let s = unsafe { fma_avx512(FMA_ITERS) };
                return ((FMA_ITERS * 12 * 16 * 2) as f64, s);
            }
            Isa::Avx2 => {
                let s = unsafe { fma_avx2(FMA_ITERS) };
                return ((FMA_ITERS * 12 * 8 * 2) as f64, s);
            }
            Isa::Portable => {}
        }
    }
    let _ = isa;
    (0.0, 0.0)
}

/// One micro-kernel run on this thread (operands resident in L1): flops done.
fn kernel_run(isa: Isa, k: usize) -> f64 {
    let (mr, nr) = (isa.mr(), isa.nr());
    let a = AlignedBuf::zeroed(mr * k);
    let b = AlignedBuf::zeroed(k * nr);
    let mut c = AlignedBuf::zeroed(mr * nr);
    let calls = 400_000_000 / (k * mr * nr);
    for _ in 0..calls {
        // SAFETY: `a` holds `mr` rows of `k`, `b` one `k x nr` panel, `c` `mr x nr`; `isa`
        // came from `Isa::detect`.
        unsafe { microkernel(isa, k, a.as_ptr(), k, b.as_ptr(), c.as_mut_ptr(), nr, false) };
    }
    std::hint::black_box(&c);
    2.0 * (calls * k * mr * nr) as f64
}

/// GFLOP/s of `f` per thread with `threads` threads at once: the median of 5 runs, each the
/// slowest thread's rate.
fn rate(threads: usize, f: impl Fn() -> f64 + Sync) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let t = Instant::now();
                            let flops = f();
                            flops / t.elapsed().as_secs_f64() / 1e9
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("benchmark thread"))
                    .fold(f64::INFINITY, f64::min)
            })
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let threads: usize = match std::env::args().nth(1) {
        None => 2,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("usage: fma_peak [THREADS]  (not a number: {a})");
            std::process::exit(2)
        }),
    };
    let isa = Isa::detect();
    if isa == Isa::Portable {
        eprintln!("fma_peak: this CPU has neither AVX2+FMA nor AVX-512F");
        std::process::exit(1);
    }
    println!("isa {isa:?}, micro-kernel {} x {}", isa.mr(), isa.nr());
    for t in [1, threads] {
        let peak = rate(t, || {
            let (flops, s) = fma_run(isa);
            std::hint::black_box(s);
            flops
        });
        println!(
            "threads {t}: pure FMA {peak:.1} GFLOP/s per thread, {:.1} in all",
            peak * t as f64
        );
        for k in [256, 512] {
            let r = rate(t, || kernel_run(isa, k));
            println!(
                "threads {t}: micro-kernel k={k} (L1) {r:.1} GFLOP/s per thread = {:.0}% of the pure-FMA peak",
                100.0 * r / peak
            );
        }
    }
}
