//! The head's parameters, forward pass and optimisation step (candle tensors on the CPU).

use crate::{Error, Params, Result};
use candle_core::{DType, Device, Tensor, Var};
use nn_train::{glorot_uniform, Adam, Rng, Weights, STREAM_INIT};

/// Rows per forward pass when computing logits without gradients.
const EVAL_ROWS: usize = 4096;

/// The dense head `dropout -> dense(hidden, relu) -> dense(n_classes)` on pooled features, with
/// its Adam state. Softmax is folded into the loss; [`Head::logits`] returns pre-softmax values.
///
/// Weight names and layouts (Keras's): `dense1.kernel` (D, hidden), `dense1.bias` (hidden),
/// `dense2.kernel` (hidden, n_classes), `dense2.bias` (n_classes).
pub struct Head {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
    dim: usize,
    n_classes: usize,
    dropout: f64,
    /// Decoupled weight decay of the kernels per step, as a fraction of the learning rate.
    weight_decay: f64,
    learning_rate: f64,
    label_smoothing: f64,
    adam: Adam,
}

fn var(data: Vec<f32>, shape: &[usize]) -> Result<Var> {
    Ok(Var::from_tensor(&Tensor::from_vec(
        data,
        shape,
        &Device::Cpu,
    )?)?)
}

impl Head {
    /// Glorot-uniform kernels (from the seed's initialisation stream), zero biases.
    pub fn new(dim: usize, n_classes: usize, params: &Params, seed: u64) -> Result<Self> {
        let h = params.hidden_units;
        let mut rng = Rng::new(seed, STREAM_INIT);
        let w1 = glorot_uniform(&mut rng, dim, h, dim * h);
        let w2 = glorot_uniform(&mut rng, h, n_classes, h * n_classes);
        Self::build(
            [w1, vec![0.0; h], w2, vec![0.0; n_classes]],
            (dim, h, n_classes),
            params,
        )
    }

    /// A head with the given weights (see the type's doc for names and shapes) and a fresh Adam
    /// state; `params` gives the dropout rate and Adam's settings.
    pub fn from_weights(weights: &Weights, params: &Params) -> Result<Self> {
        let w1 = weights.get_rank("dense1.kernel", 2)?;
        let b1 = weights.get_rank("dense1.bias", 1)?;
        let w2 = weights.get_rank("dense2.kernel", 2)?;
        let b2 = weights.get_rank("dense2.bias", 1)?;
        let (dim, h, c) = (w1.shape[0], w1.shape[1], w2.shape[1]);
        if b1.shape[0] != h || w2.shape[0] != h || b2.shape[0] != c {
            return Err(Error::Weights(format!(
                "inconsistent shapes {:?} {:?} {:?} {:?}",
                w1.shape, b1.shape, w2.shape, b2.shape
            )));
        }
        let p = Params {
            hidden_units: h,
            ..params.clone()
        };
        Self::build(
            [
                w1.data.clone(),
                b1.data.clone(),
                w2.data.clone(),
                b2.data.clone(),
            ],
            (dim, h, c),
            &p,
        )
    }

    /// From `[w1, b1, w2, b2]` and `(input dim, hidden units, classes)`.
    fn build(
        [w1, b1, w2, b2]: [Vec<f32>; 4],
        (dim, h, c): (usize, usize, usize),
        params: &Params,
    ) -> Result<Self> {
        let sizes = [dim * h, h, h * c, c];
        Ok(Head {
            w1: var(w1, &[dim, h])?,
            b1: var(b1, &[h])?,
            w2: var(w2, &[h, c])?,
            b2: var(b2, &[c])?,
            dim,
            n_classes: c,
            dropout: params.dropout,
            weight_decay: params.weight_decay,
            learning_rate: params.adam.learning_rate,
            label_smoothing: params.label_smoothing,
            adam: Adam::new(params.adam, &sizes),
        })
    }

