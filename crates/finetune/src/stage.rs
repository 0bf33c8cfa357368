//! The `finetune` stage: VGG16's top convolutions (from the ImageNet weights) and a head,
//! trained on `vgg-activations`' stored maps; history, model and predictions as the other
//! networks write them.

use contracts::{ids, outputs, slots, Evaluate, FeaturesReader, Predictions};
use nn_train::{Evaluation, FitConfig, NamedTensor, Prediction, Rng, Trainable, Weights};
use pipeline::{BoxError, Stage, StageContext, Validate};
use serde::{Deserialize, Serialize};
use vgg_extract::VGG16;

use crate::conv::Shape;
use crate::data::{Pool, SplitMaps};
use crate::model::{AdamW, Head, Layer, Optimizer, Pooling, Sgd, TopNet};
use vgg_activations::{layer_of_layout, read_vgg16};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

/// The random stream of the map crops (after nn-train's initialisation, shuffling and
/// dropout streams).
const STREAM_CROP: u64 = 4;

/// The convolutions that can be trained.
pub const TRAINABLE: [&str; 3] = ["conv5_1", "conv5_2", "conv5_3"];

/// The optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with `momentum` (PyTorch's).
    Sgd,
    /// AdamW (PyTorch's; betas 0.9 and 0.999, eps 1e-8; `momentum` unused).
    Adamw,
}

/// The images the network is trained on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainOn {
    /// The training split; the validation split judges the network.
    #[default]
    #[serde(rename = "training")]
    Training,
    /// The training and validation splits together (a refit with settings chosen on
    /// validation before): the validation numbers then show fit, not generalisation, so the
    /// weights evaluated must be the final ones, with no early stopping.
    #[serde(rename = "training+validation")]
    TrainingAndValidation,
}

impl TrainOn {
    fn is_training(&self) -> bool {
        *self == TrainOn::Training
    }
}

/// How the learning rates change over the fine-tuning epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Half a cosine from the rates down to zero over the epochs after `frozen_epochs`.
    Cosine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The first convolution trained (`conv5_1`, `conv5_2`, `conv5_3`); the ones between the
    /// stored layer and it run frozen.
    pub train_from: String,
    /// The head's pooling of pool5: `avg` or `avg3x3`.
    pub pooling: Pooling,
    /// Dropout rate on the pooled features.
    pub dropout: f64,
    /// Networks trained, each with its own random draws (shuffling, dropout, windows), whose
    /// view-averaged probabilities are averaged (1: a single network). Member `m` of seed `s`
    /// trains as a single run of seed `s + m * members` would.
    pub members: usize,
    /// Label smoothing of the training loss (0: plain cross-entropy); validation losses are
    /// plain cross-entropy either way.
    pub label_smoothing: f64,
    /// Epochs in all, the first `frozen_epochs` training the head alone.
    pub epochs: usize,
    pub frozen_epochs: usize,
    pub batch_size: usize,
    /// Translation augmentation: each training row is a random `map_crop x map_crop` window
    /// of its stored map (0: the whole map). Validation and evaluation see whole maps.
    pub map_crop: usize,
    /// `sgd` or `adamw`.
    pub optimizer: OptimizerKind,
    /// Learning rates of the pretrained convolutions and of the head.
    pub lr_conv: f64,
    pub lr_head: f64,
    pub momentum: f64,
    /// Weight decay: L2 added to every gradient with SGD, decoupled with AdamW (as PyTorch's
    /// optimisers do).
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Early stopping: epochs without a lower validation loss (0: never).
    pub patience: usize,
    /// Which weights are evaluated: `best` (lowest validation loss), `final`, or `both` (each
    /// member's two networks' probabilities averaged: a snapshot ensemble). The model stores
    /// both sets either way.
    pub evaluate: Evaluate,
    /// `training` or `training+validation` (see [`TrainOn`]). Left out of the key when
    /// `training`, as before it existed.
    #[serde(skip_serializing_if = "TrainOn::is_training")]
    pub train_on: TrainOn,
}

