//! The scratch CNN's parameters, forward pass and optimisation step.

use crate::trunk::{self, TrunkOp, TrunkShape};
use crate::{Error, Params, Result};
use candle_core::{DType, Device, Tensor, Var};
use nn_train::{glorot_uniform, Adam, Rng, Weights, STREAM_INIT};
use std::sync::Arc;

/// The CNN `[conv 3x3 valid + ReLU + max-pool 2x2] x L -> global average pool -> dense(ReLU) ->
/// dense(n_classes)` on caffe-transformed channels-last images, with its Adam state. Softmax is
/// folded into the loss; [`Cnn::logits`] returns pre-softmax values.
///
/// Weight names and layouts (Keras's): `conv{i}.kernel` (3, 3, C, O) and `conv{i}.bias` (O) for
/// i = 1..=L, `dense1.kernel` (O_L, units), `dense1.bias`, `dense2.kernel` (units, n_classes),
/// `dense2.bias`.
pub struct Cnn {
    shape: Arc<TrunkShape>,
    trunk: Var,
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
    n_classes: usize,
    adam: Adam,
}

fn var(data: Vec<f32>, shape: &[usize]) -> Result<Var> {
    Ok(Var::from_tensor(&Tensor::from_vec(
        data,
        shape,
        &Device::Cpu,
    )?)?)
}

fn trunk_shape(height: usize, width: usize, filters: &[usize]) -> Result<TrunkShape> {
    TrunkShape::new(height, width, 3, filters).ok_or_else(|| {
        Error::Invalid(format!(
            "{height}x{width} images are too small for {} conv+pool layers (need at least {}x{})",
            filters.len(),
            TrunkShape::min_side(filters.len()),
            TrunkShape::min_side(filters.len())
        ))
    })
}

impl Cnn {
    /// Glorot-uniform kernels (from the seed's initialisation stream, layer by layer), zero biases.
    pub fn new(
        height: usize,
        width: usize,
        n_classes: usize,
        params: &Params,
        seed: u64,
    ) -> Result<Self> {
        let shape = trunk_shape(height, width, &params.filters)?;
        let mut rng = Rng::new(seed, STREAM_INIT);
        let mut flat = Vec::with_capacity(shape.param_len());
        for s in &shape.layers {
            flat.extend(glorot_uniform(&mut rng, 9 * s.c, 9 * s.o, s.kernel_len()));
            flat.extend(std::iter::repeat_n(0.0, s.o));
        }
        let (d, u) = (shape.out_dim(), params.dense_units);
        let w1 = glorot_uniform(&mut rng, d, u, d * u);
        let w2 = glorot_uniform(&mut rng, u, n_classes, u * n_classes);
        Self::build(
            shape,
            flat,
            w1,
            vec![0.0; u],
            w2,
            vec![0.0; n_classes],
            params,
        )
    }

    /// A CNN with the given weights (see the type's doc) for `height` x `width` images, with a
    /// fresh Adam state from `params` (whose `filters` and `dense_units` are ignored: the
    /// weights' shapes decide).
    pub fn from_weights(
        weights: &Weights,
        height: usize,
        width: usize,
        params: &Params,
    ) -> Result<Self> {
        let mut filters = vec![];
        let mut flat = vec![];
        let mut c = 3;
        while let Ok(k) = weights.get_rank(&format!("conv{}.kernel", filters.len() + 1), 4) {
            let b = weights.get_rank(&format!("conv{}.bias", filters.len() + 1), 1)?;
            let o = k.shape[3];
            if k.shape[..3] != [3, 3, c] || b.shape[0] != o {
                return Err(Error::Weights(format!(
                    "conv{}: kernel {:?} bias {:?} after {c} channels",
                    filters.len() + 1,
                    k.shape,
                    b.shape
                )));
            }
            flat.extend_from_slice(&k.data);
            flat.extend_from_slice(&b.data);
            filters.push(o);
            c = o;
        }
        let shape = trunk_shape(height, width, &filters)?;
        let w1 = weights.get_rank("dense1.kernel", 2)?;
        let b1 = weights.get_rank("dense1.bias", 1)?;
        let w2 = weights.get_rank("dense2.kernel", 2)?;
        let b2 = weights.get_rank("dense2.bias", 1)?;
        let u = w1.shape[1];
        if w1.shape[0] != c || b1.shape[0] != u || w2.shape[0] != u || b2.shape[0] != w2.shape[1] {
            return Err(Error::Weights(format!(
                "dense shapes {:?} {:?} {:?} {:?} after {c} channels",
                w1.shape, b1.shape, w2.shape, b2.shape
            )));
        }
        let p = Params {
            filters,
            dense_units: u,
            ..params.clone()
        };
        Self::build(
            shape,
            flat,
            w1.data.clone(),
            b1.data.clone(),
            w2.data.clone(),
            b2.data.clone(),
            &p,
        )
    }

