//! The configurable conv stack: layer list, weight loading, forward pass.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gemm::Isa;
use crate::im2col::{maxpool2x2, Im2col};
use crate::winograd::{Variant, Winograd};

/// One entry of a VGG-style layer list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerSpec {
    /// 3x3 convolution, stride 1, padding 1, with bias, followed by ReLU; the number is its
    /// output channel count.
    Conv(usize),
    /// 2x2 max-pool, stride 2 (odd sizes are floored, as PyTorch does).
    MaxPool,
}

use LayerSpec::{Conv, MaxPool};

/// VGG16's convolutional part (torchvision `vgg16().features`, Keras `include_top=False`).
pub const VGG16: &[LayerSpec] = &[
    Conv(64),
    Conv(64),
    MaxPool,
    Conv(128),
    Conv(128),
    MaxPool,
    Conv(256),
    Conv(256),
    Conv(256),
    MaxPool,
    Conv(512),
    Conv(512),
    Conv(512),
    MaxPool,
    Conv(512),
    Conv(512),
    Conv(512),
    MaxPool,
];

/// The VGG names of a layer list's layers, in order: `conv{block}_{i}` and `pool{block}`
/// (VGG16: `conv1_1` ... `conv5_3`, `pool5`).
pub fn layer_names(specs: &[LayerSpec]) -> Vec<String> {
    let (mut block, mut i) = (1, 1);
    specs
        .iter()
        .map(|s| match s {
            Conv(_) => {
                i += 1;
                format!("conv{block}_{}", i - 1)
            }
            MaxPool => {
                let name = format!("pool{block}");
                (block, i) = (block + 1, 1);
                name
            }
        })
        .collect()
}

/// Input channels of layers that take the im2col path instead of Winograd.
const IM2COL_MAX_C_IN: usize = 3;

/// The Winograd tile for a `c_in -> c_out` layer: F(4x4, 3x3) does 1.78x fewer
/// multiplications than F(2x2, 3x3), but its transformed weights are 2.25x larger (36 instead
/// of 16 values per filter), and every block of tiles streams all of them. Once they outgrow
/// a share of the last-level cache (VGG16's 512-output layers: 19-38 MB), F2 is faster.
fn winograd_variant(c_in: usize, c_out: usize) -> Variant {
    const F4_MAX_WEIGHT_BYTES: usize = 12 << 20;
    if 36 * 4 * c_in * c_out <= F4_MAX_WEIGHT_BYTES {
        Variant::F4
    } else {
        Variant::F2
    }
}

/// Images pushed through the whole stack together. Enough that the deep layers (few tiles
/// per image, 16 MB of transformed weights each) reuse every weight block over many tiles;
/// few enough to bound the two activation buffers to `2 x IMAGE_GROUP` times the largest
/// activation of one image (12.8 MB at 224 x 224), whatever the batch.
const IMAGE_GROUP: usize = 8;

/// Weights of one convolution in PyTorch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvWeights {
    /// `[out, in, 3, 3]`, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// The name and shape of one tensor a weights file must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

enum Op {
    Winograd { conv: Winograd, pool: bool },
    Im2col(Im2col),
    Pool,
}

/// A stack of 3x3 convolutions (+ ReLU) and 2x2 max-pools, VGG-style, on channels-last
/// (`NHWC`) `f32` activations, packed for this CPU.
pub struct ConvStack {
    in_channels: usize,
    specs: Vec<LayerSpec>,
    ops: Vec<Op>,
    /// For each entry of `specs`, the op that produces its output (a pool fused into the
    /// convolution before it maps to that convolution's op).
    op_of_spec: Vec<usize>,
    /// Activation buffers kept between forward calls (empty while a call holds them).
    buffers: Mutex<Vec<Vec<f32>>>,
}

impl std::fmt::Debug for ConvStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvStack")
            .field("in_channels", &self.in_channels)
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

fn check_config(in_channels: usize, specs: &[LayerSpec]) -> Result<()> {
    if in_channels == 0 {
        return Err(Error::InvalidConfig(
            "the input must have at least one channel".into(),
        ));
    }
    if specs.is_empty() {
        return Err(Error::InvalidConfig("the layer list is empty".into()));
    }
    if let Some(i) = specs.iter().position(|s| *s == Conv(0)) {
        return Err(Error::InvalidConfig(format!(
            "layer {i} is a convolution with no output channels"
        )));
    }
    Ok(())
}