impl Params {
    /// The params a cached run of this stage used (from its run record).
    pub fn from_record(rec: &pipeline::RunRecord) -> contracts::Result<Params> {
        contracts::predictor::record_params(rec, ids::FINETUNE)
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            train_from: "conv5_3".into(),
            pooling: Pooling::Avg,
            dropout: 0.2,
            members: 1,
            label_smoothing: 0.0,
            epochs: 6,
            frozen_epochs: 1,
            batch_size: 32,
            map_crop: 0,
            optimizer: OptimizerKind::Adamw,
            lr_conv: 1e-5,
            lr_head: 1e-3,
            momentum: 0.9,
            weight_decay: 1e-4,
            schedule: Schedule::Cosine,
            patience: 0,
            evaluate: Evaluate::Best,
            train_on: TrainOn::Training,
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if !TRAINABLE.contains(&self.train_from.as_str()) {
            return Err(format!(
                "train_from \"{}\" is not one of {}",
                self.train_from,
                TRAINABLE.join(", ")
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "label_smoothing {} is not in [0, 1)",
                self.label_smoothing
            ));
        }
        if self.epochs == 0 || self.batch_size == 0 || self.members == 0 {
            return Err("epochs, batch_size and members must be positive".into());
        }
        if self.map_crop != 0 && (self.map_crop < 2 || !self.map_crop.is_multiple_of(2)) {
            return Err(format!(
                "map_crop {} must be 0 (off) or an even side of at least 2",
                self.map_crop
            ));
        }
        if self.frozen_epochs > self.epochs {
            return Err(format!(
                "frozen_epochs {} is more than epochs {}",
                self.frozen_epochs, self.epochs
            ));
        }
        for (name, v) in [
            ("lr_conv", self.lr_conv),
            ("lr_head", self.lr_head),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} {v} must be a finite number >= 0"));
            }
        }
        if self.momentum >= 1.0 {
            return Err(format!("momentum {} must be below 1", self.momentum));
        }
        if self.train_on == TrainOn::TrainingAndValidation
            && (self.evaluate != Evaluate::Final || self.patience != 0)
        {
            return Err(format!(
                "train_on = \"training+validation\" trains on the validation images, so their loss cannot pick the weights: it needs evaluate = \"final\" and patience = 0 (they are \"{}\" and {})",
                format!("{:?}", self.evaluate).to_lowercase(),
                self.patience
            ));
        }
        Ok(())
    }
}

/// The VGG16 layers above `stored` up to `conv5_3`, with the ImageNet weights, for maps of
/// `(h, w, c)`; and the position of `train_from` among them.
pub fn pretrained_layers(
    weights: &[vgg_extract::ConvWeights],
    stored: &str,
    map: (usize, usize, usize),
    train_from: &str,
) -> Result<(Vec<Layer>, usize), BoxError> {
    let names = vgg_extract::layer_names(VGG16);
    let at = |n: &str| names.iter().position(|x| x == n);
    let (s, top) = (
        at(stored).ok_or_else(|| format!("no VGG16 layer `{stored}`"))?,
        at("conv5_3").expect("VGG16 has conv5_3"),
    );
    let first = at(train_from).ok_or_else(|| format!("no VGG16 layer `{train_from}`"))?;
    if first <= s {
        return Err(format!(
            "train_from = \"{train_from}\" is at or below the stored layer `{stored}`: its input is not stored; store a lower layer (vgg-activations `layer`)"
        )
        .into());
    }
    let (h, w, mut c) = map;
    let mut layers = Vec::new();
    for (i, name) in names.iter().enumerate().take(top + 1).skip(s + 1) {
        let vgg_extract::LayerSpec::Conv(o) = VGG16[i] else {
            return Err(format!("`{name}` is not a convolution").into());
        };
        let conv_index = VGG16[..i]
            .iter()
            .filter(|x| matches!(x, vgg_extract::LayerSpec::Conv(_)))
            .count();
        let cw = &weights[conv_index];
        let shape = Shape { h, w, c, o };
        if cw.weight.len() != o * c * 9 {
            return Err(
                format!("`{name}` takes {c} channels, the stored maps have another count").into(),
            );
        }
        layers.push(Layer::from_torch(name, shape, &cw.weight, &cw.bias));
        c = o;
    }
    let pos = layers
        .iter()
        .position(|l| l.name == train_from)
        .expect("checked above");
    Ok((layers, pos))
}

/// Images per forward pass outside training.
const EVAL_BATCH: usize = 32;

