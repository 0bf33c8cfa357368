//! Times head training on random pooled features: 3,000 training and 1,000 validation rows of
//! 512 features, 11 classes, the study's parameters.
//!
//! Usage: cargo run --release -p head-nn --example epoch_timing -- [EPOCHS] [THREADS]
//! (defaults 10, 2). Prints each epoch's record and the median epoch time.

use head_nn::{Callbacks, EpochRecord, Params};
use nn_train::Rng;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|s| s.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn main() -> head_nn::Result<()> {
    let (epochs, threads) = (arg(1, 10), arg(2, 2));
    // candle's CPU matrix products size their thread pool from this variable.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let (n, nv, d, c) = (3000, 1000, 512, 11);
    let mut rng = Rng::new(0, 0);
    let mut rows = |k: usize| -> Vec<f32> { (0..k * d).map(|_| 2.0 * rng.next_f32()).collect() };
    let (x, vx) = (rows(n), rows(nv));
    let y: Vec<u32> = (0..n as u32).map(|i| i % c as u32).collect();
    let vy: Vec<u32> = (0..nv as u32).map(|i| i % c as u32).collect();
    let params = Params {
        training: head_nn::TrainSettings {
            epochs,
            ..Default::default()
        },
        ..Params::default()
    };
    let mut secs = vec![];
    let mut obs = Callbacks {
        on_batch: |_: &head_nn::BatchInfo| {},
        on_epoch: |r: &EpochRecord| {
            println!("{r:?}");
            secs.push(r.seconds);
        },
    };
    let data = head_nn::TrainData {
        train: head_nn::Split { x: &x[..], y: &y },
        val: head_nn::Split { x: &vx[..], y: &vy },
        n_classes: c,
    };
    head_nn::train(&data, &params, 1, &mut obs)?;
    secs.sort_by(f64::total_cmp);
    println!(
        "RESULT head-nn epoch ({n} x {d} train, {nv} val) median {:.4}s",
        secs[secs.len() / 2]
    );
    Ok(())
}
