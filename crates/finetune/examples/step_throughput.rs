//! One `finetune` training step (forward, backward, SGD) of VGG16's top convolutions + pool5 +
//! a global-average head on 14x14x512 maps, images/s; `benches/torch_step.py` measures
//! PyTorch's. Random weights and inputs (the speed does not depend on them).
//!
//!     cargo run -p finetune --example step_throughput -- REPS BATCH LAYERS
//! LAYERS: 1 (conv5_3 from stored conv5_2 maps) or 3 (conv5_1..conv5_3 from pool4).

use finetune::conv::Shape;
use finetune::model::{Head, Layer, Pooling, Sgd, TopNet};
use std::time::Instant;

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("REPS BATCH LAYERS"))
        .collect();
    let (reps, batch, n_layers) = (
        *args.first().unwrap_or(&5),
        *args.get(1).unwrap_or(&32),
        *args.get(2).unwrap_or(&1),
    );
    let shape = Shape {
        h: 14,
        w: 14,
        c: 512,
        o: 512,
    };
    let layers: Vec<Layer> = (0..n_layers)
        .map(|i| Layer {
            name: format!("conv5_{}", 4 - n_layers + i),
            shape,
            kernel: values(shape.kernel_len(), i as u64 + 1, 0.03),
            bias: vec![0.01; 512],
        })
        .collect();
    let head = Head {
        pooling: Pooling::Avg,
        d: 512,
        k: 10,
        weight: values(5120, 9, 0.1),
        bias: vec![0.0; 10],
    };
    let mut net = TopNet::new(layers, head);
    let mut opt = Sgd::new(0.9, 5e-4);
    let x: Vec<f32> = values(batch * shape.input_len(), 11, 2.0)
        .iter()
        .map(|v| v.abs())
        .collect();
    let y: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let mask = vec![1.0f32; batch * 512];
    let mut times = Vec::new();
    for r in 0..=reps {
        let t = Instant::now();
        let g = net.gradients(&x, &y, Some((&mask, 0.2)), 0, false);
        let mut lrs = vec![1e-3f32; 2 * n_layers];
        lrs.extend([1e-2, 1e-2]);
        opt.step(net.params_mut(), g.slices(), &lrs);
        net.parameters_changed();
        let dt = t.elapsed().as_secs_f64();
        if r > 0 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let md = times[times.len() / 2];
    println!(
        "RESULT ours step layers={n_layers} b={batch} threads={} median_t={md:.3}s img/s={:.2} runs={:?}",
        rayon::current_num_threads(),
        batch as f64 / md,
        times.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>()
    );
    // The same bits on every instruction set and thread count: a digest of the weights after
    // the steps, to compare between runs.
    let bytes: Vec<u8> = net
        .layers
        .iter()
        .flat_map(|l| l.kernel.iter().chain(&l.bias))
        .chain(&net.head.weight)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    println!(
        "weights after {} steps: {}",
        reps + 1,
        blake3::hash(&bytes).to_hex()
    );
}
