//! The convolutional trunk (conv 3x3 valid + ReLU + 2x2 max-pool, repeated, then global average
//! pooling) as one candle custom op on channels-last images, with its backward pass.
//!
//! All trunk parameters live in one flat vector: for each layer, its kernel (3, 3, C, O) then
//! its bias (O). The op runs each image on its own rayon task (forward: all layers; backward:
//! all layers in reverse) and sums the per-image parameter gradients in image order, so results
//! do not depend on the number of threads.

use crate::kernels::{
    bias_relu_pool, conv, conv_backward, ConvShape, LayerForward, LayerGrads, Scratch,
};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// Geometry of the trunk for one input size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkShape {
    /// Per-layer shapes.
    pub layers: Vec<ConvShape>,
}

impl TrunkShape {
    /// The trunk for `height` x `width` x `channels` inputs and the given filter counts;
    /// `None` when the input is too small for the layers (a pooled map would be empty).
    pub fn new(height: usize, width: usize, channels: usize, filters: &[usize]) -> Option<Self> {
        let (mut h, mut w, mut c) = (height, width, channels);
        let mut layers = Vec::with_capacity(filters.len());
        for &o in filters {
            if h < 4 || w < 4 || c == 0 || o == 0 {
                return None;
            }
            let s = ConvShape { h, w, c, o };
            layers.push(s);
            (h, w, c) = (s.ph(), s.pw(), o);
        }
        (!layers.is_empty()).then_some(TrunkShape { layers })
    }

    /// Smallest square input side that the given number of layers accepts.
    pub fn min_side(n_layers: usize) -> usize {
        // Working back from a 1x1 final map: side_before = 2 * side_after + 2.
        (0..n_layers).fold(1, |s, _| 2 * s + 2)
    }

    /// Values of one input image.
    pub fn input_len(&self) -> usize {
        self.layers[0].input_len()
    }

    /// Features out of the trunk (filters of the last layer).
    pub fn out_dim(&self) -> usize {
        self.layers.last().map_or(0, |s| s.o)
    }

    /// Offsets of each layer's kernel and bias in the flat parameter vector.
    pub fn offsets(&self) -> Vec<(usize, usize)> {
        let mut at = 0;
        self.layers
            .iter()
            .map(|s| {
                let k = at;
                at += s.kernel_len() + s.o;
                (k, k + s.kernel_len())
            })
            .collect()
    }

    /// Length of the flat parameter vector.
    pub fn param_len(&self) -> usize {
        self.layers.iter().map(|s| s.kernel_len() + s.o).sum()
    }
}

