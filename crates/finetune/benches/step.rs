//! Criterion bench of one fine-tuning step (conv5_3 + pool5 + head, forward, backward, SGD) on
//! 8 maps of 14x14x512.

use criterion::{criterion_group, criterion_main, Criterion};
use finetune::conv::Shape;
use finetune::model::{Head, Layer, Pooling, Sgd, TopNet};

fn step(c: &mut Criterion) {
    let shape = Shape {
        h: 14,
        w: 14,
        c: 512,
        o: 512,
    };
    let n = 8;
    let kernel: Vec<f32> = (0..shape.kernel_len())
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.03)
        .collect();
    let layer = Layer {
        name: "conv5_3".into(),
        shape,
        kernel,
        bias: vec![0.01; 512],
    };
    let head = Head {
        pooling: Pooling::Avg,
        d: 512,
        k: 10,
        weight: (0..5120).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect(),
        bias: vec![0.0; 10],
    };
    let mut net = TopNet::new(vec![layer], head);
    let mut opt = Sgd::new(0.9, 5e-4);
    let x: Vec<f32> = (0..n * shape.input_len())
        .map(|i| (i * 31 % 101) as f32 / 50.0)
        .collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    c.bench_function("finetune step conv5_3 + head, 8 maps", |b| {
        b.iter(|| {
            let g = net.gradients(&x, &y, None, 0, false);
            opt.step(net.params_mut(), g.slices(), &[1e-5, 1e-5, 1e-4, 1e-4]);
            net.parameters_changed();
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = step
}
criterion_main!(benches);
