//! The trainable top of VGG16 (its last convolutions and pool5) and a head (pooling, dropout,
//! dense softmax), with the backward pass and SGD with momentum.

use serde::{Deserialize, Serialize};
use vgg_extract::kernels::Isa;

use crate::conv::{self, Kernel, Shape};
use rayon::prelude::*;

/// How the head pools the pool5 maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Global average: one value per channel.
    Avg,
    /// Averages over a 3x3 grid of overlapping cells (PyTorch's adaptive average pooling to
    /// 3x3): nine values per channel, the layout `describe`'s `pool5.avg3x3` uses.
    Avg3x3,
}

impl Pooling {
    /// The cells over an `h x w` map, each `(y0, y1, x0, x1)`.
    fn cells(self, h: usize, w: usize) -> Vec<(usize, usize, usize, usize)> {
        match self {
            Pooling::Avg => vec![(0, h, 0, w)],
            Pooling::Avg3x3 => {
                let edge = |i: usize, n: usize| (i * n / 3, ((i + 1) * n).div_ceil(3));
                let mut v = Vec::with_capacity(9);
                for gy in 0..3 {
                    for gx in 0..3 {
                        let ((y0, y1), (x0, x1)) = (edge(gy, h), edge(gx, w));
                        v.push((y0, y1, x0, x1));
                    }
                }
                v
            }
        }
    }
}

/// One trainable convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Its VGG name (`conv5_3`).
    pub name: String,
    pub shape: Shape,
    /// `3 x 3 x c x o` (HWIO), i.e. the `9c x o` matrix of [`conv`].
    pub kernel: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Layer {
    /// From PyTorch's `[o, c, 3, 3]` layout.
    pub fn from_torch(name: &str, shape: Shape, weight: &[f32], bias: &[f32]) -> Layer {
        let (c, o) = (shape.c, shape.o);
        assert_eq!(weight.len(), o * c * 9);
        let mut kernel = vec![0.0; 9 * c * o];
        for f in 0..o {
            for ch in 0..c {
                for t in 0..9 {
                    kernel[(t * c + ch) * o + f] = weight[(f * c + ch) * 9 + t];
                }
            }
        }
        Layer {
            name: name.to_string(),
            shape,
            kernel,
            bias: bias.to_vec(),
        }
    }
}

/// The dense softmax layer on the pooled features.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub pooling: Pooling,
    /// Input features.
    pub d: usize,
    /// Classes.
    pub k: usize,
    /// `d x k`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The gradients of every parameter for one batch, and the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    /// Per layer: kernel (`9c x o`) and bias.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Head weight (`d x k`) and bias.
    pub head: (Vec<f32>, Vec<f32>),
    /// The gradient of the first layer's input (`n x h x w x c`), when asked for.
    pub input: Option<Vec<f32>>,
    /// The training loss summed over the rows: cross-entropy, label-smoothed when
    /// [`TopNet::label_smoothing`] is above 0.
    pub loss: f64,
    /// Rows classified correctly by the forward pass.
    pub correct: usize,
}

impl Grads {
    /// Every gradient in [`TopNet::params_mut`]'s order (empty for a frozen layer), for an
    /// optimiser step.
    pub fn slices(&self) -> Vec<&[f32]> {
        let mut v: Vec<&[f32]> = Vec::with_capacity(2 * self.layers.len() + 2);
        for (k, b) in &self.layers {
            v.push(k);
            v.push(b);
        }
        v.push(&self.head.0);
        v.push(&self.head.1);
        v
    }
}

/// What a forward pass keeps for the backward pass.
struct Forward {
    /// Each layer's output (after ReLU).
    acts: Vec<Vec<f32>>,
    /// pool5, `n x ph x pw x o`, and the window position of each maximum.
    pooled: Vec<f32>,
    argmax: Vec<u8>,
    /// `n x d` pooled features (after dropout when training).
    feats: Vec<f32>,
    logits: Vec<f32>,
}

