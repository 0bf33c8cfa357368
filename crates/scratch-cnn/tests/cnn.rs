//! Scratch-cnn against PyTorch, against finite differences, and its size and determinism.

use fixtures::{f32s, SafeTensors};
use nn_train::{Evaluation, Rng};
use scratch_cnn::{Cnn, Evaluate, Images, Params, Split, TrainData, TrainSettings, Weights};

const NAMES: [&str; 6] = ["conv1", "conv2", "conv3", "conv4", "dense1", "dense2"];

/// Training and validation images with their labels, as `train` takes them.
fn data<'a>(
    tr: &'a Images<'a>,
    y: &'a [u32],
    va: &'a Images<'a>,
    vy: &'a [u32],
    n_classes: usize,
) -> TrainData<'a, Images<'a>> {
    TrainData {
        train: Split { x: tr, y },
        val: Split { x: va, y: vy },
        n_classes,
    }
}

/// `p` with other loop settings.
fn with_training(p: Params, epochs: usize, evaluate: Evaluate) -> Params {
    Params {
        training: TrainSettings {
            epochs,
            evaluate,
            ..p.training
        },
        ..p
    }
}

fn weights(st: &SafeTensors, prefix: &str) -> Weights {
    let mut w = Weights::default();
    for n in NAMES {
        for part in ["kernel", "bias"] {
            let (shape, data) = f32s(st, &format!("{prefix}.{n}.{part}"));
            w.push(&format!("{n}.{part}"), &shape, data).unwrap();
        }
    }
    w
}

/// Largest |a - b| of each tensor, relative to the largest |b| of that tensor.
fn rel_diffs(a: &Weights, b: &Weights) -> Vec<(String, f32)> {
    a.tensors
        .iter()
        .zip(&b.tensors)
        .map(|(x, y)| {
            assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
            let scale = y.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let d = x
                .data
                .iter()
                .zip(&y.data)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            (x.name.clone(), d / scale)
        })
        .collect()
}