/// View-averaged class probabilities (`n x k`) of `n` images with `views` views each;
/// `rows(v, start, end, x)` appends view `v`'s maps of images `start..end` to `x`.
pub(crate) fn view_averaged(
    net: &TopNet,
    n: usize,
    views: usize,
    mut rows: impl FnMut(usize, usize, usize, &mut Vec<f32>) -> Result<(), BoxError>,
) -> Result<Vec<f32>, BoxError> {
    let mut x = Vec::new();
    averaged_over_views(net.head.k, n, views, |v, start, end| {
        x.clear();
        rows(v, start, end, &mut x)?;
        Ok(net.logits(&x, end - start))
    })
}

/// View-averaged class probabilities (`n x k`) of `n` images with `views` views each, from
/// `logits(v, start, end)`: view `v`'s logits of images `start..end`.
fn averaged_over_views(
    k: usize,
    n: usize,
    views: usize,
    mut logits: impl FnMut(usize, usize, usize) -> Result<Vec<f32>, BoxError>,
) -> Result<Vec<f32>, BoxError> {
    let mut probs = vec![0.0f32; n * k];
    for start in (0..n).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(n);
        for v in 0..views {
            let logits = logits(v, start, end)?;
            let (p, _) = nn_train::softmax_metrics(&logits, k, None)?;
            for (acc, q) in probs[start * k..end * k].iter_mut().zip(&p.probabilities) {
                *acc += q / views as f32;
            }
        }
    }
    if probs.iter().any(|p| !p.is_finite()) {
        return Err("the fine-tuned network produced a NaN or infinite probability".into());
    }
    Ok(probs)
}

/// View-averaged class probabilities of every image of a split (`images x k`).
fn probabilities(net: &TopNet, maps: &SplitMaps) -> Result<Vec<f32>, BoxError> {
    view_averaged(net, maps.images(), maps.views.len(), |v, start, end, x| {
        for i in start..end {
            maps.push(i, v, x)?;
        }
        Ok(())
    })
}

/// The most bytes [`FrozenFeatures`] may hold; past it the head-only epochs run the
/// convolutions on every batch instead.
const FROZEN_FEATURES_MAX_BYTES: usize = 1 << 30;

/// What the head-only epochs see: the pooled features of every training row and of every
/// validation image's views under the ImageNet weights. They are the same for every member
/// and every head-only epoch, so the stage computes them once (one forward pass of the
/// convolutions per row, where each member's head-only epochs and their validations made one
/// each); each row is the same bits as in a training batch ([`TopNet::features`]).
struct FrozenFeatures {
    d: usize,
    /// Pool row `r` (image `r / views`, view `r % views`): `rows x d`.
    train: Vec<f32>,
    /// Per view of the validation split, `images x d`.
    val: Vec<Vec<f32>>,
}

impl FrozenFeatures {
    /// The features, or `None` (said on the progress) when they would not fit the budget.
    fn compute(
        ctx: &StageContext<'_>,
        net: &TopNet,
        train: &Pool<'_>,
        val: &SplitMaps,
    ) -> Result<Option<FrozenFeatures>, BoxError> {
        let d = net.head.d;
        let (rows, views) = (train.images() * train.views(), train.views());
        let val_rows = val.images() * val.views.len();
        let bytes = (rows + val_rows) * d * 4;
        if bytes > FROZEN_FEATURES_MAX_BYTES {
            ctx.progress().println(format!(
                "{}: the head-only epochs run the convolutions on every batch (their features would take {:.1} GB)",
                ctx.stage(),
                bytes as f64 / 1e9
            ));
            return Ok(None);
        }
        let bar = ctx.progress().bar(
            (rows + val_rows) as u64,
            &format!("{}: head-only features", ctx.stage()),
        );
        let train = features_in_batches(net, rows, &bar, |r, x| {
            let (split, img) = train.locate(r / views);
            split.push(img, r % views, x)
        })?;
        let val_net = net.resized(val.map.0, val.map.1);
        let val = (0..val.views.len())
            .map(|v| features_in_batches(&val_net, val.images(), &bar, |i, x| val.push(i, v, x)))
            .collect::<Result<Vec<_>, _>>()?;
        bar.finish_and_clear();
        Ok(Some(FrozenFeatures { d, train, val }))
    }

    /// The features of pool rows `rows`, one after another.
    fn rows(&self, rows: &[usize]) -> Vec<f32> {
        let d = self.d;
        let mut out = Vec::with_capacity(rows.len() * d);
        for &r in rows {
            out.extend_from_slice(&self.train[r * d..][..d]);
        }
        out
    }

