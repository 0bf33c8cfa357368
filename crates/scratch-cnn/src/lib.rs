//! The study's CNN trained from scratch on 224x224 RGB images.
//!
//! Model (Keras's Sequential of the study): the VGG caffe transform (f32, BGR, minus the
//! ImageNet means), then `Conv2D(32) -> MaxPool -> Conv2D(64) -> MaxPool -> Conv2D(64) ->
//! MaxPool -> Conv2D(128) -> MaxPool` (3x3 kernels, valid padding, ReLU; 2x2 pools), global
//! average pooling, `Dense(64, relu) -> Dense(n_classes, softmax)`: 139,147 parameters for 11
//! classes. Glorot-uniform kernels, zero biases, Adam (lr 0.001, betas 0.9/0.999, epsilon
//! 1e-7), categorical cross-entropy, batch 32, 10 epochs, rows reshuffled every epoch.
//!
//! The convolution trunk is one candle custom op with channels-last im2col + `gemm` kernels
//! (forward and backward), parallel over the images of a batch; the dense layers and the loss
//! are candle tensors. Images stay u8 until a batch is formed.
//!
//! Determinism: the initial weights and the shuffles come from [`nn_train::Rng`] streams of
//! the seed; the trunk computes each image on one thread and sums per-image gradients in image
//! order. Same seed, same inputs and same thread count give bit-identical weights.
//!
//! Input size: any H x W with both sides at least [`min_image_side`] (46 for four layers).

mod images;
pub mod kernels;
mod model;
mod predictor;
mod stage;
pub mod trunk;

pub use images::{caffe_extend, Images, CAFFE_MEAN_BGR};
pub use model::Cnn;
pub use nn_train::{
    AdamConfig, BatchInfo, Callbacks, EpochRecord, Error, Evaluate, Evaluation, NamedTensor,
    Observer, Prediction, Result, Split, TrainData, TrainOutput, TrainSettings, Weights,
};
pub use predictor::CnnPredictor;
pub use stage::{ScratchCnn, CACHE_VERSION};

use nn_train::{FitConfig, Rng, Trainable};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the CNN. Defaults are the study's (Keras's defaults). Adam's and the
/// loop's settings are flattened in: `learning_rate`, `beta_1`, `beta_2`, `epsilon`,
/// `batch_size` (also the evaluation batch), `epochs`, `evaluate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    /// Filters of the conv layers, in order (3x3 valid conv + ReLU + 2x2 max-pool each).
    pub filters: Vec<usize>,
    /// Units of the hidden dense ReLU layer.
    pub dense_units: usize,
    #[serde(flatten)]
    pub adam: AdamConfig,
    #[serde(flatten)]
    pub training: TrainSettings,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            filters: vec![32, 64, 64, 128],
            dense_units: 64,
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
        if self.filters.is_empty() || self.filters.contains(&0) {
            return Err(Error::Invalid(format!("filters {:?}", self.filters)));
        }
        if self.dense_units == 0 {
            return Err(Error::Invalid("dense_units must be positive".into()));
        }
        Ok(())
    }
}

/// Smallest image side that `n_layers` conv+pool layers accept (46 for the study's four).
pub fn min_image_side(n_layers: usize) -> usize {
    trunk::TrunkShape::min_side(n_layers)
}

/// Trainable parameters of the CNN for `n_classes` classes.
pub fn parameter_count(params: &Params, n_classes: usize) -> usize {
    let mut c = 3;
    let mut n = 0;
    for &o in &params.filters {
        n += 9 * c * o + o;
        c = o;
    }
    n + c * params.dense_units + params.dense_units + params.dense_units * n_classes + n_classes
}

fn check(images: &Images, y: &[u32], n_classes: usize, what: &str) -> Result<()> {
    if images.is_empty() || images.len() != y.len() {
        return Err(Error::Invalid(format!(
            "{what}: {} images, {} labels",
            images.len(),
            y.len()
        )));
    }
    if let Some(c) = y.iter().find(|&&c| c as usize >= n_classes) {
        return Err(Error::Invalid(format!(
            "{what}: label {c} >= n_classes {n_classes}"
        )));
    }
    Ok(())
}