    /// Features per row (D).
    pub fn input_dim(&self) -> usize {
        self.dim
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// An inverted-dropout mask for `rows` rows: each value is 0 with probability `dropout`,
    /// else 1 / (1 - dropout). `None` when the rate is 0.
    pub fn dropout_mask(&self, rows: usize, rng: &mut Rng) -> Option<Vec<f32>> {
        if self.dropout <= 0.0 {
            return None;
        }
        let p = self.dropout as f32;
        let keep = (1.0 / (1.0 - self.dropout)) as f32;
        Some(
            (0..rows * self.dim)
                .map(|_| if rng.next_f32() < p { 0.0 } else { keep })
                .collect(),
        )
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.matmul(&self.w1)?.broadcast_add(&self.b1)?.relu()?;
        Ok(h.matmul(&self.w2)?.broadcast_add(&self.b2)?)
    }

    /// One Adam step on a batch: `x` (B, D) row-major, labels `y` (B), and the dropout mask
    /// (B, D) multiplied into the input (`None`: no dropout). Returns the summed cross-entropy
    /// of the batch and the number of correct rows, both before the update.
    pub fn step(&mut self, x: &[f32], y: &[u32], mask: Option<&[f32]>) -> Result<(f64, usize)> {
        let b = y.len();
        if b == 0 || x.len() != b * self.dim || mask.is_some_and(|m| m.len() != x.len()) {
            return Err(Error::Invalid(format!(
                "batch of {} values, {b} labels, dim {}",
                x.len(),
                self.dim
            )));
        }
        let mut xt = Tensor::from_slice(x, (b, self.dim), &Device::Cpu)?;
        if let Some(m) = mask {
            xt = xt.mul(&Tensor::from_slice(m, (b, self.dim), &Device::Cpu)?)?;
        }
        let yt = Tensor::from_slice(y, b, &Device::Cpu)?;
        let logits = self.forward(&xt)?;
        let mut loss = candle_nn::loss::cross_entropy(&logits, &yt)?;
        if self.label_smoothing > 0.0 {
            // (1 - e) * cross-entropy + e * the cross-entropy against the uniform distribution
            // (the mean over rows and classes of -log p).
            let e = self.label_smoothing;
            let uniform = candle_nn::ops::log_softmax(&logits, 1)?.mean_all()?.neg()?;
            loss = (loss.affine(1.0 - e, 0.0)? + uniform.affine(e, 0.0)?)?;
        }
        let pred = logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let correct = pred.iter().zip(y).filter(|(p, y)| p == y).count();
        let loss_value = loss.to_scalar::<f32>()? as f64 * b as f64;
        let grads = loss.backward()?;
        let vars = [
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ];
        self.adam.step_vars(&vars, &grads)?;
        if self.weight_decay > 0.0 {
            // AdamW: the kernels shrink by lr * decay, apart from the gradient step.
            let keep = 1.0 - self.learning_rate * self.weight_decay;
            for w in [&self.w1, &self.w2] {
                w.set(&w.as_tensor().affine(keep, 0.0)?)?;
            }
        }
        Ok((loss_value, correct))
    }

    /// Logits (N, n_classes) of pooled features `x` (N, D), dropout off.
    pub fn logits(&self, x: &[f32]) -> Result<Vec<f32>> {
        if !x.len().is_multiple_of(self.dim) {
            return Err(Error::Invalid(format!(
                "{} values are not rows of {} features",
                x.len(),
                self.dim
            )));
        }
        let mut out = Vec::with_capacity(x.len() / self.dim * self.n_classes);
        for chunk in x.chunks(EVAL_ROWS * self.dim) {
            let t = Tensor::from_slice(chunk, (chunk.len() / self.dim, self.dim), &Device::Cpu)?;
            out.extend(self.forward(&t)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The current weights.
    pub fn weights(&self) -> Result<Weights> {
        let mut w = Weights::default();
        for (name, v) in [
            ("dense1.kernel", &self.w1),
            ("dense1.bias", &self.b1),
            ("dense2.kernel", &self.w2),
            ("dense2.bias", &self.b2),
        ] {
            w.push(name, v.dims(), v.flatten_all()?.to_vec1::<f32>()?)?;
        }
        Ok(w)
    }
}