    /// The validation split's view-averaged probabilities under `net`'s head, exactly as
    /// [`probabilities`] computes them with the convolutions the features came from.
    fn val_probabilities(&self, net: &TopNet) -> Result<Vec<f32>, BoxError> {
        let d = self.d;
        let n = self.val.first().map_or(0, |v| v.len() / d);
        averaged_over_views(net.head.k, n, self.val.len(), |v, start, end| {
            Ok(net.head_logits(&self.val[v][start * d..end * d], end - start))
        })
    }
}

/// `net`'s features (`n x d`) of rows `0..n`, [`EVAL_BATCH`] at a time; `push(i, x)` appends
/// row `i`'s map to `x`.
fn features_in_batches(
    net: &TopNet,
    n: usize,
    bar: &pipeline::Bar,
    mut push: impl FnMut(usize, &mut Vec<f32>) -> Result<(), BoxError>,
) -> Result<Vec<f32>, BoxError> {
    let mut out = Vec::with_capacity(n * net.head.d);
    let mut x = Vec::new();
    for start in (0..n).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(n);
        x.clear();
        for i in start..end {
            push(i, &mut x)?;
        }
        out.extend(net.features(&x, end - start));
        bar.inc((end - start) as u64);
    }
    Ok(out)
}

/// Scores view-averaged probabilities against labels.
fn evaluation(probs: Vec<f32>, k: usize, labels: &[u32]) -> Evaluation {
    let mut predictions = Vec::with_capacity(labels.len());
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        predictions.push(best as u32);
        correct += usize::from(best == y as usize);
        loss -= (row[y as usize].max(1e-12) as f64).ln();
    }
    let n = labels.len().max(1) as f64;
    Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
        prediction: Prediction {
            n_classes: k,
            predictions,
            probabilities: probs,
        },
    }
}

/// The training loop's view of the network.
struct Trainer<'a> {
    net: TopNet,
    opt: Optimizer,
    p: &'a Params,
    train: &'a Pool<'a>,
    val: &'a SplitMaps,
    /// The head-only epochs' features, when computed (see [`FrozenFeatures`]).
    frozen: Option<&'a FrozenFeatures>,
    first_trained: usize,
    dropout_rng: Rng,
    crop_rng: Rng,
    step: usize,
    steps_per_epoch: usize,
    x: Vec<f32>,
    error: Option<BoxError>,
}

impl<'a> Trainer<'a> {
    fn lr_factor(&self) -> f64 {
        let frozen = self.p.frozen_epochs * self.steps_per_epoch;
        if self.step < frozen || self.p.schedule == Schedule::Constant {
            return 1.0;
        }
        let total = (self.p.epochs * self.steps_per_epoch - frozen).max(1);
        let t = (self.step - frozen) as f64 / total as f64;
        0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }

    /// Loads the maps of pool rows `rows` into `x` (a random window of each with `map_crop`).
    fn rows(&mut self, rows: &[usize]) -> Result<(), BoxError> {
        let views = self.train.views();
        self.x.clear();
        let (h, w, _) = self.train.map();
        for &r in rows {
            let (split, img) = self.train.locate(r / views);
            let v = r % views;
            match self.p.map_crop {
                0 => split.push(img, v, &mut self.x)?,
                c => {
                    let y0 = self.crop_rng.below((h - c + 1) as u64) as usize;
                    let x0 = self.crop_rng.below((w - c + 1) as u64) as usize;
                    split.push_window(img, v, (y0, x0, c, c), &mut self.x)?
                }
            }
        }
        Ok(())
    }

    /// The labels of pool rows `rows`.
    fn labels(&self, rows: &[usize]) -> Vec<u32> {
        let views = self.train.views();
        rows.iter()
            .map(|&r| {
                let (split, img) = self.train.locate(r / views);
                split.labels[img]
            })
            .collect()
    }

    /// The head-only epochs' features while the convolutions still hold the weights they were
    /// computed with: in those epochs' steps (`during_step`) or at the end of the last of them.
    fn frozen_features(&self, during_step: bool) -> Option<&'a FrozenFeatures> {
        let frozen = self.p.frozen_epochs * self.steps_per_epoch;
        let still = if during_step {
            self.step < frozen
        } else {
            self.step <= frozen
        };
        self.frozen.filter(|_| still)
    }
}

