//! VGG16 forward throughput, for comparison with `torch_bench.py vgg`.
//!
//! Usage: `cargo run --release -p vgg-extract --example throughput -- REPS BATCH...`
//! (e.g. `-- 5 1 8 32`). Random weights and inputs from a fixed seed (speed does not depend on
//! the values); one warm-up run per batch size, then `REPS` timed runs; prints the median.
//! Threads: rayon's default (all cores), or `RAYON_NUM_THREADS`.

use std::time::Instant;

use vgg_extract::{ConvStack, ConvWeights, LayerSpec, VGG16};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| panic!("not a number: {a}")))
        .collect();
    let (reps, batches) = match args.split_first() {
        Some((r, b)) if !b.is_empty() && *r > 0 => (*r, b.to_vec()),
        _ => {
            eprintln!("usage: throughput REPS BATCH...");
            std::process::exit(2);
        }
    };
    let mut seed = 0x5eed_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut c = 3;
    let weights: Vec<ConvWeights> = VGG16
        .iter()
        .filter_map(|s| match *s {
            LayerSpec::Conv(k) => {
                let scale = (2.0 / (9.0 * c as f32)).sqrt();
                let w = ConvWeights {
                    weight: (0..k * c * 9).map(|_| rand() * scale).collect(),
                    bias: (0..k).map(|_| rand() * 0.1).collect(),
                };
                c = k;
                Some(w)
            }
            LayerSpec::MaxPool => None,
        })
        .collect();
    let net = ConvStack::from_weights(3, VGG16, &weights).expect("valid network");
    drop(weights);
    println!("ours threads {}", rayon::current_num_threads());
    for b in batches {
        let x: Vec<f32> = (0..b * 224 * 224 * 3).map(|_| rand() * 100.0).collect();
        let mut out = vec![0.0f32; b * 7 * 7 * 512];
        let mut times = Vec::with_capacity(reps);
        for r in 0..=reps {
            let t = Instant::now();
            net.forward_into(&x, b, 224, 224, &mut out)
                .expect("forward");
            let dt = t.elapsed().as_secs_f64();
            if r == 0 {
                println!("warmup b={b} t={dt:.3}s");
                continue;
            }
            println!(
                "ours vgg16 b={b} run={r} t={dt:.3}s img/s={:.3}",
                b as f64 / dt
            );
            times.push(dt);
        }
        times.sort_by(f64::total_cmp);
        let md = if reps % 2 == 1 {
            times[reps / 2]
        } else {
            (times[reps / 2 - 1] + times[reps / 2]) / 2.0
        };
        println!(
            "RESULT ours vgg16 b={b} median_t={md:.3}s img/s={:.3}",
            b as f64 / md
        );
    }
}