    fn build(
        shape: TrunkShape,
        flat: Vec<f32>,
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        params: &Params,
    ) -> Result<Self> {
        let (d, u, c) = (shape.out_dim(), params.dense_units, b2.len());
        let sizes = [flat.len(), d * u, u, u * c, c];
        Ok(Cnn {
            trunk: var(flat, &[shape.param_len()])?,
            shape: Arc::new(shape),
            w1: var(w1, &[d, u])?,
            b1: var(b1, &[u])?,
            w2: var(w2, &[u, c])?,
            b2: var(b2, &[c])?,
            n_classes: c,
            adam: Adam::new(params.adam, &sizes),
        })
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        [&self.trunk, &self.w1, &self.b1, &self.w2, &self.b2]
            .iter()
            .map(|v| v.elem_count())
            .sum()
    }

    fn batch_len(&self, images: &[f32]) -> Result<usize> {
        let s = self.shape.layers[0];
        let len = self.shape.input_len();
        if images.is_empty() || !images.len().is_multiple_of(len) {
            return Err(Error::Invalid(format!(
                "{} values are not whole {}x{}x{} images",
                images.len(),
                s.h,
                s.w,
                s.c
            )));
        }
        Ok(images.len() / len)
    }

    fn batch_tensor(&self, images: &[f32]) -> Result<Tensor> {
        let s = self.shape.layers[0];
        let n = self.batch_len(images)?;
        Ok(Tensor::from_slice(
            images,
            (n, s.h, s.w, s.c),
            &Device::Cpu,
        )?)
    }

    fn head(&self, feats: &Tensor) -> Result<Tensor> {
        let h = feats.matmul(&self.w1)?.broadcast_add(&self.b1)?.relu()?;
        Ok(h.matmul(&self.w2)?.broadcast_add(&self.b2)?)
    }

    fn train_graph(&self, images: &[f32], y: &[u32]) -> Result<(Tensor, Tensor)> {
        let x = self.batch_tensor(images)?;
        if x.dim(0)? != y.len() {
            return Err(Error::Invalid(format!(
                "{} images, {} labels",
                x.dim(0)?,
                y.len()
            )));
        }
        let op = TrunkOp::new(self.shape.clone(), true);
        let feats = x.apply_op2(self.trunk.as_tensor(), op)?;
        let logits = self.head(&feats)?;
        let yt = Tensor::from_slice(y, y.len(), &Device::Cpu)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &yt)?;
        Ok((logits, loss))
    }

    /// Loss and gradients of a batch without updating (for checks): returns the mean loss and
    /// the gradients in the order and layout of [`Cnn::weights`].
    pub fn gradients(&self, images: &[f32], y: &[u32]) -> Result<(f64, Weights)> {
        let (_, loss) = self.train_graph(images, y)?;
        let grads = loss.backward()?;
        let mut out = Weights::default();
        let names = self.weights()?;
        let mut flat_grads = vec![];
        for v in [&self.trunk, &self.w1, &self.b1, &self.w2, &self.b2] {
            let g = grads
                .get(v.as_tensor())
                .ok_or_else(|| Error::Invalid("a parameter got no gradient".into()))?;
            flat_grads.extend(g.flatten_all()?.to_vec1::<f32>()?);
        }
        let mut at = 0;
        for t in names.tensors {
            let n = t.data.len();
            out.push(&t.name, &t.shape, flat_grads[at..at + n].to_vec())?;
            at += n;
        }
        Ok((loss.to_scalar::<f32>()? as f64, out))
    }

    /// One Adam step on a batch of caffe-transformed images (B, H, W, 3) with labels `y` (B).
    /// Returns the summed cross-entropy and the number of correct rows, before the update.
    pub fn step(&mut self, images: &[f32], y: &[u32]) -> Result<(f64, usize)> {
        let (logits, loss) = self.train_graph(images, y)?;
        let pred = logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let correct = pred.iter().zip(y).filter(|(p, y)| p == y).count();
        let loss_value = loss.to_scalar::<f32>()? as f64 * y.len() as f64;
        let grads = loss.backward()?;
        let vars = [
            self.trunk.clone(),
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        ];
        self.adam.step_vars(&vars, &grads)?;
        Ok((loss_value, correct))
    }

    /// Logits (B, n_classes) of caffe-transformed images (B, H, W, 3).
    pub fn logits(&self, images: &[f32]) -> Result<Vec<f32>> {
        let n = self.batch_len(images)?;
        let params = self.trunk.as_tensor().to_vec1::<f32>()?;
        let feats = trunk::features(&self.shape, &params, images);
        let feats = Tensor::from_vec(feats, (n, self.shape.out_dim()), &Device::Cpu)?;
        Ok(self.head(&feats)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The current weights.
    pub fn weights(&self) -> Result<Weights> {
        let mut w = Weights::default();
        let flat = self.trunk.as_tensor().to_vec1::<f32>()?;
        for (i, (s, (k0, b0))) in self
            .shape
            .layers
            .iter()
            .zip(self.shape.offsets())
            .enumerate()
        {
            w.push(
                &format!("conv{}.kernel", i + 1),
                &[3, 3, s.c, s.o],
                flat[k0..b0].to_vec(),
            )?;
            w.push(
                &format!("conv{}.bias", i + 1),
                &[s.o],
                flat[b0..b0 + s.o].to_vec(),
            )?;
        }
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