fn train_err(e: BoxError) -> nn_train::Error {
    nn_train::Error::Invalid(e.to_string())
}

impl Trainable for Trainer<'_> {
    fn train_batch(&mut self, rows: &[usize]) -> nn_train::Result<(f64, usize)> {
        let cached = self.frozen_features(true);
        if cached.is_none() {
            self.rows(rows).map_err(train_err)?;
        }
        let y = self.labels(rows);
        let frozen = self.step < self.p.frozen_epochs * self.steps_per_epoch;
        let d = self.net.head.d;
        let rate = self.p.dropout as f32;
        let mask: Vec<f32> = (0..rows.len() * d)
            .map(|_| f32::from(self.dropout_rng.next_f32() >= rate))
            .collect();
        let first = if frozen {
            self.net.layers.len()
        } else {
            self.first_trained
        };
        let dropout = (rate > 0.0).then_some((&mask[..], rate));
        let g = match cached {
            Some(f) => self.net.head_gradients(&f.rows(rows), &y, dropout),
            None => {
                let x = std::mem::take(&mut self.x);
                let g = self.net.gradients(&x, &y, dropout, first, false);
                self.x = x;
                g
            }
        };
        let f = self.lr_factor();
        let mut lrs = Vec::new();
        for l in 0..self.net.layers.len() {
            let lr = if l >= first { self.p.lr_conv * f } else { 0.0 };
            lrs.extend([lr as f32; 2]);
        }
        lrs.extend([(self.p.lr_head * f) as f32; 2]);
        self.opt.step(self.net.params_mut(), g.slices(), &lrs);
        self.net.parameters_changed();
        self.step += 1;
        Ok((g.loss, g.correct))
    }

    fn validate(&mut self) -> nn_train::Result<(f64, f64)> {
        let (h, w, _) = self.val.map;
        let probs = match self.frozen_features(false) {
            Some(f) => f.val_probabilities(&self.net),
            None => probabilities(&self.net.resized(h, w), self.val),
        }
        .map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            nn_train::Error::Invalid(m)
        })?;
        let e = evaluation(probs, self.net.head.k, &self.val.labels);
        Ok((e.loss, e.accuracy))
    }

    fn weights(&self) -> nn_train::Result<Weights> {
        weights_of(&self.net)
    }
}

/// The network's parameters as stored in the model artifact.
pub fn weights_of(net: &TopNet) -> nn_train::Result<Weights> {
    let mut w = Weights::default();
    for l in &net.layers {
        let s = l.shape;
        w.push(
            &format!("{}.kernel", l.name),
            &[3, 3, s.c, s.o],
            l.kernel.clone(),
        )?;
        w.push(&format!("{}.bias", l.name), &[s.o], l.bias.clone())?;
    }
    let h = &net.head;
    w.push("head.weight", &[h.d, h.k], h.weight.clone())?;
    w.push("head.bias", &[h.k], h.bias.clone())?;
    Ok(w)
}

/// Puts stored weights (see [`weights_of`]) into `net`.
fn load_weights(net: &mut TopNet, w: &Weights) -> nn_train::Result<()> {
    for l in &mut net.layers {
        l.kernel = w.get(&format!("{}.kernel", l.name))?.data.clone();
        l.bias = w.get(&format!("{}.bias", l.name))?.data.clone();
    }
    net.head.weight = w.get("head.weight")?.data.clone();
    net.head.bias = w.get("head.bias")?.data.clone();
    net.parameters_changed();
    Ok(())
}

/// The stage.
pub struct Finetune;