impl ConvStack {
    /// The tensors a weights file must hold for this layer list, in layer order: for the
    /// convolution at position `i` of the torchvision-style `features` sequence (each
    /// convolution is followed by a ReLU that takes a position too, each pool takes one),
    /// `features.{i}.weight` `[out, in, 3, 3]` and `features.{i}.bias` `[out]`.
    pub fn tensor_specs(in_channels: usize, specs: &[LayerSpec]) -> Vec<TensorSpec> {
        let mut out = Vec::new();
        let (mut idx, mut c) = (0, in_channels);
        for s in specs {
            match *s {
                Conv(k) => {
                    out.push(TensorSpec {
                        name: format!("features.{idx}.weight"),
                        shape: vec![k, c, 3, 3],
                    });
                    out.push(TensorSpec {
                        name: format!("features.{idx}.bias"),
                        shape: vec![k],
                    });
                    idx += 2;
                    c = k;
                }
                MaxPool => idx += 1,
            }
        }
        out
    }

    /// VGG16 (3 input channels, [`VGG16`] layers) from a safetensors file such as the shared
    /// `vgg16_notop.safetensors`.
    pub fn vgg16_from_safetensors(path: &Path) -> Result<Self> {
        Self::from_safetensors(path, 3, VGG16)
    }

    /// A network from a safetensors file holding [`tensor_specs`](Self::tensor_specs).
    pub fn from_safetensors(path: &Path, in_channels: usize, specs: &[LayerSpec]) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes, &path.display().to_string(), in_channels, specs)
    }

    /// As [`from_safetensors`](Self::from_safetensors), from the file's bytes; `origin` names
    /// them in errors.
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        origin: &str,
        in_channels: usize,
        specs: &[LayerSpec],
    ) -> Result<Self> {
        check_config(in_channels, specs)?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let wanted = Self::tensor_specs(in_channels, specs);
        let mut problems = Vec::new();
        let mut values = Vec::with_capacity(wanted.len());
        for t in &wanted {
            match st.tensor(&t.name) {
                Err(_) => problems.push(format!("missing tensor {} {:?}", t.name, t.shape)),
                Ok(view) => {
                    if view.dtype() != safetensors::Dtype::F32 {
                        problems.push(format!(
                            "tensor {} has dtype {:?}, expected F32",
                            t.name,
                            view.dtype()
                        ));
                    } else if view.shape() != t.shape.as_slice() {
                        problems.push(format!(
                            "tensor {} has shape {:?}, expected {:?}",
                            t.name,
                            view.shape(),
                            t.shape
                        ));
                    } else {
                        let v: Vec<f32> = view
                            .data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        values.push(v);
                    }
                }
            }
        }
        let known: BTreeSet<&str> = wanted.iter().map(|t| t.name.as_str()).collect();
        let mut extra: Vec<String> = st
            .names()
            .into_iter()
            .filter(|n| !known.contains(n))
            .map(str::to_owned)
            .collect();
        extra.sort();
        problems.extend(extra.into_iter().map(|n| format!("unexpected tensor {n}")));
        if !problems.is_empty() {
            return Err(Error::WeightsMismatch {
                origin: origin.to_owned(),
                problems,
            });
        }
        let mut it = values.into_iter();
        let mut weights = Vec::with_capacity(wanted.len() / 2);
        while let (Some(weight), Some(bias)) = (it.next(), it.next()) {
            weights.push(ConvWeights { weight, bias });
        }
        Self::from_weights(in_channels, specs, &weights)
    }

    /// A network from in-memory weights, one [`ConvWeights`] per [`LayerSpec::Conv`], in order.
    pub fn from_weights(
        in_channels: usize,
        specs: &[LayerSpec],
        weights: &[ConvWeights],
    ) -> Result<Self> {
        Self::build(Isa::detect(), in_channels, specs, weights)
    }

    pub(crate) fn build(
        isa: Isa,
        in_channels: usize,
        specs: &[LayerSpec],
        weights: &[ConvWeights],
    ) -> Result<Self> {
        check_config(in_channels, specs)?;
        let convs = specs.iter().filter(|s| matches!(s, Conv(_))).count();
        if weights.len() != convs {
            return Err(Error::InvalidConfig(format!(
                "{} convolution weights given for {convs} convolutions",
                weights.len()
            )));
        }
        let mut problems = Vec::new();
        let mut c = in_channels;
        let mut wi = weights.iter();
        let mut ops = Vec::new();
        let mut op_of_spec = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            match *s {
                Conv(k) => {
                    let w = wi.next().expect("counted above");
                    if w.weight.len() != k * c * 9 || w.bias.len() != k {
                        problems.push(format!(
                            "layer {i}: weight has {} values and bias {}, expected {} ({k}x{c}x3x3) and {k}",
                            w.weight.len(),
                            w.bias.len(),
                            k * c * 9
                        ));
                    } else if c <= IM2COL_MAX_C_IN {
                        ops.push(Op::Im2col(Im2col::new(isa, c, k, &w.weight, &w.bias)));
                    } else {
                        let pool = specs.get(i + 1) == Some(&MaxPool);
                        let variant = winograd_variant(c, k);
                        ops.push(Op::Winograd {
                            conv: Winograd::new(isa, variant, c, k, &w.weight, &w.bias),
                            pool,
                        });
                    }
                    c = k;
                }
                MaxPool => {
                    let fused = matches!(ops.last(), Some(Op::Winograd { pool: true, .. }));
                    if !fused {
                        ops.push(Op::Pool);
                    }
                }
            }
            op_of_spec.push(ops.len().saturating_sub(1));
        }
        if !problems.is_empty() {
            return Err(Error::InvalidConfig(problems.join("; ")));
        }
        Ok(ConvStack {
            in_channels,
            specs: specs.to_vec(),
            ops,
            op_of_spec,
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.specs
            .iter()
            .rev()
            .find_map(|s| if let Conv(k) = s { Some(*k) } else { None })
            .unwrap_or(self.in_channels)
    }

    /// The layer list.
    pub fn specs(&self) -> &[LayerSpec] {
        &self.specs
    }

    /// Output `(height, width, channels)` for an `h x w` input (e.g. `(7, 7, 512)` for VGG16 at
    /// 224 x 224), or an error if a pool would leave nothing.
    pub fn output_shape(&self, h: usize, w: usize) -> Result<(usize, usize, usize)> {
        let (mut oh, mut ow) = (h, w);
        if h == 0 || w == 0 {
            return Err(Error::InvalidInput(format!("empty {h}x{w} input")));
        }
        for s in &self.specs {
            if *s == MaxPool {
                if oh < 2 || ow < 2 {
                    return Err(Error::InvalidInput(format!(
                        "a {h}x{w} input is too small: it shrinks to {oh}x{ow} before a 2x2 pool"
                    )));
                }
                (oh, ow) = (oh / 2, ow / 2);
            }
        }
        Ok((oh, ow, self.out_channels()))
    }

    /// Values per image of the input and the output, checking that no activation of one
    /// image overflows `usize`.
    fn image_sizes(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (oh, ow, oc) = self.output_shape(h, w)?;
        let too_big = || Error::InvalidInput(format!("a {h}x{w} input is too large"));
        let widest = self
            .specs
            .iter()
            .filter_map(|s| if let Conv(k) = s { Some(*k) } else { None })
            .chain([self.in_channels])
            .max()
            .unwrap_or(1);
        // Each image's largest activation: no larger than h * w * widest, times the group.
        h.checked_mul(w)
            .and_then(|p| p.checked_mul(widest))
            .and_then(|p| p.checked_mul(IMAGE_GROUP))
            .ok_or_else(too_big)?;
        Ok((h * w * self.in_channels, oh * ow * oc))
    }

    /// Forward pass of `n` images, `x` being `[n, h, w, in_channels]`; returns
    /// `[n, oh, ow, out_channels]` (see [`output_shape`](Self::output_shape)).
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>> {
        Ok(self.forward_with_taps(x, n, h, w, &[])?.0)
    }

    /// [`forward`](Self::forward) into a caller's buffer of `n * oh * ow * out_channels`.
    pub fn forward_into(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.forward_tapped(x, n, h, w, out, &[], &mut [], false)
    }

    /// The VGG names of the layers, in order (see [`layer_names`]).
    pub fn layer_names(&self) -> Vec<String> {
        layer_names(&self.specs)
    }

    /// Channels of layer `layer`'s output.
    fn layer_channels(&self, layer: usize) -> usize {
        self.specs[..=layer]
            .iter()
            .rev()
            .find_map(|s| if let Conv(k) = s { Some(*k) } else { None })
            .unwrap_or(self.in_channels)
    }

    /// [`forward`](Self::forward) that also summarises intermediate layers: for each layer
    /// position in `taps` (see [`Network::layer_index`](crate::Network::layer_index)), the per-image global
    /// average and global maximum of that layer's output (after its ReLU) over all spatial
    /// positions. The final output is the same, bit for bit, as without taps.
    pub fn forward_with_taps(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[usize],
    ) -> Result<(Vec<f32>, Vec<TapSummary>)> {
        let (_, per_out) = self.image_sizes(h, w)?;
        let total = per_out
            .checked_mul(n)
            .ok_or_else(|| Error::InvalidInput(format!("{n} images of {h}x{w} overflow memory")))?;
        let mut out = vec![0.0; total];
        let mut sums = Vec::with_capacity(taps.len());
        for &t in taps {
            if t >= self.specs.len() {
                return Err(Error::InvalidConfig(format!(
                    "tap {t} is past the last of {} layers",
                    self.specs.len()
                )));
            }
            let c = self.layer_channels(t);
            sums.push(TapSummary {
                channels: c,
                avg: Vec::with_capacity(n * c),
                max: Vec::with_capacity(n * c),
            });
        }
        self.forward_tapped(x, n, h, w, &mut out, taps, &mut sums, false)?;
        Ok((out, sums))
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_tapped(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        out: &mut [f32],
        taps: &[usize],
        sums: &mut [TapSummary],
        check_each: bool,
    ) -> Result<()> {
        let (oh, ow, oc) = self.output_shape(h, w)?;
        let (per_in, per_out) = self.image_sizes(h, w)?;
        if per_in.checked_mul(n) != Some(x.len()) {
            return Err(Error::InvalidInput(format!(
                "{} values given for {n} images of {h}x{w}x{}",
                x.len(),
                self.in_channels
            )));
        }
        if per_out.checked_mul(n) != Some(out.len()) {
            return Err(Error::InvalidInput(format!(
                "output buffer holds {} values, {n} images of {oh}x{ow}x{oc} need {}",
                out.len(),
                n.saturating_mul(per_out)
            )));
        }
        if n == 0 {
            return Ok(());
        }
        // Shapes after each op, per image.
        let mut shapes = Vec::with_capacity(self.ops.len());
        let (mut ch, mut cw, mut cc) = (h, w, self.in_channels);
        for op in &self.ops {
            match op {
                Op::Winograd { conv, pool } => {
                    cc = conv.c_out();
                    if *pool {
                        (ch, cw) = (ch / 2, cw / 2);
                    }
                }
                Op::Im2col(conv) => cc = conv.c_out(),
                Op::Pool => (ch, cw) = (ch / 2, cw / 2),
            }
            shapes.push((ch, cw, cc));
        }
        // Op `i` writes buffer `i % 2` and reads the other, so each buffer is sized for the
        // activations of its parity only (VGG16: the 224x224x64 output of the first layer is
        // the only large one).
        let group = IMAGE_GROUP.min(n);
        let mut lens = [0usize; 2];
        for (i, (a, b, c)) in shapes[..shapes.len() - 1].iter().enumerate() {
            lens[i % 2] = lens[i % 2].max(group * a * b * c);
        }
        let mut bufs = self.take_buffers(lens);
        let mut scratch = Vec::new();
        let mut done = 0;
        for (xg, og) in x
            .chunks(group * per_in)
            .zip(out.chunks_mut(group * per_out))
        {
            let g = xg.len() / per_in;
            let (mut ih, mut iw, mut ic) = (h, w, self.in_channels);
            let [even, odd] = &mut bufs;
            for (i, op) in self.ops.iter().enumerate() {
                let (sh, sw, sc) = shapes[i];
                let (prev, next) = if i % 2 == 0 {
                    (&*odd, &mut *even)
                } else {
                    (&*even, &mut *odd)
                };
                let src: &[f32] = if i == 0 {
                    xg
                } else {
                    &prev[..g * ih * iw * ic]
                };
                let dst: &mut [f32] = if i + 1 == self.ops.len() {
                    &mut *og
                } else {
                    &mut next[..g * sh * sw * sc]
                };
                // `tapped(false)`: taps on a convolution this op computes; `tapped(true)`: on
                // a pool it computes (alone or fused).
                let tapped = |pooled: bool| {
                    taps.iter().enumerate().filter(move |&(_, &t)| {
                        self.op_of_spec[t] == i && (self.specs[t] == MaxPool) == pooled
                    })
                };
                match op {
                    Op::Winograd { conv, pool: true } if tapped(false).next().is_some() => {
                        let c = conv.c_out();
                        scratch.resize(g * ih * iw * c, 0.0);
                        conv.forward(src, g, ih, iw, &mut scratch);
                        for (k, _) in tapped(false) {
                            sums[k].push(&scratch, g);
                        }
                        maxpool2x2(&scratch, g, ih, iw, c, dst);
                    }
                    Op::Winograd { conv, pool: true } => conv.forward_pool(src, g, ih, iw, dst),
                    Op::Winograd { conv, pool: false } => conv.forward(src, g, ih, iw, dst),
                    Op::Im2col(conv) => conv.forward(src, g, ih, iw, dst),
                    Op::Pool => maxpool2x2(src, g, ih, iw, ic, dst),
                }
                // A NaN or an infinity is an error, named by the layer that produced it. ReLU
                // and pooling carry non-finite values on, so the output shows any; only then is
                // the group run again checking every layer, to find the first.
                let last = i + 1 == self.ops.len();
                if check_each || last {
                    if let Some((image, what)) = crate::finite::first_non_finite(dst, g) {
                        if !check_each {
                            return Err(self.first_non_finite_layer(xg, g, h, w).offset(done));
                        }
                        return Err(Error::NonFinite {
                            layer: self.op_name(i),
                            image,
                            what,
                        });
                    }
                }
                // A pool's output, or a convolution's when no pool is fused into it.
                let pooled_here = matches!(op, Op::Pool | Op::Winograd { pool: true, .. });
                for (k, _) in tapped(pooled_here) {
                    sums[k].push(dst, g);
                }
                (ih, iw, ic) = (sh, sw, sc);
            }
            done += g;
        }
        self.return_buffers(bufs);
        Ok(())
    }

    /// The error naming the first layer that gives a non-finite value for `g` images whose
    /// output holds one.
    fn first_non_finite_layer(&self, x: &[f32], g: usize, h: usize, w: usize) -> Error {
        let (_, per_out) = match self.image_sizes(h, w) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut out = vec![0.0; per_out * g];
        match self.forward_tapped(x, g, h, w, &mut out, &[], &mut [], true) {
            Err(e) => e,
            Ok(()) => {
                Error::InvalidInput("a non-finite value that a second pass did not find".into())
            }
        }
    }

    /// The layers op `i` computes, by name (`conv1_2+pool1` for a fused pool).
    fn op_name(&self, i: usize) -> String {
        let names = layer_names(&self.specs);
        let mine: Vec<&str> = (0..self.specs.len())
            .filter(|&s| self.op_of_spec[s] == i)
            .map(|s| names[s].as_str())
            .collect();
        mine.join("+")
    }

    /// Two activation buffers of at least `lens` values, reused across calls: a fresh
    /// allocation of this size costs page faults on every call.
    fn take_buffers(&self, lens: [usize; 2]) -> [Vec<f32>; 2] {
        let mut bufs = self
            .buffers
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        bufs.resize_with(2, Vec::new);
        let mut it = bufs.into_iter().zip(lens).map(|(mut b, len)| {
            if b.len() < len {
                b.resize(len, 0.0);
            }
            b
        });
        [it.next().unwrap_or_default(), it.next().unwrap_or_default()]
    }

    fn return_buffers(&self, bufs: [Vec<f32>; 2]) {
        if let Ok(mut b) = self.buffers.lock() {
            *b = bufs.into();
        }
    }
}

/// Per-image global average and maximum of one layer's output (see
/// [`ConvStack::forward_with_taps`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TapSummary {
    /// Channels of the layer.
    pub channels: usize,
    /// `[n, channels]`: the mean over all spatial positions (accumulated in f64).
    pub avg: Vec<f32>,
    /// `[n, channels]`: the maximum over all spatial positions.
    pub max: Vec<f32>,
}

impl TapSummary {
    /// Appends the summaries of `g` channels-last maps held in `x`.
    fn push(&mut self, x: &[f32], g: usize) {
        let c = self.channels;
        let spatial = x.len() / (g * c);
        let mut acc = vec![0f64; c];
        let mut mx = vec![f32::NEG_INFINITY; c];
        for map in x.chunks_exact(spatial * c) {
            acc.iter_mut().for_each(|a| *a = 0.0);
            mx.iter_mut().for_each(|m| *m = f32::NEG_INFINITY);
            for px in map.chunks_exact(c) {
                for ((a, m), &v) in acc.iter_mut().zip(mx.iter_mut()).zip(px) {
                    *a += v as f64;
                    *m = m.max(v);
                }
            }
            self.avg
                .extend(acc.iter().map(|&a| (a / spatial as f64) as f32));
            self.max.extend_from_slice(&mx);
        }
    }
}
