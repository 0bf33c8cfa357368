//! Full VGG16 conv-stack forward pass (224 x 224 input to 7 x 7 x 512 pool5) at batch 1, 8
//! and 32.
//!
//! Run: `cargo bench -p vgg-extract --bench forward` (add `-- batch/32` to pick one size).
//! Threads: rayon's default (all cores), or `RAYON_NUM_THREADS=2` to match the project's
//! 2-core reference machine. Weights and inputs are random from a fixed seed, built outside
//! the timed code (speed does not depend on the values). Throughput is reported in images/s.
//! One batch-32 pass takes seconds, so samples are few and each size takes about a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vgg_extract::{ConvStack, ConvWeights, LayerSpec, VGG16};

/// xorshift64, uniform in `[-0.5, 0.5)`.
fn uniform(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

fn network(seed: &mut u64) -> ConvStack {
    let mut c = 3;
    let mut weights = Vec::new();
    for s in VGG16 {
        if let LayerSpec::Conv(k) = *s {
            let scale = (2.0 / (9.0 * c as f32)).sqrt();
            weights.push(ConvWeights {
                weight: (0..k * c * 9).map(|_| uniform(seed) * scale).collect(),
                bias: (0..k).map(|_| uniform(seed) * 0.1).collect(),
            });
            c = k;
        }
    }
    ConvStack::from_weights(3, VGG16, &weights).expect("valid network")
}

fn forward(c: &mut Criterion) {
    let mut seed = 0x5eed_u64;
    let net = network(&mut seed);
    let mut group = c.benchmark_group("vgg16_forward_224x224");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    for batch in [1usize, 8, 32] {
        let x: Vec<f32> = (0..batch * 224 * 224 * 3)
            .map(|_| uniform(&mut seed) * 200.0)
            .collect();
        let mut out = vec![0.0f32; batch * 7 * 7 * 512];
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &x, |b, x| {
            b.iter(|| {
                net.forward_into(black_box(x), batch, 224, 224, &mut out)
                    .expect("forward")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
