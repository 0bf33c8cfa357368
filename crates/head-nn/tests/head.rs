//! Head-nn against PyTorch (one and two Adam steps), on a separable toy set, and determinism.

use fixtures::{f32s, i64s, SafeTensors};
use head_nn::{
    global_average_pool, Callbacks, Evaluate, Head, Params, Split, TrainData, TrainSettings,
    Weights,
};
use nn_train::Rng;

fn fixture() -> Vec<u8> {
    fixtures::read(
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/adam_step.safetensors",
    )
}

/// Training and validation rows with their labels, as `train` takes them.
fn data<'a>(
    x: &'a [f32],
    y: &'a [u32],
    vx: &'a [f32],
    vy: &'a [u32],
    n_classes: usize,
) -> TrainData<'a, [f32]> {
    TrainData {
        train: Split { x, y },
        val: Split { x: vx, y: vy },
        n_classes,
    }
}

fn weights(st: &SafeTensors, prefix: &str) -> Weights {
    let mut w = Weights::default();
    for name in [
        "dense1.kernel",
        "dense1.bias",
        "dense2.kernel",
        "dense2.bias",
    ] {
        let (shape, data) = f32s(st, &format!("{prefix}.{name}"));
        w.push(name, &shape, data).unwrap();
    }
    w
}

fn max_abs_diff(a: &Weights, b: &Weights) -> f32 {
    let mut worst = 0f32;
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        for (p, q) in x.data.iter().zip(&y.data) {
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

#[test]
fn two_adam_steps_match_pytorch() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (xs, x) = f32s(&st, "x");
    let y: Vec<u32> = i64s(&st, "y").iter().map(|&v| v as u32).collect();
    let pooled = global_average_pool(&x, xs[0], xs[3]).unwrap();
    let init = weights(&st, "init");
    let mut head = Head::from_weights(&init, &Params::default()).unwrap();
    assert_eq!(head.weights().unwrap(), init);
    for step in 1..=2 {
        let (_, mask) = f32s(&st, &format!("mask{step}"));
        let (_, torch_loss) = f32s(&st, &format!("loss{step}"));
        let (loss_sum, _) = head.step(&pooled, &y, Some(&mask)).unwrap();
        let loss = loss_sum / y.len() as f64;
        assert!(
            (loss - torch_loss[0] as f64).abs() < 1e-5,
            "step {step}: loss {loss} vs {torch_loss:?}"
        );
        let expected = weights(&st, &format!("step{step}"));
        let diff = max_abs_diff(&head.weights().unwrap(), &expected);
        eprintln!(
            "step {step}: loss {loss} (torch {}), max |ours - torch| = {diff:e}",
            torch_loss[0]
        );
        assert!(diff < 1e-5, "step {step}: max |ours - torch| = {diff}");
        // The step must have moved the weights by far more than the tolerance.
        assert!(max_abs_diff(&expected, &init) > 5e-4);
    }
}

/// Two Gaussian clusters per class around distinct, well separated centres.
fn toy(n_per_class: usize, classes: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed, 99);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..dim).map(|_| 4.0 * rng.next_f32()).collect())
        .collect();
    let (mut x, mut y) = (vec![], vec![]);
    for i in 0..n_per_class * classes {
        let c = i % classes;
        x.extend(centres[c].iter().map(|&m| m + 0.2 * (rng.next_f32() - 0.5)));
        y.push(c as u32);
    }
    (x, y)
}