impl Stage for Finetune {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::FINETUNE
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[
            outputs::MODEL,
            outputs::HISTORY,
            outputs::PREDICTIONS,
            outputs::VALIDATION_PREDICTIONS,
        ]
    }
    /// Shuffling and dropout draw from the seed.
    fn uses_seed(
        &self,
        _: &std::collections::BTreeMap<String, Option<std::path::PathBuf>>,
    ) -> bool {
        true
    }
    fn uses_device(&self) -> bool {
        true
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let wpath = ctx
            .setting("weights.path")?
            .ok_or("`weights.path` is empty: fine-tuning starts from the VGG16 weights")?;
        let open = |split: &str| -> Result<SplitMaps, BoxError> {
            let r: FeaturesReader<'_> = slots::activations(split).read(ctx)?;
            SplitMaps::open(&r, &format!("{}.{split}", ids::VGG_ACTIVATIONS))
        };
        let tr_reader: FeaturesReader<'_> = slots::activations(outputs::TRAINING).read(ctx)?;
        let stored = tr_reader
            .layout()
            .and_then(layer_of_layout)
            .ok_or("vgg-activations.training does not say which layer it stores")?
            .to_string();
        let (classes, k) =
            nn_train::class_list(&slots::activations(outputs::TRAINING).input(ctx)?)?;
        let train = SplitMaps::open(
            &tr_reader,
            &format!("{}.{}", ids::VGG_ACTIVATIONS, outputs::TRAINING),
        )?;
        let val = open(outputs::VALIDATION)?;
        let eval = open(outputs::EVALUATION)?;
        if train.images() == 0 || val.images() == 0 {
            return Err("fine-tuning needs training and validation images".into());
        }
        let pool = match p.train_on {
            TrainOn::Training => Pool::new(vec![&train])?,
            TrainOn::TrainingAndValidation => {
                ctx.progress().println(format!(
                    "{}: training on the training and validation images: the validation numbers show fit, not generalisation",
                    ctx.stage()
                ));
                Pool::new(vec![&train, &val])?
            }
        };
        let (weights, digest) = read_vgg16(wpath)?;
        if tr_reader.weights_digest() != Some(digest.as_str()) {
            return Err(format!(
                "the stored activations were computed with other weights than {} (data digest {}); the network would not continue them",
                wpath.display(),
                &digest[..16]
            )
            .into());
        }
        let (layers, first_trained) =
            pretrained_layers(&weights, &stored, train.map, &p.train_from)?;
        let seed = ctx.seed()?;
        let last = layers.last().expect("at least conv5_3").shape;
        let d = TopNet::feature_len(p.pooling, (last.h / 2, last.w / 2, last.o));
        // A zero head (as a logistic regression starts): pool5 averages reach the tens, so
        // random weights of Glorot's scale start with logits in the hundreds.
        let head = Head {
            pooling: p.pooling,
            d,
            k,
            weight: vec![0.0; d * k],
            bias: vec![0.0; k],
        };
        // The head-only epochs see only the pooled features of the ImageNet convolutions (with
        // random windows, each epoch's windows differ, so they run the convolutions).
        let frozen = if p.frozen_epochs > 0 && p.map_crop == 0 {
            let net = TopNet::new(layers.clone(), head.clone());
            FrozenFeatures::compute(ctx, &net, &pool, &val)?
        } else {
            None
        };
        let mut first: Option<nn_train::TrainOutput> = None;
        let (mut more_best, mut more_final) = (Vec::new(), Vec::new());
        let (mut val_probs, mut eval_probs) = (Vec::new(), Vec::new());
        let mut networks = 0;
        for m in 0..p.members {
            // Member `m` trains exactly as a single run with this seed would: the members of
            // seeds 1..=n are single runs 1..=n * members, none shared.
            let member_seed = seed + (m * p.members) as u64;
            if p.members > 1 {
                ctx.progress().println(format!(
                    "{}: member {} of {} (the training draws of seed {member_seed})",
                    ctx.stage(),
                    m + 1,
                    p.members
                ));
            }
            let (out, nets) = train_member(
                ctx,
                &p,
                (layers.clone(), head.clone(), first_trained),
                (&pool, &val, frozen.as_ref()),
                &stored,
                member_seed,
            )?;
            networks += nets.len();
            for net in &nets {
                add_probs(&mut eval_probs, probabilities(net, &eval)?);
                add_probs(&mut val_probs, probabilities(net, &val)?);
            }
            if m == 0 {
                first = Some(out);
            } else {
                let prefixed = |w: &Weights| -> Vec<NamedTensor> {
                    w.tensors
                        .iter()
                        .map(|t| NamedTensor {
                            name: format!("{}{}", member_prefix(m), t.name),
                            ..t.clone()
                        })
                        .collect()
                };
                more_best.extend(prefixed(&out.best_weights));
                more_final.extend(prefixed(&out.final_weights));
            }
        }
        // Networks averaged: each member's one or two weight sets (`evaluate = "both"`).
        if networks > 1 {
            let n = networks as f32;
            eval_probs
                .iter_mut()
                .chain(&mut val_probs)
                .for_each(|q| *q /= n);
        }
        // Member 0's history, best epoch and tensors as a single run's; the other members'
        // tensors after them, prefixed.
        let mut out = first.expect("at least one member");
        out.best_weights.tensors.extend(more_best);
        out.final_weights.tensors.extend(more_final);
        let e = evaluation(eval_probs, k, &eval.labels);
        nn_train::write_outputs(
            ctx,
            &out,
            p.evaluate,
            &e,
            &eval.labels,
            &eval.index,
            &classes,
        )?;
        let v = evaluation(val_probs, k, &val.labels);
        Predictions {
            pred: v.prediction.predictions.iter().map(|&c| c as i64).collect(),
            labels: val.labels.iter().map(|&c| c as i64).collect(),
            probs: v.prediction.probabilities,
            n_classes: k,
            index: val.index.clone(),
        }
        .write_validation(ctx, &classes)?;
        Ok(())
    }
}

