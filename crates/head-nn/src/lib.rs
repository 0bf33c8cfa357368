//! The study's dense classification head on VGG16 pool5 features.
//!
//! Model (Keras's Sequential of the study): `GlobalAveragePooling2D -> Dropout(0.2) ->
//! Dense(100, relu) -> Dense(n_classes, softmax)`, Glorot-uniform kernels, zero biases, Adam
//! (lr 0.001, betas 0.9/0.999, epsilon 1e-7), categorical cross-entropy, batch 32, 10 epochs,
//! rows reshuffled every epoch.
//!
//! Global average pooling is the first layer and has no parameters, so the pool5 features
//! (N, 7, 7, 512, channels-last) are pooled once up front with [`global_average_pool`]; training
//! and evaluation take the pooled (N, 512) rows.
//!
//! Determinism: the initial weights, the shuffles and the dropout masks come from
//! [`nn_train::Rng`] streams of the seed; the tensor arithmetic is candle's CPU code, whose
//! matrix products are reproducible for a fixed thread count. Same seed, same inputs and same
//! thread count give bit-identical weights.

mod model;
mod predictor;
mod stage;

pub use model::Head;
pub use nn_train::{
    AdamConfig, BatchInfo, Callbacks, EpochRecord, Error, Evaluate, Evaluation, NamedTensor,
    Observer, Prediction, Result, Split, TrainData, TrainOutput, TrainSettings, Weights,
};
pub use predictor::HeadPredictor;
pub use stage::{HeadNn, CACHE_VERSION};

use nn_train::{FitConfig, Rng, Trainable};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the head. Defaults are the study's (Keras's defaults). Adam's and the
/// loop's settings are flattened in: `learning_rate`, `beta_1`, `beta_2`, `epsilon`,
/// `batch_size`, `epochs`, `evaluate`, `patience` (unknown keys are refused by the stage's params check).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    /// Dropout rate after the global average pooling.
    pub dropout: f64,
    /// Units of the hidden ReLU layer.
    pub hidden_units: usize,
    /// Decoupled weight decay (AdamW) of the two kernels: each step multiplies them by
    /// `1 - learning_rate * weight_decay`. 0: none (the study).
    pub weight_decay: f64,
    /// Label smoothing: the loss is `(1 - e)` times the cross-entropy plus `e` times the
    /// cross-entropy against the uniform distribution. 0: none (the study).
    pub label_smoothing: f64,
    #[serde(flatten)]
    pub adam: AdamConfig,
    #[serde(flatten)]
    pub training: TrainSettings,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dropout: 0.2,
            hidden_units: 100,
            weight_decay: 0.0,
            label_smoothing: 0.0,
            adam: AdamConfig::default(),
            training: TrainSettings::default(),
        }
    }
}

impl Params {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        self.adam.validate()?;
        self.training.validate()?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!(
                "dropout {} not in [0, 1)",
                self.dropout
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0)
            || self.weight_decay * self.adam.learning_rate >= 1.0
        {
            return Err(Error::Invalid(format!(
                "weight_decay {} must be >= 0 and below 1 / learning_rate",
                self.weight_decay
            )));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::Invalid(format!(
                "label_smoothing {} not in [0, 1)",
                self.label_smoothing
            )));
        }
        if self.hidden_units == 0 {
            return Err(Error::Invalid("hidden_units must be positive".into()));
        }
        Ok(())
    }
}

/// Global average pooling of channels-last feature maps: `x` holds `rows` maps of
/// (H, W, `channels`) each; returns `rows` x `channels` means (accumulated in f64).
pub fn global_average_pool(x: &[f32], rows: usize, channels: usize) -> Result<Vec<f32>> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    if channels == 0 || !x.len().is_multiple_of(rows * channels) || x.is_empty() {
        return Err(Error::Invalid(format!(
            "{} values are not {rows} maps of {channels} channels",
            x.len()
        )));
    }
    let spatial = x.len() / (rows * channels);
    let mut out = Vec::with_capacity(rows * channels);
    let mut acc = vec![0f64; channels];
    for map in x.chunks_exact(spatial * channels) {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for px in map.chunks_exact(channels) {
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += v as f64;
            }
        }
        out.extend(acc.iter().map(|&a| (a / spatial as f64) as f32));
    }
    Ok(out)
}

fn feature_dim(x: &[f32], y: &[u32], what: &str) -> Result<usize> {
    if y.is_empty() || x.is_empty() || !x.len().is_multiple_of(y.len()) {
        return Err(Error::Invalid(format!(
            "{what}: {} feature values for {} labels",
            x.len(),
            y.len()
        )));
    }
    Ok(x.len() / y.len())
}