#[test]
fn separable_toy_set_is_learned() {
    let (x, y) = toy(40, 4, 64, 1);
    let (vx, vy) = toy(10, 4, 64, 1);
    let params = Params {
        training: TrainSettings {
            epochs: 15,
            ..TrainSettings::default()
        },
        ..Params::default()
    };
    let mut epochs = 0;
    let mut obs = Callbacks {
        on_batch: |_: &head_nn::BatchInfo| {},
        on_epoch: |_: &head_nn::EpochRecord| epochs += 1,
    };
    let out = head_nn::train(&data(&x, &y, &vx, &vy, 4), &params, 5, &mut obs).unwrap();
    assert_eq!(epochs, 15);
    let last = out.history.last().unwrap();
    assert_eq!(last.val_accuracy, 1.0, "{:?}", out.history);
    assert!(last.loss < out.history[0].loss);
    let e = head_nn::evaluate(&out.final_weights, &x, &y).unwrap();
    assert_eq!(e.accuracy, 1.0);
    assert_eq!(e.prediction.predictions, y);
    assert_eq!(e.prediction.probabilities.len(), y.len() * 4);
    let p = head_nn::predict(out.single(Evaluate::Best).unwrap(), &vx).unwrap();
    assert_eq!(p.n_classes, 4);
    let best = &out.history[out.best_epoch - 1];
    assert!(out.history.iter().all(|r| r.val_loss >= best.val_loss));
}

#[test]
fn same_seed_same_weights() {
    let (x, y) = toy(30, 3, 32, 2);
    let (vx, vy) = toy(5, 3, 32, 3);
    let params = Params {
        training: TrainSettings {
            epochs: 3,
            batch_size: 8,
            ..TrainSettings::default()
        },
        ..Params::default()
    };
    let run = |seed| head_nn::train(&data(&x, &y, &vx, &vy, 3), &params, seed, &mut ()).unwrap();
    let (a, b, c) = (run(11), run(11), run(12));
    assert_eq!(a.final_weights, b.final_weights);
    assert_eq!(a.best_weights, b.best_weights);
    assert_eq!(
        a.history.iter().map(|r| r.loss).collect::<Vec<_>>(),
        b.history.iter().map(|r| r.loss).collect::<Vec<_>>()
    );
    assert_ne!(a.final_weights, c.final_weights);
}

#[test]
fn params_defaults_and_strictness() {
    let p: Params = serde_json::from_str("{}").unwrap();
    assert_eq!(p, Params::default());
    assert_eq!(
        (
            p.dropout,
            p.hidden_units,
            p.training.batch_size,
            p.training.epochs
        ),
        (0.2, 100, 32, 10)
    );
    let a = p.adam;
    assert_eq!(
        (a.learning_rate, a.beta_1, a.beta_2, a.epsilon),
        (1e-3, 0.9, 0.999, 1e-7)
    );
    assert_eq!(p.training.evaluate, Evaluate::Final);
    // Through the stage's params check (what `pipeline.toml` goes through): flattened
    // settings are accepted, unknown ones refused by name.
    let resolve = |t: &str| pipeline::resolve_params::<Params>(&toml::from_str(t).unwrap());
    let v = resolve("evaluate = \"best\"\nepochs = 3\nlearning_rate = 0.01").unwrap();
    let p: Params = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        (p.training.evaluate, p.training.epochs, p.adam.learning_rate),
        (Evaluate::Best, 3, 0.01)
    );
    assert_eq!(v["learning_rate"], 0.01, "params stay one flat table: {v}");
    let e = resolve("epoch = 3").unwrap_err();
    assert!(e.contains("unknown field `epoch`"), "{e}");
    assert!(resolve("lr = 0.01")
        .unwrap_err()
        .contains("`learning_rate`"));
    assert!(resolve("evaluate = \"last\"").is_err());
    let bad = Params {
        dropout: 1.0,
        ..Params::default()
    };
    assert!(bad.validate().is_err());
    // The two weight sets averaged are finetune's: refused here before any training.
    let mut both = Params::default();
    both.training.evaluate = Evaluate::Both;
    let e = both.validate().unwrap_err().to_string();
    assert!(e.contains("finetune"), "{e}");
}