#[test]
fn forward_gradients_and_adam_step_match_pytorch() {
    let bytes = fixtures::read(
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/cnn_step.safetensors",
    );
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let img = st.tensor("images").unwrap();
    assert_eq!(img.dtype(), safetensors::Dtype::U8);
    let (n, h, w) = (img.shape()[0], img.shape()[1], img.shape()[2]);
    let images = Images::new(img.data(), h, w).unwrap();
    let y: Vec<u32> = st
        .tensor("y")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let init = weights(&st, "init");
    let mut cnn = Cnn::from_weights(&init, h, w, &Params::default()).unwrap();
    assert_eq!(cnn.weights().unwrap(), init);
    let mut x = vec![];
    images.caffe_batch(&(0..n).collect::<Vec<_>>(), &mut x);

    let (_, torch_logits) = f32s(&st, "logits");
    let logits = cnn.logits(&x).unwrap();
    let scale = torch_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = logits
        .iter()
        .zip(&torch_logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("logits: max |ours - torch| = {worst:e} (max |logit| {scale})");
    for (a, b) in logits.iter().zip(&torch_logits) {
        assert!(
            (a - b).abs() <= 1e-5 * scale,
            "logits {logits:?} vs {torch_logits:?}"
        );
    }

    let (_, torch_loss) = f32s(&st, "loss");
    let (loss, grads) = cnn.gradients(&x, &y).unwrap();
    assert!(
        (loss / torch_loss[0] as f64 - 1.0).abs() < 1e-5,
        "{loss} vs {torch_loss:?}"
    );
    for (name, d) in rel_diffs(&grads, &weights(&st, "grad")) {
        eprintln!("gradient of {name}: max |ours - torch| / max |torch| = {d:e}");
        assert!(d < 1e-4, "gradient of {name}: relative difference {d}");
    }

    let (loss_sum, _) = cnn.step(&x, &y).unwrap();
    assert!((loss_sum / n as f64 / torch_loss[0] as f64 - 1.0).abs() < 1e-5);
    let expected = weights(&st, "step1");
    for (t, e) in cnn.weights().unwrap().tensors.iter().zip(&expected.tensors) {
        let d = t
            .data
            .iter()
            .zip(&e.data)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        eprintln!("{} after one Adam step: max |ours - torch| = {d:e}", t.name);
        assert!(
            d < 1e-5,
            "{} after one Adam step: max |ours - torch| = {d}",
            t.name
        );
    }
}

fn small_params() -> Params {
    Params {
        filters: vec![3, 4, 4, 5],
        dense_units: 6,
        ..Params::default()
    }
}

/// Mean cross-entropy (in f64 from the f32 logits) of `weights` on f32 images.
fn loss_of(weights: &Weights, side: usize, x: &[f32], y: &[u32]) -> f64 {
    let cnn = Cnn::from_weights(weights, side, side, &Params::default()).unwrap();
    Evaluation::from_logits(&cnn.logits(x).unwrap(), cnn.n_classes(), y)
        .unwrap()
        .loss
}

#[test]
fn gradients_match_finite_differences() {
    // Directional check per tensor: (L(w + e d) - L(w - e d)) / 2e against <grad, d>, with a
    // random direction d in [-1, 1] on that tensor only. ReLU and max-pooling make the loss
    // piecewise smooth: a larger e crosses kinks (conv1, with the most pooling windows, is off by
    // 8% at e = 1e-2), a smaller one drowns in f32 rounding. At e = 3e-4 every tensor agrees
    // within 1.1%; the exact comparison is the PyTorch one above.
    let side = 46;
    let mut rng = Rng::new(4, 0);
    let n = 3;
    let x: Vec<f32> = (0..n * side * side * 3)
        .map(|_| 2.0 * rng.next_f32() - 1.0)
        .collect();
    let y = vec![0u32, 1, 2];
    let cnn = Cnn::new(side, side, 3, &small_params(), 9).unwrap();
    let mut w0 = cnn.weights().unwrap();
    // Non-zero biases, so that their gradients are exercised from a generic point.
    for t in w0.tensors.iter_mut().filter(|t| t.name.ends_with("bias")) {
        t.data
            .iter_mut()
            .for_each(|b| *b = 0.1 * (rng.next_f32() - 0.3));
    }
    let cnn = Cnn::from_weights(&w0, side, side, &Params::default()).unwrap();
    let (_, grads) = cnn.gradients(&x, &y).unwrap();
    let eps = 3e-4f32;
    for (ti, g) in grads.tensors.iter().enumerate() {
        let d: Vec<f32> = g.data.iter().map(|_| 2.0 * rng.next_f32() - 1.0).collect();
        let analytic: f64 = g
            .data
            .iter()
            .zip(&d)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let shifted = |sign: f32| {
            let mut w = w0.clone();
            for (v, dv) in w.tensors[ti].data.iter_mut().zip(&d) {
                *v += sign * eps * dv;
            }
            loss_of(&w, side, &x, &y)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(
            err < 2e-2,
            "{}: numeric {numeric} analytic {analytic}",
            g.name
        );
    }
}

#[test]
fn study_network_has_139147_parameters_and_right_shapes() {
    let p = Params::default();
    assert_eq!(scratch_cnn::parameter_count(&p, 11), 139_147);
    assert_eq!(scratch_cnn::min_image_side(4), 46);
    let cnn = Cnn::new(46, 46, 11, &p, 0).unwrap();
    assert_eq!(cnn.parameter_count(), 139_147);
    let w = cnn.weights().unwrap();
    assert_eq!(w.parameter_count(), 139_147);
    let shapes: Vec<(&str, &[usize])> = w
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("conv1.kernel", &[3, 3, 3, 32][..]),
            ("conv1.bias", &[32][..]),
            ("conv2.kernel", &[3, 3, 32, 64][..]),
            ("conv2.bias", &[64][..]),
            ("conv3.kernel", &[3, 3, 64, 64][..]),
            ("conv3.bias", &[64][..]),
            ("conv4.kernel", &[3, 3, 64, 128][..]),
            ("conv4.bias", &[128][..]),
            ("dense1.kernel", &[128, 64][..]),
            ("dense1.bias", &[64][..]),
            ("dense2.kernel", &[64, 11][..]),
            ("dense2.bias", &[11][..]),
        ]
    );
    let pixels = vec![128u8; 2 * 46 * 46 * 3];
    let images = Images::new(&pixels, 46, 46).unwrap();
    let pred = scratch_cnn::predict(&w, &images).unwrap();
    assert_eq!(pred.probabilities.len(), 2 * 11);
    assert_eq!(pred.predictions.len(), 2);
    let sum: f32 = pred.probabilities[..11].iter().sum();
    assert!((sum - 1.0).abs() < 1e-5);
    // Non-square sizes work; one pixel less than the minimum does not.
    assert!(Cnn::new(46, 60, 11, &p, 0).is_ok());
    assert!(Cnn::new(45, 60, 11, &p, 0).is_err());
}

