//! EfficientNet-Lite0 forward throughput (224 x 224 -> the head's 7x7x1280 maps), for
//! comparison with `benches/ort_bench.py` (PyTorch and ONNX Runtime on the same network).
//!
//! Usage: `cargo run -p lite0-extract --example lite0_throughput -- WEIGHTS REPS BATCH...`
//! (e.g. `-- data/weights/efficientnet_lite0.safetensors 5 16 32`). The real weights, inputs
//! from a fixed seed; one warm-up run per batch size, then `REPS` timed runs; prints the
//! median. Threads: rayon's default (all cores), or `RAYON_NUM_THREADS`.

use std::time::Instant;

use lite0_extract::Lite0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: lite0_throughput WEIGHTS REPS BATCH...");
        std::process::exit(2)
    };
    let Some((weights, rest)) = args.split_first() else {
        usage()
    };
    let nums: Vec<usize> = rest
        .iter()
        .map(|a| a.parse().unwrap_or_else(|_| usage()))
        .collect();
    let Some((&reps, batches)) = nums.split_first() else {
        usage()
    };
    if reps == 0 || batches.is_empty() {
        usage()
    }
    let net = Lite0::from_safetensors(weights.as_ref()).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut seed = 0x5eed_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    };
    println!("ours threads {}", rayon::current_num_threads());
    for &b in batches {
        let x: Vec<f32> = (0..b * 224 * 224 * 3).map(|_| rand()).collect();
        let mut times = Vec::with_capacity(reps);
        for r in 0..=reps {
            let t = Instant::now();
            let out = net.forward(&x, b, 224, 224);
            std::hint::black_box(out);
            let dt = t.elapsed().as_secs_f64();
            if r > 0 {
                times.push(dt);
            }
        }
        times.sort_by(f64::total_cmp);
        let md = times[times.len() / 2];
        println!(
            "RESULT ours b={b} img/s={:.1} median {md:.4}s",
            b as f64 / md
        );
    }
}
