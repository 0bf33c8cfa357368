//! EfficientNet-Lite0 forward pass (224 x 224 input to the head's 7 x 7 x 1280 maps) at batch
//! 1, 16 and 32, the way `lite0-extract` runs it (images in parallel, one per thread).
//!
//! Run: `cargo xtask bench lite0-extract` (or `cargo bench -p lite0-extract --bench forward`;
//! `RAYON_NUM_THREADS=2` to match the project's 2-core reference machine). Weights and inputs
//! are random from a fixed seed, built outside the timed code (speed does not depend on the
//! values). Throughput is reported in images/s. `benches/ort_bench.py` times the same network
//! on PyTorch and ONNX Runtime.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lite0_extract::Lite0;
use lite0_weights::{expected_tensors, Weights};

/// xorshift64, uniform in `[-0.5, 0.5)`.
fn uniform(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn network(seed: &mut u64) -> Lite0 {
    let tensors = expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let fan_in = if shape.len() > 1 { n / shape[0] } else { 1 };
            let scale = (2.0 / fan_in as f32).sqrt();
            let values = (0..n).map(|_| uniform(seed) * scale).collect();
            (name, shape, values)
        })
        .collect();
    Lite0::new(&Weights::from_tensors(tensors).expect("every tensor, finite"))
}

fn forward(c: &mut Criterion) {
    let mut seed = 0x5eed_u64;
    let net = network(&mut seed);
    let mut g = c.benchmark_group("lite0_forward");
    g.measurement_time(Duration::from_secs(10));
    g.sample_size(10);
    for batch in [1usize, 16, 32] {
        let x: Vec<f32> = (0..batch * 224 * 224 * 3)
            .map(|_| uniform(&mut seed) * 4.0)
            .collect();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("batch", batch), &x, |b, x| {
            b.iter(|| black_box(net.forward(x, batch, 224, 224)))
        });
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