#[test]
fn global_average_pool_means_each_channel() {
    // 2 rows of 2x1 maps with 3 channels.
    let x = [1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0];
    assert_eq!(
        global_average_pool(&x, 2, 3).unwrap(),
        vec![2.0, 3.0, 4.0, 1.0, 1.0, 1.0]
    );
    assert!(global_average_pool(&x, 5, 3).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let (x, y) = toy(4, 2, 8, 1);
    let p = Params::default();
    assert!(head_nn::train(&data(&x, &y, &x, &y, 1), &p, 0, &mut ()).is_err());
    assert!(head_nn::train(&data(&x[1..], &y, &x, &y, 2), &p, 0, &mut ()).is_err());
    let y3: Vec<u32> = y.iter().map(|&c| c + 5).collect();
    assert!(head_nn::train(&data(&x, &y3, &x, &y, 2), &p, 0, &mut ()).is_err());
    // Un-pooled rows (here: 2 positions x 8 channels) against weights for 8 features.
    let w = head_nn::Head::new(8, 2, &p, 0).unwrap().weights().unwrap();
    let unpooled: Vec<f32> = x.iter().flat_map(|&v| [v, v]).collect();
    assert!(head_nn::evaluate(&w, &unpooled, &y).is_err());
    assert!(head_nn::evaluate(&w, &x, &y).is_ok());
}

#[test]
fn a_diverging_learning_rate_is_an_error_with_its_place() {
    let (x, y) = toy(20, 3, 16, 4);
    let params = Params {
        adam: head_nn::AdamConfig {
            learning_rate: 1e30,
            ..Default::default()
        },
        ..Params::default()
    };
    let err = head_nn::train(&data(&x, &y, &x, &y, 3), &params, 1, &mut ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("training diverged at epoch 1") && err.contains("learning rate (1e30)"),
        "{err}"
    );
}

#[test]
fn label_smoothing_mixes_in_the_cross_entropy_against_uniform() {
    let (x, y) = toy(6, 3, 5, 9);
    let e = 0.1;
    let p = Params {
        dropout: 0.0,
        label_smoothing: e,
        ..Params::default()
    };
    let mut head = Head::new(5, 3, &p, 4).unwrap();
    let logits = head.logits(&x).unwrap();
    let mut want = 0.0f64;
    for (row, &label) in logits.chunks(3).zip(&y) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = row.iter().map(|&v| v as f64 - lse).collect();
        let ce = -logp[label as usize];
        let uniform = -logp.iter().sum::<f64>() / 3.0;
        want += (1.0 - e) * ce + e * uniform;
    }
    let (got, _) = head.step(&x, &y, None).unwrap();
    assert!((got - want).abs() < 1e-4 * want.abs(), "{got} vs {want}");
    // Without smoothing the loss is the plain cross-entropy: a different number.
    let plain = Params {
        label_smoothing: 0.0,
        ..p.clone()
    };
    let (ce, _) = Head::new(5, 3, &plain, 4)
        .unwrap()
        .step(&x, &y, None)
        .unwrap();
    assert!((ce - want).abs() > 1e-3, "{ce} vs {want}");
}

#[test]
fn weight_decay_shrinks_the_kernels_after_each_step() {
    let (x, y) = toy(8, 2, 4, 3);
    let plain = Params {
        dropout: 0.0,
        ..Params::default()
    };
    let decayed = Params {
        weight_decay: 0.5,
        ..plain.clone()
    };
    let mut a = Head::new(4, 2, &plain, 7).unwrap();
    let mut b = Head::new(4, 2, &decayed, 7).unwrap();
    a.step(&x, &y, None).unwrap();
    b.step(&x, &y, None).unwrap();
    let (wa, wb) = (a.weights().unwrap(), b.weights().unwrap());
    let keep = 1.0 - 0.001 * 0.5;
    for (ta, tb) in wa.tensors.iter().zip(&wb.tensors) {
        let factor = if ta.name.ends_with("kernel") {
            keep
        } else {
            1.0
        };
        for (p, q) in ta.data.iter().zip(&tb.data) {
            assert!(
                ((*p as f64) * factor - *q as f64).abs() < 1e-6,
                "{}: {p} * {factor} vs {q}",
                ta.name
            );
        }
    }
    assert!(max_abs_diff(&wa, &wb) > 0.0);
    let bad = Params {
        weight_decay: -1.0,
        ..plain
    };
    assert!(bad.validate().is_err());
}