/// The top convolutions of VGG16, pool5 and the head.
pub struct TopNet {
    pub layers: Vec<Layer>,
    pub head: Head,
    /// Label smoothing `e` of the training loss in [`gradients`](Self::gradients): the target
    /// is `1 - e` on the label plus `e / k` on every class (PyTorch's `label_smoothing`); 0 by
    /// default.
    pub label_smoothing: f32,
    isa: Isa,
    packed: Vec<Kernel>,
}

impl TopNet {
    /// A network of `layers` (the first reads the stored maps) and `head`.
    pub fn new(layers: Vec<Layer>, head: Head) -> TopNet {
        Self::with_isa(Isa::detect(), layers, head)
    }

    /// As [`new`](Self::new), on a given instruction set (tests compare them).
    pub fn with_isa(isa: Isa, layers: Vec<Layer>, head: Head) -> TopNet {
        let mut t = TopNet {
            layers,
            head,
            label_smoothing: 0.0,
            isa,
            packed: Vec::new(),
        };
        t.repack();
        t
    }

    fn repack(&mut self) {
        if self.packed.len() == self.layers.len() {
            for (k, l) in self.packed.iter_mut().zip(&self.layers) {
                k.update(&l.kernel);
            }
        } else {
            self.packed = self
                .layers
                .iter()
                .map(|l| Kernel::new(self.isa, l.shape, &l.kernel))
                .collect();
        }
    }