fn check_labels(y: &[u32], n_classes: usize, what: &str) -> Result<()> {
    match y.iter().find(|&&c| c as usize >= n_classes) {
        Some(c) => Err(Error::Invalid(format!(
            "{what}: label {c} >= n_classes {n_classes}"
        ))),
        None => Ok(()),
    }
}

/// Trains the head on pooled features: each split's `x` is row-major (N, D) with N = its
/// `y.len()`. Labels are class indices below `data.n_classes`. Progress goes to `observer`
/// (`&mut ()` for none).
pub fn train<O: Observer + ?Sized>(
    data: &TrainData<'_, [f32]>,
    params: &Params,
    seed: u64,
    observer: &mut O,
) -> Result<TrainOutput> {
    params.validate()?;
    let (tr, va, n_classes) = (data.train, data.val, data.n_classes);
    let dim = feature_dim(tr.x, tr.y, "training")?;
    if feature_dim(va.x, va.y, "validation")? != dim {
        return Err(Error::Invalid(format!(
            "validation rows have {} features, training rows {dim}",
            va.x.len() / va.y.len()
        )));
    }
    if n_classes < 2 {
        return Err(Error::Invalid(format!("n_classes {n_classes} < 2")));
    }
    check_labels(tr.y, n_classes, "training")?;
    check_labels(va.y, n_classes, "validation")?;
    let head = Head::new(dim, n_classes, params, seed)?;
    let mut run = Run {
        head,
        x: tr.x,
        y: tr.y,
        val_x: va.x,
        val_y: va.y,
        dropout: Rng::new(seed, nn_train::STREAM_DROPOUT),
        batch_x: Vec::new(),
        batch_y: Vec::new(),
    };
    let cfg = FitConfig {
        epochs: params.training.epochs,
        batch_size: params.training.batch_size,
        learning_rate: params.adam.learning_rate,
        patience: params.training.patience,
    };
    let mut shuffle = Rng::new(seed, nn_train::STREAM_SHUFFLE);
    nn_train::fit(&mut run, tr.y.len(), cfg, &mut shuffle, observer)
}

struct Run<'a> {
    head: Head,
    x: &'a [f32],
    y: &'a [u32],
    val_x: &'a [f32],
    val_y: &'a [u32],
    dropout: Rng,
    batch_x: Vec<f32>,
    batch_y: Vec<u32>,
}

impl Trainable for Run<'_> {
    fn train_batch(&mut self, rows: &[usize]) -> Result<(f64, usize)> {
        let d = self.head.input_dim();
        self.batch_x.clear();
        self.batch_y.clear();
        for &r in rows {
            self.batch_x.extend_from_slice(&self.x[r * d..(r + 1) * d]);
            self.batch_y.push(self.y[r]);
        }
        let mask = self.head.dropout_mask(rows.len(), &mut self.dropout);
        self.head
            .step(&self.batch_x, &self.batch_y, mask.as_deref())
    }

    fn validate(&mut self) -> Result<(f64, f64)> {
        let logits = self.head.logits(self.val_x)?;
        let e = Evaluation::from_logits(&logits, self.head.n_classes(), self.val_y)?;
        Ok((e.loss, e.accuracy))
    }

    fn weights(&self) -> Result<Weights> {
        self.head.weights()
    }
}

/// Scores trained weights on pooled features `x` (N, D) with labels `y`.
pub fn evaluate(weights: &Weights, x: &[f32], y: &[u32]) -> Result<Evaluation> {
    let head = Head::from_weights(weights, &Params::default())?;
    let dim = feature_dim(x, y, "evaluation")?;
    if dim != head.input_dim() {
        return Err(Error::Invalid(format!(
            "evaluation rows have {dim} features, the weights expect {} (pooled features)",
            head.input_dim()
        )));
    }
    let logits = head.logits(x)?;
    Evaluation::from_logits(&logits, head.n_classes(), y)
}

/// Predictions and probabilities of trained weights on pooled features `x` (N, D). Rows are
/// cut by the weights' D, so `x` must already be pooled.
pub fn predict(weights: &Weights, x: &[f32]) -> Result<Prediction> {
    let head = Head::from_weights(weights, &Params::default())?;
    let logits = head.logits(x)?;
    Ok(nn_train::softmax_metrics(&logits, head.n_classes(), None)?.0)
}
