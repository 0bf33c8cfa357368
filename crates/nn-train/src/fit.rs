//! The epoch loop: per-epoch reshuffling, mini-batches, validation, history, best checkpoint.

use crate::{Error, Result, Rng, Weights};
use serde::{Deserialize, Serialize};
use std::time::Instant;

pub use contracts::EpochRecord;

/// Which weights a stage evaluates after training (the contract's type: it is stored in the
/// model and predictions artifacts).
pub use contracts::Evaluate;

/// The loop's settings, flattened into both network stages' params (Keras's defaults: batch
/// 32, 10 epochs, the final weights evaluated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    /// Rows per optimisation step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Which weights to evaluate: the last epoch's or the one with the lowest validation loss.
    pub evaluate: Evaluate,
    /// Early stopping: training ends after this many epochs without a lower validation loss
    /// (0: never; all `epochs` run).
    pub patience: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            batch_size: 32,
            epochs: 10,
            evaluate: Evaluate::Final,
            patience: 0,
        }
    }
}

impl TrainSettings {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.epochs == 0 {
            return Err(Error::Invalid(
                "batch_size and epochs must be positive".into(),
            ));
        }
        if self.evaluate == Evaluate::Both {
            return Err(Error::Invalid(
                "evaluate = \"both\" (the two weight sets averaged) is finetune's; this stage evaluates \"best\" or \"final\"".into(),
            ));
        }
        Ok(())
    }
}

/// One labelled split: rows `x` (a slice of features, a set of images, ...) and labels `y`.
#[derive(Debug)]
pub struct Split<'a, X: ?Sized> {
    pub x: &'a X,
    pub y: &'a [u32],
}

impl<X: ?Sized> Clone for Split<'_, X> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<X: ?Sized> Copy for Split<'_, X> {}

/// What a network trains on: the training and validation splits and the number of classes.
#[derive(Debug)]
pub struct TrainData<'a, X: ?Sized> {
    pub train: Split<'a, X>,
    pub val: Split<'a, X>,
    pub n_classes: usize,
}

/// Progress after one mini-batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchInfo {
    /// 1-based epoch number.
    pub epoch: usize,
    /// 1-based batch number within the epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Rows in this batch.
    pub rows: usize,
    /// Mean loss of this batch.
    pub loss: f64,
}

/// Receives progress (for progress bars and logs). Both methods default to doing nothing;
/// `()` is the observer that ignores everything.
pub trait Observer {
    /// After each training batch.
    fn on_batch(&mut self, _info: &BatchInfo) {}
    /// After each epoch, validation included.
    fn on_epoch(&mut self, _record: &EpochRecord) {}
}

impl Observer for () {}

/// An [`Observer`] made of two closures.
pub struct Callbacks<B, E> {
    /// Called after each batch.
    pub on_batch: B,
    /// Called after each epoch.
    pub on_epoch: E,
}

impl<B: FnMut(&BatchInfo), E: FnMut(&EpochRecord)> Observer for Callbacks<B, E> {
    fn on_batch(&mut self, info: &BatchInfo) {
        (self.on_batch)(info)
    }
    fn on_epoch(&mut self, record: &EpochRecord) {
        (self.on_epoch)(record)
    }
}

/// Loop settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitConfig {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per optimisation step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The optimiser's learning rate (named when training diverges).
    pub learning_rate: f64,
    /// Stop after this many epochs without a lower validation loss (0: never).
    pub patience: usize,
}

/// A model that the loop can train.
pub trait Trainable {
    /// One optimisation step on the given training rows; returns the summed loss over the rows
    /// and the number of rows classified correctly (with the training-time forward pass).
    fn train_batch(&mut self, rows: &[usize]) -> Result<(f64, usize)>;
    /// Mean loss and accuracy on the validation rows.
    fn validate(&mut self) -> Result<(f64, f64)>;
    /// The current weights.
    fn weights(&self) -> Result<Weights>;
}