    /// The same network (the same parameters) for `h x w` input maps.
    pub fn resized(&self, h: usize, w: usize) -> TopNet {
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                shape: Shape { h, w, ..l.shape },
                ..l.clone()
            })
            .collect();
        let (_, _, c) = self.pool_shape();
        let head = Head {
            d: TopNet::feature_len(self.head.pooling, (h / 2, w / 2, c)),
            ..self.head.clone()
        };
        assert_eq!(
            head.d, self.head.d,
            "the head's width depends on the map size"
        );
        TopNet {
            label_smoothing: self.label_smoothing,
            ..TopNet::with_isa(self.isa, layers, head)
        }
    }

    /// Values of one input map.
    pub fn input_len(&self) -> usize {
        self.layers[0].shape.input_len()
    }

    /// pool5's `(h, w, c)`.
    pub fn pool_shape(&self) -> (usize, usize, usize) {
        let s = self.layers.last().expect("at least one layer").shape;
        (s.h / 2, s.w / 2, s.o)
    }

    /// Pooled features per image: `cells * c`.
    pub fn feature_len(pooling: Pooling, (ph, pw, c): (usize, usize, usize)) -> usize {
        pooling.cells(ph, pw).len() * c
    }

    fn forward(&self, x: &[f32], n: usize, dropout: Option<(&[f32], f32)>) -> Forward {
        let mut acts: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        for (l, (layer, packed)) in self.layers.iter().zip(&self.packed).enumerate() {
            let input = if l == 0 { x } else { &acts[l - 1] };
            let mut y = vec![0.0f32; n * layer.shape.output_len()];
            conv::forward(layer.shape, input, n, packed, &layer.bias, &mut y);
            acts.push(y);
        }
        let s = self.layers.last().expect("at least one layer").shape;
        let (ph, pw, c) = self.pool_shape();
        let last = acts.last().expect("at least one layer");
        let mut pooled = vec![0.0f32; n * ph * pw * c];
        let mut argmax = vec![0u8; pooled.len()];
        pooled
            .par_chunks_mut(ph * pw * c)
            .zip(argmax.par_chunks_mut(ph * pw * c))
            .zip(last.par_chunks_exact(s.output_len()))
            .for_each(|((pooled, argmax), y)| {
                for py in 0..ph {
                    for px in 0..pw {
                        let base = ((2 * py) * s.w + 2 * px) * c;
                        let offs = [base, base + c, base + s.w * c, base + s.w * c + c];
                        let q = (py * pw + px) * c;
                        for ch in 0..c {
                            let (mut best, mut at) = (y[offs[0] + ch], 0u8);
                            for (j, &off) in offs.iter().enumerate().skip(1) {
                                if y[off + ch] > best {
                                    (best, at) = (y[off + ch], j as u8);
                                }
                            }
                            pooled[q + ch] = best;
                            argmax[q + ch] = at;
                        }
                    }
                }
            });
        let cells = self.head.pooling.cells(ph, pw);
        let d = cells.len() * c;
        let mut feats = vec![0.0f32; n * d];
        for i in 0..n {
            let map = &pooled[i * ph * pw * c..][..ph * pw * c];
            for (ci, &(y0, y1, x0, x1)) in cells.iter().enumerate() {
                let f = &mut feats[i * d + ci * c..][..c];
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        for (f, v) in f.iter_mut().zip(&map[(yy * pw + xx) * c..][..c]) {
                            *f += v;
                        }
                    }
                }
                let area = ((y1 - y0) * (x1 - x0)) as f32;
                f.iter_mut().for_each(|v| *v /= area);
            }
        }
        apply_dropout(&mut feats, dropout);
        let logits = self.head_logits(&feats, n);
        Forward {
            acts,
            pooled,
            argmax,
            feats,
            logits,
        }
    }

    /// The head's logits (`n x k`) of `n` rows of pooled features (`n x d`).
    pub fn head_logits(&self, feats: &[f32], n: usize) -> Vec<f32> {
        let (d, k) = (self.head.d, self.head.k);
        let mut logits = Vec::with_capacity(n * k);
        for f in feats.chunks_exact(d) {
            let mut row = self.head.bias.clone();
            for (j, &v) in f.iter().enumerate() {
                if v != 0.0 {
                    for (r, w) in row.iter_mut().zip(&self.head.weight[j * k..][..k]) {
                        *r += v * w;
                    }
                }
            }
            logits.extend(row);
        }
        logits
    }

    /// Logits (`n x k`) of `n` stored maps, without dropout.
    pub fn logits(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.forward(x, n, None).logits
    }

    /// The head's input (`n x d` pooled features, before dropout) for `n` stored maps. Each
    /// row depends on its own map alone, not on the others of the batch (the convolutions,
    /// pool5 and the pooling are per tile and per image), so rows computed in any batches are
    /// the same bits.
    pub fn features(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.forward(x, n, None).feats
    }

    /// [`gradients`](Self::gradients) with no convolution trained (`first_trained` past the
    /// last layer), from the rows' [`features`](Self::features) instead of their maps: the
    /// same loss, head gradients and counts, bit for bit, without the convolutions' forward
    /// pass (the head-only epochs, whose convolutions keep the weights the features were
    /// computed with).
    pub fn head_gradients(
        &self,
        feats: &[f32],
        y: &[u32],
        dropout: Option<(&[f32], f32)>,
    ) -> Grads {
        let n = y.len();
        assert_eq!(feats.len(), n * self.head.d);
        let mut feats = feats.to_vec();
        apply_dropout(&mut feats, dropout);
        let logits = self.head_logits(&feats, n);
        let (head, _, loss, correct) = self.head_backward(&feats, &logits, y, dropout);
        Grads {
            layers: vec![(Vec::new(), Vec::new()); self.layers.len()],
            head,
            input: None,
            loss,
            correct,
        }
    }

    /// pool5 maps (`n x ph x pw x c`) of `n` stored maps: VGG16's features when the layers
    /// hold the ImageNet weights.
    pub fn pool5(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.forward(x, n, None).pooled
    }

    /// The loss and every gradient for rows `x` (`n` maps) with labels `y`; `dropout` is the
    /// keep mask (`n x d` of 0/1) and the drop rate. Layers before `first_trained` get no
    /// gradient (empty vectors), and the backward pass stops above them.
    pub fn gradients(
        &self,
        x: &[f32],
        y: &[u32],
        dropout: Option<(&[f32], f32)>,
        first_trained: usize,
        want_input: bool,
    ) -> Grads {
        let n = y.len();
        let fwd = self.forward(x, n, dropout);
        let (head, dfeat, loss, correct) = self.head_backward(&fwd.feats, &fwd.logits, y, dropout);
        let d = self.head.d;
        let mut grads = Grads {
            layers: vec![(Vec::new(), Vec::new()); self.layers.len()],
            head,
            input: None,
            loss,
            correct,
        };
        if first_trained >= self.layers.len() && !want_input {
            return grads;
        }
        // Pooled features -> pool5 -> the last layer's output.
        let (ph, pw, c) = self.pool_shape();
        let s = self.layers.last().expect("at least one layer").shape;
        let cells = self.head.pooling.cells(ph, pw);
        let mut gy = vec![0.0f32; n * s.output_len()];
        gy.par_chunks_mut(s.output_len())
            .enumerate()
            .for_each(|(i, gy)| {
                for (ci, &(y0, y1, x0, x1)) in cells.iter().enumerate() {
                    let area = ((y1 - y0) * (x1 - x0)) as f32;
                    let g = &dfeat[i * d + ci * c..][..c];
                    for yy in y0..y1 {
                        for xx in x0..x1 {
                            let q = ((i * ph + yy) * pw + xx) * c;
                            for ch in 0..c {
                                let at = fwd.argmax[q + ch] as usize;
                                let (oy, ox) = (2 * yy + at / 2, 2 * xx + at % 2);
                                gy[(oy * s.w + ox) * c + ch] += g[ch] / area;
                            }
                        }
                    }
                }
            });
        let stop = if want_input { 0 } else { first_trained };
        for l in (stop..self.layers.len()).rev() {
            let layer = &self.layers[l];
            let input = if l == 0 { x } else { &fwd.acts[l - 1] };
            let need_dx = l > stop || (l == 0 && want_input);
            let g = conv::backward(
                layer.shape,
                input,
                &fwd.acts[l],
                &gy,
                n,
                &self.packed[l],
                need_dx,
            );
            if l >= first_trained {
                grads.layers[l] = (g.kernel, g.bias);
            }
            match g.input {
                Some(dx) if l == 0 => grads.input = Some(dx),
                Some(dx) => gy = dx,
                None => {}
            }
        }
        grads
    }

    /// The loss, correct count and head gradients of rows whose (dropped-out) features and
    /// logits are given, and the gradient of those features (masked and scaled as dropout
    /// was).
    #[allow(clippy::type_complexity)]
    fn head_backward(
        &self,
        feats: &[f32],
        logits: &[f32],
        y: &[u32],
        dropout: Option<(&[f32], f32)>,
    ) -> ((Vec<f32>, Vec<f32>), Vec<f32>, f64, usize) {
        let n = y.len();
        let (d, k) = (self.head.d, self.head.k);
        let mut dlogits = vec![0.0f32; n * k];
        let (mut loss, mut correct) = (0.0f64, 0usize);
        let e = self.label_smoothing;
        for i in 0..n {
            let row = &logits[i * k..][..k];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
            let yi = y[i] as usize;
            loss += z.ln() - (row[yi] - m) as f64;
            if e > 0.0 {
                // (1 - e) cross-entropy + e times the mean over the classes of -log p.
                let mean: f64 = row.iter().map(|&v| (v - m) as f64).sum::<f64>() / k as f64;
                loss += e as f64 * ((row[yi] - m) as f64 - mean);
            }
            let best = (0..k).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            correct += usize::from(best == yi);
            for j in 0..k {
                let p = (((row[j] - m) as f64).exp() / z) as f32;
                let target = if e > 0.0 {
                    (1.0 - e) * f32::from(j == yi) + e / k as f32
                } else {
                    f32::from(j == yi)
                };
                dlogits[i * k + j] = (p - target) / n as f32;
            }
        }
        let mut dhw = vec![0.0f32; d * k];
        let mut dhb = vec![0.0f32; k];
        let mut dfeat = vec![0.0f32; n * d];
        for i in 0..n {
            let g = &dlogits[i * k..][..k];
            for (b, v) in dhb.iter_mut().zip(g) {
                *b += v;
            }
            let f = &feats[i * d..][..d];
            for j in 0..d {
                let w = &self.head.weight[j * k..][..k];
                let mut acc = 0.0f32;
                for c in 0..k {
                    dhw[j * k + c] += f[j] * g[c];
                    acc += w[c] * g[c];
                }
                dfeat[i * d + j] = acc;
            }
        }
        apply_dropout(&mut dfeat, dropout);
        ((dhw, dhb), dfeat, loss, correct)
    }

    /// Every parameter, in a fixed order: each layer's kernel and bias, then the head's.
    pub fn params_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut v: Vec<&mut Vec<f32>> = Vec::new();
        for l in &mut self.layers {
            v.push(&mut l.kernel);
            v.push(&mut l.bias);
        }
        v.push(&mut self.head.weight);
        v.push(&mut self.head.bias);
        v
    }

    /// Called after the parameters changed.
    pub fn parameters_changed(&mut self) {
        self.repack();
    }
}