/// The prefix of member `m`'s tensors in the model (none for the first member).
pub(crate) fn member_prefix(m: usize) -> String {
    if m == 0 {
        String::new()
    } else {
        format!("member{m}.")
    }
}

/// Adds `q` onto the running sum `acc` (empty: the first member).
pub(crate) fn add_probs(acc: &mut Vec<f32>, q: Vec<f32>) {
    if acc.is_empty() {
        *acc = q;
    } else {
        acc.iter_mut().zip(&q).for_each(|(a, q)| *a += q);
    }
}

/// Trains one network (`layers` from the ImageNet weights, `head`, training from layer
/// `first_trained`) with the random draws of `seed`; its training record and the network with
/// the weights `p.evaluate` selects (two networks for `both`: the best weights, then the
/// final ones), for the stored maps' size. `splits`: the training rows, the validation split
/// and, when computed, the head-only epochs' features.
fn train_member(
    ctx: &StageContext<'_>,
    p: &Params,
    net_parts: (Vec<Layer>, Head, usize),
    splits: (&Pool<'_>, &SplitMaps, Option<&FrozenFeatures>),
    stored: &str,
    seed: u64,
) -> Result<(nn_train::TrainOutput, Vec<TopNet>), BoxError> {
    let (layers, head, first_trained) = net_parts;
    let (train, val, frozen) = splits;
    let mut full = TopNet::new(layers, head);
    full.label_smoothing = p.label_smoothing as f32;
    let map = train.map();
    let net = match p.map_crop {
        0 => full,
        c if c <= map.0.min(map.1) => full.resized(c, c),
        c => return Err(format!("map_crop {c} is larger than the stored {map:?} maps").into()),
    };
    let rows = train.images() * train.views();
    let steps_per_epoch = rows.div_ceil(p.batch_size);
    ctx.progress().println(format!(
        "{}: training {} from stored {stored} maps {:?}: {} images x {} views, {} epochs ({} head only)",
        ctx.stage(),
        net.layers[first_trained..]
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        map,
        train.images(),
        train.views(),
        p.epochs,
        p.frozen_epochs
    ));
    let mut t = Trainer {
        net,
        opt: match p.optimizer {
            OptimizerKind::Sgd => {
                Optimizer::Sgd(Sgd::new(p.momentum as f32, p.weight_decay as f32))
            }
            OptimizerKind::Adamw => Optimizer::AdamW(AdamW::new(p.weight_decay as f32)),
        },
        p,
        train,
        val,
        frozen,
        first_trained,
        dropout_rng: Rng::new(seed, nn_train::STREAM_DROPOUT),
        crop_rng: Rng::new(seed, STREAM_CROP),
        step: 0,
        steps_per_epoch,
        x: Vec::new(),
        error: None,
    };
    let cfg = FitConfig {
        epochs: p.epochs,
        batch_size: p.batch_size,
        learning_rate: p.lr_conv,
        patience: p.patience,
    };
    let out = nn_train::fit(
        &mut t,
        rows,
        cfg,
        &mut Rng::new(seed, nn_train::STREAM_SHUFFLE),
        &mut nn_train::EpochProgress::new(ctx),
    )
    .map_err(|e| match t.error.take() {
        Some(inner) => inner,
        None => format!("{e} (stage `{}`)", ctx.stage()).into(),
    })?;
    let mut nets = Vec::new();
    for w in out.selected(p.evaluate) {
        let mut n = t.net.resized(map.0, map.1);
        load_weights(&mut n, w)?;
        nets.push(n);
    }
    Ok((out, nets))
}