/// Images whose class is which third of the image is bright.
fn toy(n: usize, side: usize, seed: u64) -> (Vec<u8>, Vec<u32>) {
    let mut rng = Rng::new(seed, 7);
    let (mut px, mut y) = (vec![], vec![]);
    for i in 0..n {
        let c = (i % 3) as u32;
        for r in 0..side {
            for _ in 0..side {
                let bright = r * 3 / side == c as usize;
                let base = if bright { 200 } else { 60 };
                for _ in 0..3 {
                    px.push(base + (rng.next_u64() % 40) as u8);
                }
            }
        }
        y.push(c);
    }
    (px, y)
}

fn tiny_params() -> Params {
    Params {
        filters: vec![8, 8, 8, 8],
        dense_units: 16,
        training: TrainSettings {
            batch_size: 8,
            epochs: 3,
            ..TrainSettings::default()
        },
        ..Params::default()
    }
}

#[test]
fn same_seed_same_weights_for_any_thread_count() {
    let side = 46;
    let (px, y) = toy(12, side, 1);
    let (vpx, vy) = toy(6, side, 2);
    let (tr, va) = (
        Images::new(&px, side, side).unwrap(),
        Images::new(&vpx, side, side).unwrap(),
    );
    let p = with_training(tiny_params(), 2, Evaluate::Final);
    let run = |seed, threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| scratch_cnn::train(&data(&tr, &y, &va, &vy, 3), &p, seed, &mut ()).unwrap())
    };
    let a = run(3, 2);
    let b = run(3, 2);
    assert_eq!(a.final_weights, b.final_weights);
    assert_eq!(a.best_weights, b.best_weights);
    assert_eq!(run(3, 1).final_weights, a.final_weights);
    assert_ne!(run(4, 2).final_weights, a.final_weights);
}

#[test]
fn learns_a_toy_task_from_chunked_images() {
    let side = 48;
    let (px, y) = toy(48, side, 3);
    let (vpx, vy) = toy(12, side, 4);
    // Training images in three chunks of 16, as stored by the preprocess stage.
    let len = side * side * 3;
    let chunks: Vec<&[u8]> = px.chunks(16 * len).collect();
    let tr = Images::from_chunks(chunks, side, side).unwrap();
    let va = Images::new(&vpx, side, side).unwrap();
    let p = with_training(tiny_params(), 8, Evaluate::Best);
    let mut batches = 0;
    let mut obs = scratch_cnn::Callbacks {
        on_batch: |_: &scratch_cnn::BatchInfo| batches += 1,
        on_epoch: |_: &scratch_cnn::EpochRecord| {},
    };
    let out = scratch_cnn::train(&data(&tr, &y, &va, &vy, 3), &p, 1, &mut obs).unwrap();
    assert_eq!(batches, 8 * 6);
    let first = &out.history[0];
    let best = &out.history[out.best_epoch - 1];
    assert!(best.val_loss < first.val_loss, "{:?}", out.history);
    let e = scratch_cnn::evaluate(out.single(p.training.evaluate).unwrap(), &va, &vy).unwrap();
    assert!((e.loss - best.val_loss).abs() < 1e-9);
    assert!(e.accuracy >= 0.9, "{:?}", out.history);
}

#[test]
fn params_defaults_and_strictness() {
    let p: Params = serde_json::from_str("{}").unwrap();
    assert_eq!(p, Params::default());
    assert_eq!(p.filters, vec![32, 64, 64, 128]);
    assert_eq!(
        (p.dense_units, p.training.batch_size, p.training.epochs),
        (64, 32, 10)
    );
    let a = p.adam;
    assert_eq!(
        (a.learning_rate, a.beta_1, a.beta_2, a.epsilon),
        (1e-3, 0.9, 0.999, 1e-7)
    );
    let resolve = |t: &str| pipeline::resolve_params::<Params>(&toml::from_str(t).unwrap());
    assert!(resolve("dropout = 0.2")
        .unwrap_err()
        .contains("unknown field `dropout`"));
    let p: Params = serde_json::from_value(resolve("evaluate = \"best\"").unwrap()).unwrap();
    assert_eq!(p.training.evaluate, Evaluate::Best);
}