/// Dropout on pooled features or their gradient: each value times its keep mask (0 or 1)
/// over the keep rate.
fn apply_dropout(feats: &mut [f32], dropout: Option<(&[f32], f32)>) {
    if let Some((mask, p)) = dropout {
        let scale = 1.0 / (1.0 - p);
        for (f, m) in feats.iter_mut().zip(mask) {
            *f *= m * scale;
        }
    }
}

/// SGD with momentum and weight decay, as PyTorch's `torch.optim.SGD` (dampening 0, not
/// Nesterov): `g += wd * w; buf = momentum * buf + g` (`buf = g` on the first step);
/// `w -= lr * buf`.
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    bufs: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32) -> Sgd {
        Sgd {
            momentum,
            weight_decay,
            bufs: Vec::new(),
        }
    }

    /// One step; `lrs[i]` is parameter `i`'s learning rate (0 with an empty gradient: frozen).
    pub fn step(&mut self, params: Vec<&mut Vec<f32>>, grads: Vec<&[f32]>, lrs: &[f32]) {
        if self.bufs.len() < params.len() {
            self.bufs.resize(params.len(), None);
        }
        for (i, (w, g)) in params.into_iter().zip(grads).enumerate() {
            if g.is_empty() || lrs[i] == 0.0 {
                continue;
            }
            let (mom, wd, lr) = (self.momentum, self.weight_decay, lrs[i]);
            match &mut self.bufs[i] {
                Some(buf) => {
                    // Element-wise, so the chunks change nothing but the speed.
                    w.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .zip(buf.par_chunks_mut(CHUNK))
                        .for_each(|((w, g), buf)| {
                            for ((w, &g), b) in w.iter_mut().zip(g).zip(buf.iter_mut()) {
                                *b = mom * *b + (g + wd * *w);
                                *w -= lr * *b;
                            }
                        });
                }
                slot @ None => {
                    let mut buf = Vec::with_capacity(w.len());
                    for (w, &g) in w.iter_mut().zip(g) {
                        let b = g + wd * *w;
                        buf.push(b);
                        *w -= lr * b;
                    }
                    *slot = Some(buf);
                }
            }
        }
    }
}