/// Trains the CNN. Training and validation images must share one size; labels are class
/// indices below `data.n_classes`. Progress goes to `observer` (`&mut ()` for none).
pub fn train<O: Observer + ?Sized>(
    data: &TrainData<'_, Images<'_>>,
    params: &Params,
    seed: u64,
    observer: &mut O,
) -> Result<TrainOutput> {
    params.validate()?;
    let (tr, va, n_classes) = (data.train, data.val, data.n_classes);
    if n_classes < 2 {
        return Err(Error::Invalid(format!("n_classes {n_classes} < 2")));
    }
    check(tr.x, tr.y, n_classes, "training")?;
    check(va.x, va.y, n_classes, "validation")?;
    let (h, w) = (tr.x.height(), tr.x.width());
    if (va.x.height(), va.x.width()) != (h, w) {
        return Err(Error::Invalid(format!(
            "validation images are {}x{}, training images {h}x{w}",
            va.x.height(),
            va.x.width()
        )));
    }
    let cnn = Cnn::new(h, w, n_classes, params, seed)?;
    let mut run = Run {
        cnn,
        train: tr.x,
        y: tr.y,
        val: va.x,
        val_y: va.y,
        batch_size: params.training.batch_size,
        batch: Vec::new(),
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

struct Run<'a, 'b> {
    cnn: Cnn,
    train: &'b Images<'a>,
    y: &'b [u32],
    val: &'b Images<'a>,
    val_y: &'b [u32],
    batch_size: usize,
    batch: Vec<f32>,
    batch_y: Vec<u32>,
}

impl Trainable for Run<'_, '_> {
    fn train_batch(&mut self, rows: &[usize]) -> Result<(f64, usize)> {
        self.batch.clear();
        self.train.caffe_batch(rows, &mut self.batch);
        self.batch_y.clear();
        self.batch_y.extend(rows.iter().map(|&r| self.y[r]));
        self.cnn.step(&self.batch, &self.batch_y)
    }

    fn validate(&mut self) -> Result<(f64, f64)> {
        let logits = logits(&self.cnn, self.val, self.batch_size, &mut self.batch)?;
        let e = Evaluation::from_logits(&logits, self.cnn.n_classes(), self.val_y)?;
        Ok((e.loss, e.accuracy))
    }

    fn weights(&self) -> Result<Weights> {
        self.cnn.weights()
    }
}

fn logits(cnn: &Cnn, images: &Images, batch_size: usize, buf: &mut Vec<f32>) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(images.len() * cnn.n_classes());
    let rows: Vec<usize> = (0..images.len()).collect();
    for chunk in rows.chunks(batch_size.max(1)) {
        buf.clear();
        images.caffe_batch(chunk, buf);
        out.extend(cnn.logits(buf)?);
    }
    Ok(out)
}

/// Images per forward pass in [`evaluate`] and [`predict`].
pub const EVAL_BATCH: usize = 32;

/// Scores trained weights on `images` with labels `y`.
pub fn evaluate(weights: &Weights, images: &Images, y: &[u32]) -> Result<Evaluation> {
    let cnn = Cnn::from_weights(weights, images.height(), images.width(), &Params::default())?;
    check(images, y, cnn.n_classes(), "evaluation")?;
    let logits = logits(&cnn, images, EVAL_BATCH, &mut Vec::new())?;
    Evaluation::from_logits(&logits, cnn.n_classes(), y)
}

/// Predictions and probabilities of trained weights on `images`.
pub fn predict(weights: &Weights, images: &Images) -> Result<Prediction> {
    let cnn = Cnn::from_weights(weights, images.height(), images.width(), &Params::default())?;
    let logits = logits(&cnn, images, EVAL_BATCH, &mut Vec::new())?;
    Ok(nn_train::softmax_metrics(&logits, cnn.n_classes(), None)?.0)
}