/// What training returns.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutput {
    /// One record per epoch.
    pub history: Vec<EpochRecord>,
    /// 1-based epoch of the lowest validation loss (the first on ties).
    pub best_epoch: usize,
    /// Weights after `best_epoch`.
    pub best_weights: Weights,
    /// Weights after the last epoch.
    pub final_weights: Weights,
}

impl TrainOutput {
    /// The weights that `evaluate` selects: one set, or both for [`Evaluate::Both`] (the
    /// best first).
    pub fn selected(&self, evaluate: Evaluate) -> Vec<&Weights> {
        match evaluate {
            Evaluate::Final => vec![&self.final_weights],
            Evaluate::Best => vec![&self.best_weights],
            Evaluate::Both => vec![&self.best_weights, &self.final_weights],
        }
    }

    /// The one set of weights that `evaluate` selects; an error for [`Evaluate::Both`].
    pub fn single(&self, evaluate: Evaluate) -> Result<&Weights> {
        match self.selected(evaluate)[..] {
            [w] => Ok(w),
            _ => Err(Error::Invalid(format!(
                "evaluate = {evaluate:?} gives several weight sets where one is needed"
            ))),
        }
    }
}

/// Trains `model` on `n_train` rows for `cfg.epochs` epochs. Each epoch visits the rows in a
/// fresh permutation drawn from `shuffle`, in batches of `cfg.batch_size`.
pub fn fit<T: Trainable + ?Sized, O: Observer + ?Sized>(
    model: &mut T,
    n_train: usize,
    cfg: FitConfig,
    shuffle: &mut Rng,
    observer: &mut O,
) -> Result<TrainOutput> {
    if cfg.epochs == 0 || cfg.batch_size == 0 || n_train == 0 {
        return Err(Error::Invalid(format!(
            "need epochs > 0, batch_size > 0 and training rows (got {}, {}, {n_train})",
            cfg.epochs, cfg.batch_size
        )));
    }
    let batches = n_train.div_ceil(cfg.batch_size);
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f64, usize, Weights)> = None;
    let mut last = None;
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let order = shuffle.permutation(n_train);
        let (mut loss, mut correct) = (0.0f64, 0usize);
        let diverged = |batch: usize, what: String, value: f64| Error::Diverged {
            epoch,
            batch,
            what,
            value,
            learning_rate: cfg.learning_rate,
        };
        for (b, rows) in order.chunks(cfg.batch_size).enumerate() {
            let (l, c) = model.train_batch(rows)?;
            if !l.is_finite() {
                return Err(diverged(b + 1, "the training loss".into(), l));
            }
            loss += l;
            correct += c;
            observer.on_batch(&BatchInfo {
                epoch,
                batch: b + 1,
                batches,
                rows: rows.len(),
                loss: l / rows.len() as f64,
            });
        }
        let (val_loss, val_accuracy) = model.validate()?;
        if !val_loss.is_finite() {
            return Err(diverged(0, "the validation loss".into(), val_loss));
        }
        let weights = model.weights()?;
        for t in &weights.tensors {
            if let Some(v) = t.data.iter().find(|v| !v.is_finite()) {
                return Err(diverged(0, format!("weight `{}`", t.name), *v as f64));
            }
        }
        let record = EpochRecord {
            epoch,
            loss: loss / n_train as f64,
            accuracy: correct as f64 / n_train as f64,
            val_loss,
            val_accuracy,
            seconds: t0.elapsed().as_secs_f64(),
        };
        observer.on_epoch(&record);
        history.push(record);
        let improves = match &best {
            None => true,
            Some((b, _, _)) => val_loss < *b,
        };
        if improves {
            best = Some((val_loss, epoch, weights.clone()));
        }
        last = Some(weights);
        if let Some((_, best_epoch, _)) = &best {
            if cfg.patience > 0 && epoch - best_epoch >= cfg.patience {
                break;
            }
        }
    }
    let (_, best_epoch, best_weights) = best.expect("at least one epoch");
    Ok(TrainOutput {
        history,
        best_epoch,
        best_weights,
        final_weights: last.expect("at least one epoch"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Visits rows and reports a scripted validation loss.
    struct Script {
        seen: Vec<Vec<usize>>,
        val: Vec<f64>,
        epoch: usize,
    }

    impl Trainable for Script {
        fn train_batch(&mut self, rows: &[usize]) -> Result<(f64, usize)> {
            self.seen.push(rows.to_vec());
            Ok((rows.len() as f64, rows.len()))
        }
        fn validate(&mut self) -> Result<(f64, f64)> {
            self.epoch += 1;
            Ok((self.val[self.epoch - 1], 0.5))
        }
        fn weights(&self) -> Result<Weights> {
            let mut w = Weights::default();
            w.push("epoch", &[1], vec![self.epoch as f32])?;
            Ok(w)
        }
    }

    #[test]
    fn batches_history_and_best() {
        let mut m = Script {
            seen: vec![],
            val: vec![3.0, 1.0, 2.0, 1.0],
            epoch: 0,
        };
        let mut epochs = vec![];
        let mut obs = Callbacks {
            on_batch: |_: &BatchInfo| {},
            on_epoch: |r: &EpochRecord| epochs.push(r.epoch),
        };
        let cfg = FitConfig {
            epochs: 4,
            batch_size: 4,
            learning_rate: 0.1,
            patience: 0,
        };
        let out = fit(&mut m, 10, cfg, &mut Rng::new(1, 2), &mut obs).unwrap();
        assert_eq!(epochs, vec![1, 2, 3, 4]);
        assert_eq!(out.best_epoch, 2);
        assert_eq!(out.best_weights.get("epoch").unwrap().data, vec![2.0]);
        assert_eq!(out.final_weights.get("epoch").unwrap().data, vec![4.0]);
        assert_eq!(out.history[0].loss, 1.0);
        assert_eq!(m.seen.len(), 12);
        assert_eq!(m.seen[2].len(), 2);
        let mut first: Vec<usize> = m.seen[..3].concat();
        first.sort_unstable();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_ne!(m.seen[..3].concat(), m.seen[3..6].concat(), "reshuffled");
        let json = serde_json::to_string(&out.history[0]).unwrap();
        assert!(json.contains("\"val_accuracy\":0.5"), "{json}");
    }

    #[test]
    fn patience_stops_after_epochs_without_improvement() {
        let mut m = Script {
            seen: vec![],
            val: vec![3.0, 1.0, 2.0, 1.5, 0.5, 0.1],
            epoch: 0,
        };
        let cfg = FitConfig {
            epochs: 6,
            batch_size: 4,
            learning_rate: 0.1,
            patience: 2,
        };
        let out = fit(&mut m, 10, cfg, &mut Rng::new(1, 2), &mut ()).unwrap();
        // Epochs 3 and 4 do not beat epoch 2: training stops after epoch 4.
        assert_eq!(out.history.len(), 4);
        assert_eq!(out.best_epoch, 2);
        assert_eq!(out.best_weights.get("epoch").unwrap().data, vec![2.0]);
        assert_eq!(out.final_weights.get("epoch").unwrap().data, vec![4.0]);
    }

    /// Reports a NaN loss in its second batch.
    struct Diverging;

    impl Trainable for Diverging {
        fn train_batch(&mut self, rows: &[usize]) -> Result<(f64, usize)> {
            Ok((if rows[0] == usize::MAX { 0.0 } else { f64::NAN }, 0))
        }
        fn validate(&mut self) -> Result<(f64, f64)> {
            Ok((1.0, 0.0))
        }
        fn weights(&self) -> Result<Weights> {
            Ok(Weights::default())
        }
    }

    #[test]
    fn a_non_finite_loss_stops_training_with_its_place_and_a_hint() {
        let cfg = FitConfig {
            epochs: 2,
            batch_size: 2,
            learning_rate: 1e30,
            patience: 0,
        };
        let e = fit(&mut Diverging, 4, cfg, &mut Rng::new(1, 2), &mut ()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("epoch 1, batch 1")
                && msg.contains("NaN")
                && msg.contains("learning rate (1e30)"),
            "{msg}"
        );
    }
}