/// Parameters per parallel task of an optimiser step.
const CHUNK: usize = 1 << 16;

/// A parameter's AdamW state: its step count and first and second moments.
type Moments = (u32, Vec<f32>, Vec<f32>);

/// AdamW as PyTorch's `torch.optim.AdamW` (not amsgrad): `w *= 1 - lr * wd`;
/// `m = b1 m + (1 - b1) g`; `v = b2 v + (1 - b2) g^2`;
/// `w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`, `t` counting each parameter's
/// own steps.
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    state: Vec<Option<Moments>>,
}

impl AdamW {
    pub fn new(weight_decay: f32) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            state: Vec::new(),
        }
    }

    /// One step; `lrs[i]` is parameter `i`'s learning rate (0 with an empty gradient: frozen).
    pub fn step(&mut self, params: Vec<&mut Vec<f32>>, grads: Vec<&[f32]>, lrs: &[f32]) {
        if self.state.len() < params.len() {
            self.state.resize(params.len(), None);
        }
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        for (i, (w, g)) in params.into_iter().zip(grads).enumerate() {
            if g.is_empty() || lrs[i] == 0.0 {
                continue;
            }
            let lr = lrs[i];
            let (t, m, v) =
                self.state[i].get_or_insert_with(|| (0, vec![0.0; w.len()], vec![0.0; w.len()]));
            *t += 1;
            let c1 = 1.0 - b1.powi(*t as i32);
            let c2 = (1.0 - b2.powi(*t as i32)).sqrt();
            // Element-wise, so the chunks change nothing but the speed.
            w.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((w, g), m), v)| {
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                    {
                        *w *= 1.0 - lr * wd;
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        *w -= lr * (*m / c1) / (v.sqrt() / c2 + eps);
                    }
                });
        }
    }
}