/// What the backward pass needs of one image's forward pass.
struct ImageCache {
    pooled: Vec<Vec<f32>>,
    argmax: Vec<Vec<u8>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Forward pass of one image; returns the pooled features and, if `keep`, the cache.
fn forward_image(
    t: &TrunkShape,
    params: &[f32],
    x: &[f32],
    keep: bool,
) -> (Vec<f32>, Option<ImageCache>) {
    let offsets = t.offsets();
    let mut pooled: Vec<Vec<f32>> = Vec::with_capacity(t.layers.len());
    let mut argmax: Vec<Vec<u8>> = Vec::with_capacity(t.layers.len());
    SCRATCH.with(|sc| {
        let sc = &mut *sc.borrow_mut();
        for (l, (&s, &(k0, b0))) in t.layers.iter().zip(&offsets).enumerate() {
            sc.fit(s);
            let input = if l == 0 { x } else { &pooled[l - 1] };
            conv(input, s, &params[k0..b0], &mut sc.col, &mut sc.out);
            let mut p = vec![0.0; s.pooled_len()];
            let mut a = vec![0u8; s.pooled_len()];
            bias_relu_pool(&sc.out, s, &params[b0..b0 + s.o], &mut p, &mut a);
            pooled.push(p);
            argmax.push(a);
        }
    });
    let last = t.layers.last().expect("non-empty trunk");
    let (o, area) = (last.o, last.ph() * last.pw());
    let mut feat = vec![0f32; o];
    for px in pooled.last().expect("non-empty trunk").chunks_exact(o) {
        for (f, v) in feat.iter_mut().zip(px) {
            *f += v;
        }
    }
    feat.iter_mut().for_each(|f| *f /= area as f32);
    let cache = keep.then_some(ImageCache { pooled, argmax });
    (feat, cache)
}

/// Backward pass of one image: the gradient of the flat parameters given the gradient `gfeat`
/// of the pooled features.
fn backward_image(
    t: &TrunkShape,
    params: &[f32],
    x: &[f32],
    cache: &ImageCache,
    gfeat: &[f32],
) -> Vec<f32> {
    let offsets = t.offsets();
    let mut dparams = vec![0f32; t.param_len()];
    let last = t.layers.last().expect("non-empty trunk");
    let area = (last.ph() * last.pw()) as f32;
    let mut g: Vec<f32> = (0..last.ph() * last.pw())
        .flat_map(|_| gfeat.iter().map(|v| v / area))
        .collect();
    SCRATCH.with(|sc| {
        let sc = &mut *sc.borrow_mut();
        for l in (0..t.layers.len()).rev() {
            let s = t.layers[l];
            let (k0, b0) = offsets[l];
            let input = if l == 0 { x } else { &cache.pooled[l - 1] };
            let mut dx = if l == 0 {
                None
            } else {
                Some(vec![0f32; s.input_len()])
            };
            let (dk, db) = dparams[k0..b0 + s.o].split_at_mut(b0 - k0);
            conv_backward(
                LayerForward {
                    x: input,
                    shape: s,
                    kernel: &params[k0..b0],
                    pooled: &cache.pooled[l],
                    argmax: &cache.argmax[l],
                },
                &g,
                sc,
                LayerGrads {
                    dkernel: dk,
                    dbias: db,
                    dx: dx.as_deref_mut(),
                },
            );
            if let Some(dx) = dx {
                g = dx;
            }
        }
    });
    dparams
}

/// Trunk forward on a batch of `n` images (`images` holds n x `t.input_len()` values).
/// Returns n x `t.out_dim()` features and, if `keep`, the caches for the backward pass.
fn forward_batch(
    t: &TrunkShape,
    params: &[f32],
    images: &[f32],
    keep: bool,
) -> (Vec<f32>, Vec<ImageCache>) {
    let results: Vec<(Vec<f32>, Option<ImageCache>)> = images
        .par_chunks_exact(t.input_len())
        .map(|x| forward_image(t, params, x, keep))
        .collect();
    let mut feats = Vec::with_capacity(results.len() * t.out_dim());
    let mut caches = Vec::new();
    for (f, c) in results {
        feats.extend(f);
        caches.extend(c);
    }
    (feats, caches)
}

/// Gradient of the flat parameters for a batch, summed over images in image order.
fn backward_batch(
    t: &TrunkShape,
    params: &[f32],
    images: &[f32],
    caches: &[ImageCache],
    gfeats: &[f32],
) -> Vec<f32> {
    let per_image: Vec<Vec<f32>> = images
        .par_chunks_exact(t.input_len())
        .zip(caches.par_iter())
        .zip(gfeats.par_chunks_exact(t.out_dim()))
        .map(|((x, c), g)| backward_image(t, params, x, c, g))
        .collect();
    let mut total = vec![0f32; t.param_len()];
    for d in &per_image {
        for (a, b) in total.iter_mut().zip(d) {
            *a += b;
        }
    }
    total
}

/// The trunk as a candle op: `images (B, H, W, C)` f32 and `params` (flat) -> features
/// `(B, out_dim)`. Only the parameters get a gradient. With `keep`, the forward pass keeps what
/// the backward pass needs (one op value per forward pass; backward can run once).
pub struct TrunkOp {
    shape: Arc<TrunkShape>,
    keep: bool,
    cache: Mutex<Option<Vec<ImageCache>>>,
}

impl TrunkOp {
    /// An op for one forward pass.
    pub fn new(shape: Arc<TrunkShape>, keep: bool) -> Self {
        TrunkOp {
            shape,
            keep,
            cache: Mutex::new(None),
        }
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("trunk: {what} must be f32")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("trunk: {what} must be contiguous")
    };
    Ok(&v[a..b])
}

fn with_f32<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("trunk: {what} must be on the CPU")
    };
    f(f32_slice(cpu, layout, what)?)
}

impl CustomOp2 for TrunkOp {
    fn name(&self) -> &'static str {
        "scratch-cnn-trunk"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = &*self.shape;
        let s0 = t.layers[0];
        let images = f32_slice(s1, l1, "images")?;
        let params = f32_slice(s2, l2, "parameters")?;
        match l1.dims() {
            [_, h, w, c] if (*h, *w, *c) == (s0.h, s0.w, s0.c) => {}
            d => candle_core::bail!(
                "trunk: images {d:?}, expected (B, {}, {}, {})",
                s0.h,
                s0.w,
                s0.c
            ),
        }
        if params.len() != t.param_len() {
            candle_core::bail!(
                "trunk: {} parameters, expected {}",
                params.len(),
                t.param_len()
            );
        }
        let n = images.len() / t.input_len();
        let (feats, caches) = forward_batch(t, params, images, self.keep);
        if self.keep {
            *self.cache.lock().expect("trunk cache lock") = Some(caches);
        }
        Ok((CpuStorage::F32(feats), Shape::from((n, t.out_dim()))))
    }

    fn bwd(
        &self,
        images: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(caches) = self.cache.lock().expect("trunk cache lock").take() else {
            candle_core::bail!("trunk: backward without a kept forward pass")
        };
        let t = &*self.shape;
        let gfeats = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let dparams = with_f32(images, "images", |x| {
            with_f32(params, "parameters", |p| {
                Ok(backward_batch(t, p, x, &caches, &gfeats))
            })
        })?;
        let d = Tensor::from_vec(dparams, params.shape(), params.device())?;
        Ok((None, Some(d)))
    }
}

/// Trunk features of a batch without candle (no gradient): n x `out_dim`.
pub fn features(t: &TrunkShape, params: &[f32], images: &[f32]) -> Vec<f32> {
    forward_batch(t, params, images, false).0
}