/// The optimiser a fine-tuning run uses.
pub enum Optimizer {
    Sgd(Sgd),
    AdamW(AdamW),
}

impl Optimizer {
    pub fn step(&mut self, params: Vec<&mut Vec<f32>>, grads: Vec<&[f32]>, lrs: &[f32]) {
        match self {
            Optimizer::Sgd(o) => o.step(params, grads, lrs),
            Optimizer::AdamW(o) => o.step(params, grads, lrs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Two convolutions on 6x6 maps (odd channel counts) and a head.
    fn net(pooling: Pooling) -> TopNet {
        let shapes = [
            Shape {
                h: 6,
                w: 6,
                c: 5,
                o: 7,
            },
            Shape {
                h: 6,
                w: 6,
                c: 7,
                o: 6,
            },
        ];
        let layers = shapes
            .iter()
            .enumerate()
            .map(|(i, &shape)| Layer {
                name: format!("conv{i}"),
                shape,
                kernel: values(shape.kernel_len(), i as u64 + 1),
                bias: values(shape.o, i as u64 + 10),
            })
            .collect();
        let (d, k) = (TopNet::feature_len(pooling, (3, 3, 6)), 4);
        let head = Head {
            pooling,
            d,
            k,
            weight: values(d * k, 20),
            bias: values(k, 21),
        };
        TopNet::new(layers, head)
    }

    fn bits(g: &Grads) -> (Vec<u32>, Vec<u32>, u64, usize) {
        let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (b(&g.head.0), b(&g.head.1), g.loss.to_bits(), g.correct)
    }

    #[test]
    fn head_gradients_from_features_are_gradients_with_no_convolution_trained() {
        for pooling in [Pooling::Avg, Pooling::Avg3x3] {
            let mut net = net(pooling);
            net.label_smoothing = 0.1;
            let (n, len, d) = (5, net.input_len(), net.head.d);
            let x: Vec<f32> = values(n * len, 3).iter().map(|v| 4.0 * v.abs()).collect();
            let y = [0, 1, 2, 3, 1];
            let feats = net.features(&x, n);
            assert_eq!(feats.len(), n * d);
            // Rows computed in other batches are the same bits.
            let mut parts = net.features(&x[..2 * len], 2);
            parts.extend(net.features(&x[2 * len..], 3));
            assert!(
                parts
                    .iter()
                    .zip(&feats)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{pooling:?}: features depend on the batch"
            );
            let mask: Vec<f32> = values(n * d, 4)
                .iter()
                .map(|v| f32::from(*v >= -0.3))
                .collect();
            for dropout in [None, Some((&mask[..], 0.2))] {
                let want = net.gradients(&x, &y, dropout, net.layers.len(), false);
                let got = net.head_gradients(&feats, &y, dropout);
                assert!(got.layers.iter().all(|(k, b)| k.is_empty() && b.is_empty()));
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{pooling:?}, dropout {}",
                    dropout.is_some()
                );
                assert!(want.loss > 0.0 && want.head.0.iter().any(|v| *v != 0.0));
            }
            let logits = net.logits(&x, n);
            let from_feats = net.head_logits(&feats, n);
            assert!(logits
                .iter()
                .zip(&from_feats)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
