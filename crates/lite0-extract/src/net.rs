//! EfficientNet-Lite0's forward pass on the CPU, channels-last (`NHWC`) `f32`.
//!
//! Every 1x1 convolution (the blocks' expansions and projections, the head) is one packed GEMM
//! of `pixels x C_in` by `C_in x C_out` (`vgg_extract::kernels`); the depthwise convolutions and
//! the stem are direct loops over channels, the innermost axis, so they vectorise. Padding is
//! TensorFlow's `SAME` (`ceil(in / stride)` outputs; the extra row or column of an odd total
//! goes after), as in the reference's `Conv2dStaticSamePadding` at 224 pixels. Each image goes
//! through the whole network on one thread; the images of a batch run in parallel. Sums are
//! made in a fixed order whatever the batch size or the thread count.

use rayon::prelude::*;
use vgg_extract::kernels::{microkernel, pack_b, AlignedBuf, Isa, Job};

use lite0_weights::{layout, Block, Weights};

/// A 1x1 convolution: packed `C_in x C_out` weights and a bias.
struct Pointwise {
    c_in: usize,
    c_out: usize,
    packed: AlignedBuf,
    bias: Vec<f32>,
}

impl Pointwise {
    fn new(isa: Isa, w: &[f32], bias: &[f32], c_out: usize, c_in: usize) -> Self {
        // `w` is `[c_out, c_in]`; the GEMM's right-hand side is its transpose.
        Pointwise {
            c_in,
            c_out,
            packed: pack_b(c_in, c_out, isa.nr(), |r, c| w[c * c_in + r]),
            bias: bias.to_vec(),
        }
    }

    /// `out[p, :] = act(x[p, :] * W + b) (+ residual[p, :])` for `pixels` rows: each
    /// micro-kernel tile gets its bias, activation and residual while it is in L1.
    fn forward(
        &self,
        isa: Isa,
        x: &[f32],
        pixels: usize,
        relu6: bool,
        residual: Option<&[f32]>,
        out: &mut Vec<f32>,
    ) {
        let (k, n) = (self.c_in, self.c_out);
        set_len(out, pixels * n);
        assert!(x.len() >= pixels * k && residual.is_none_or(|r| r.len() >= pixels * n));
        let (mr, nr) = (isa.mr(), isa.nr());
        let mut tile = [0.0f32; 12 * 32];
        let mut edge = vec![0.0f32; mr * k];
        for p in 0..n.div_ceil(nr) {
            let cols = nr.min(n - p * nr);
            let c0 = p * nr;
            // SAFETY: panel `p` lies inside the packed weights.
            let bp = unsafe { self.packed.as_ptr().add(p * k * nr) };
            for g in 0..pixels.div_ceil(mr) {
                let rows = mr.min(pixels - g * mr);
                let a = if rows == mr {
                    x[g * mr * k..].as_ptr()
                } else {
                    edge.fill(0.0);
                    edge[..rows * k].copy_from_slice(&x[g * mr * k..(g * mr + rows) * k]);
                    edge.as_ptr()
                };
                // SAFETY: `a` has `mr` rows of `k`, the panel `k x nr`, the tile `mr x nr`;
                // `isa` came from detection.
                unsafe { microkernel(isa, k, a, k, bp, tile.as_mut_ptr(), nr, false) };
                isa.dispatch(Epilogue {
                    tile: &tile,
                    nr,
                    rows,
                    cols,
                    bias: &self.bias[c0..c0 + cols],
                    relu6,
                    residual: residual.map(|r| &r[g * mr * n + c0..]),
                    out: &mut out[g * mr * n + c0..],
                    ldc: n,
                });
            }
        }
    }
}

/// Sets `v`'s length to `n` without clearing what is kept (every element is overwritten).
fn set_len(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    } else {
        v.truncate(n);
    }
}

/// A micro-kernel tile's bias, ReLU6 and residual, stored into the output rows.
struct Epilogue<'a> {
    tile: &'a [f32],
    nr: usize,
    rows: usize,
    cols: usize,
    bias: &'a [f32],
    relu6: bool,
    residual: Option<&'a [f32]>,
    out: &'a mut [f32],
    ldc: usize,
}

impl Job for Epilogue<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        for r in 0..self.rows {
            let t = &self.tile[r * self.nr..r * self.nr + self.cols];
            let o = &mut self.out[r * self.ldc..r * self.ldc + self.cols];
            if self.relu6 {
                for ((d, v), b) in o.iter_mut().zip(t).zip(self.bias) {
                    *d = relu6(v + b);
                }
            } else if let Some(res) = self.residual {
                let res = &res[r * self.ldc..r * self.ldc + self.cols];
                for (((d, v), b), x) in o.iter_mut().zip(t).zip(self.bias).zip(res) {
                    *d = (v + b) + x;
                }
            } else {
                for ((d, v), b) in o.iter_mut().zip(t).zip(self.bias) {
                    *d = v + b;
                }
            }
        }
    }
}

/// ReLU6 that keeps NaN (so the finiteness check sees it).
#[inline(always)]
fn relu6(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else if v > 6.0 {
        6.0
    } else {
        v
    }
}

/// TensorFlow `SAME`: output size and the padding before the first input.
pub fn same_padding(size: usize, k: usize, s: usize) -> (usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(size);
    (out, total / 2)
}

/// A depthwise `k x k` convolution (weights as `[ky, kx, c]`) with bias and ReLU6.
struct Depthwise {
    c: usize,
    k: usize,
    stride: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

struct DepthwiseJob<'a> {
    d: &'a Depthwise,
    x: &'a [f32],
    h: usize,
    w: usize,
    out: &'a mut [f32],
}

impl Job for DepthwiseJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(mut self) {
        let d = self.d;
        let c = d.c;
        let (oh, pt) = same_padding(self.h, d.k, d.stride);
        let (ow, pl) = same_padding(self.w, d.k, d.stride);
        for oy in 0..oh {
            for ox in 0..ow {
                let o = (oy * ow + ox) * c;
                let at = (oy, ox, pt, pl);
                // Channels in blocks whose sums stay in registers.
                let mut c0 = 0;
                while c0 + 64 <= c {
                    self.block::<64>(at, c0, o);
                    c0 += 64;
                }
                while c0 + 16 <= c {
                    self.block::<16>(at, c0, o);
                    c0 += 16;
                }
                while c0 < c {
                    self.block::<1>(at, c0, o);
                    c0 += 1;
                }
            }
        }
    }
}

impl DepthwiseJob<'_> {
    /// Output pixel `(oy, ox)`'s channels `c0..c0 + W`, written at `out[o + c0..]`.
    #[inline(always)]
    fn block<const W: usize>(
        &mut self,
        (oy, ox, pt, pl): (usize, usize, usize, usize),
        c0: usize,
        o: usize,
    ) {
        let d = self.d;
        let (c, k, s) = (d.c, d.k, d.stride);
        let mut acc = [0.0f32; W];
        acc.copy_from_slice(&d.bias[c0..c0 + W]);
        for ky in 0..k {
            let iy = (oy * s + ky).wrapping_sub(pt);
            if iy >= self.h {
                continue;
            }
            for kx in 0..k {
                let ix = (ox * s + kx).wrapping_sub(pl);
                if ix >= self.w {
                    continue;
                }
                let px = (iy * self.w + ix) * c + c0;
                let xin: &[f32; W] = self.x[px..px + W].try_into().expect("W values");
                let wo = (ky * k + kx) * c + c0;
                let wk: &[f32; W] = d.w[wo..wo + W].try_into().expect("W values");
                for j in 0..W {
                    acc[j] += xin[j] * wk[j];
                }
            }
        }
        let dst: &mut [f32; W] = (&mut self.out[o + c0..o + c0 + W])
            .try_into()
            .expect("W values");
        for j in 0..W {
            dst[j] = relu6(acc[j]);
        }
    }
}

/// The stem: a 3x3 stride-2 convolution of the 3-channel input (weights `[ky, kx, ci, co]`).
struct Stem {
    w: Vec<f32>,
    bias: Vec<f32>,
}

struct StemJob<'a> {
    s: &'a Stem,
    x: &'a [f32],
    h: usize,
    w: usize,
    out: &'a mut [f32],
}

impl Job for StemJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        const CO: usize = layout::STEM_CHANNELS;
        let (oh, pt) = same_padding(self.h, 3, 2);
        let (ow, pl) = same_padding(self.w, 3, 2);
        let mut acc = [0.0f32; CO];
        for oy in 0..oh {
            for ox in 0..ow {
                acc.copy_from_slice(&self.s.bias);
                for ky in 0..3 {
                    let iy = (oy * 2 + ky) as isize - pt as isize;
                    if iy < 0 || iy >= self.h as isize {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = (ox * 2 + kx) as isize - pl as isize;
                        if ix < 0 || ix >= self.w as isize {
                            continue;
                        }
                        let px = (iy as usize * self.w + ix as usize) * 3;
                        for ci in 0..3 {
                            let xv = self.x[px + ci];
                            let wk = &self.s.w[((ky * 3 + kx) * 3 + ci) * CO..][..CO];
                            for (a, wv) in acc.iter_mut().zip(wk) {
                                *a += xv * wv;
                            }
                        }
                    }
                }
                let o = (oy * ow + ox) * CO;
                for (dst, a) in self.out[o..o + CO].iter_mut().zip(&acc) {
                    *dst = relu6(*a);
                }
            }
        }
    }
}

struct MbBlock {
    spec: Block,
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
}

/// A per-image summary of a tapped layer: its global average and maximum per channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TapSummary {
    pub channels: usize,
    /// `[n, channels]`.
    pub avg: Vec<f32>,
    pub max: Vec<f32>,
}

/// EfficientNet-Lite0 with its batch norms folded.
pub struct Lite0 {
    isa: Isa,
    stem: Stem,
    blocks: Vec<MbBlock>,
    head: Pointwise,
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
}

/// The layers a tap may name, in order: `stem`, `block0` .. `block15`, `head`.
pub fn layer_names() -> Vec<String> {
    let mut v = vec!["stem".to_string()];
    v.extend((0..layout::blocks().len()).map(|i| format!("block{i}")));
    v.push("head".to_string());
    v
}

/// The name of the final layer, whose maps are the features.
pub const FEATURE_LAYER: &str = "head";

/// Scratch buffers of one image's pass.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Lite0 {
    /// The network from checked, folded weights.
    pub fn new(w: &Weights) -> Self {
        Self::with_isa(Isa::detect(), w)
    }

    fn with_isa(isa: Isa, w: &Weights) -> Self {
        let t = |name: &str| -> &[f32] {
            // `Weights` holds every expected tensor (checked when it was built).
            w.get(name)
                .unwrap_or_else(|| panic!("checked weights lack {name}"))
        };
        // Stem `[co, ci, ky, kx]` -> `[ky, kx, ci, co]`.
        let sw = t("stem.weight");
        let co = layout::STEM_CHANNELS;
        let mut stem_w = vec![0.0; sw.len()];
        for o in 0..co {
            for ci in 0..3 {
                for ky in 0..3 {
                    for kx in 0..3 {
                        stem_w[((ky * 3 + kx) * 3 + ci) * co + o] =
                            sw[((o * 3 + ci) * 3 + ky) * 3 + kx];
                    }
                }
            }
        }
        let blocks = layout::blocks()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let mid = spec.c_mid();
                let dw = t(&format!("blocks.{i}.depthwise.weight"));
                let k = spec.kernel;
                let mut dwt = vec![0.0; dw.len()];
                for c in 0..mid {
                    for j in 0..k * k {
                        dwt[j * mid + c] = dw[c * k * k + j];
                    }
                }
                MbBlock {
                    spec,
                    expand: (spec.expand != 1).then(|| {
                        Pointwise::new(
                            isa,
                            t(&format!("blocks.{i}.expand.weight")),
                            t(&format!("blocks.{i}.expand.bias")),
                            mid,
                            spec.c_in,
                        )
                    }),
                    depthwise: Depthwise {
                        c: mid,
                        k,
                        stride: spec.stride,
                        w: dwt,
                        bias: t(&format!("blocks.{i}.depthwise.bias")).to_vec(),
                    },
                    project: Pointwise::new(
                        isa,
                        t(&format!("blocks.{i}.project.weight")),
                        t(&format!("blocks.{i}.project.bias")),
                        spec.c_out,
                        mid,
                    ),
                }
            })
            .collect::<Vec<_>>();
        let last = blocks.last().map_or(0, |b| b.spec.c_out);
        Lite0 {
            isa,
            stem: Stem {
                w: stem_w,
                bias: t("stem.bias").to_vec(),
            },
            blocks,
            head: Pointwise::new(
                isa,
                t("head.weight"),
                t("head.bias"),
                layout::HEAD_CHANNELS,
                last,
            ),
            fc_w: t("fc.weight").to_vec(),
            fc_b: t("fc.bias").to_vec(),
        }
    }

    /// Loads and checks a folded weights file.
    pub fn from_safetensors(path: &std::path::Path) -> Result<Self, lite0_weights::Error> {
        Ok(Self::new(&lite0_weights::load(path)?))
    }

    /// The feature maps' shape for an `h x w` input: `(h/32, w/32, 1280)`, rounded up.
    pub fn output_shape(&self, h: usize, w: usize) -> (usize, usize, usize) {
        let mut s = (h, w);
        s = (same_padding(s.0, 3, 2).0, same_padding(s.1, 3, 2).0);
        for b in &self.blocks {
            let k = b.spec.kernel;
            s = (
                same_padding(s.0, k, b.spec.stride).0,
                same_padding(s.1, k, b.spec.stride).0,
            );
        }
        (s.0, s.1, layout::HEAD_CHANNELS)
    }

    /// The index of tap `name` in [`layer_names`].
    pub fn layer_index(name: &str) -> Option<usize> {
        layer_names().iter().position(|n| n == name)
    }

    /// The head's maps (`[n, oh, ow, 1280]`) of `n` images `x` (`[n, h, w, 3]`, the weights'
    /// input convention), and the summaries of the layers `taps` (indices of [`layer_names`]).
    pub fn forward_with_taps(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[usize],
    ) -> (Vec<f32>, Vec<TapSummary>) {
        let (oh, ow, oc) = self.output_shape(h, w);
        let per_out = oh * ow * oc;
        let per_in = h * w * 3;
        let results: Vec<(Vec<f32>, Vec<(usize, Vec<f32>, Vec<f32>)>)> = (0..n)
            .into_par_iter()
            .map_init(Scratch::default, |s, i| {
                self.image(&x[i * per_in..(i + 1) * per_in], h, w, taps, s)
            })
            .collect();
        let mut out = Vec::with_capacity(n * per_out);
        let mut sums: Vec<TapSummary> = vec![TapSummary::default(); taps.len()];
        for (f, t) in results {
            out.extend_from_slice(&f);
            for (sum, (c, avg, max)) in sums.iter_mut().zip(t) {
                sum.channels = c;
                sum.avg.extend(avg);
                sum.max.extend(max);
            }
        }
        (out, sums)
    }

    /// [`forward_with_taps`](Self::forward_with_taps) without taps.
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        self.forward_with_taps(x, n, h, w, &[]).0
    }

    /// The 1000 ImageNet logits of each image from its head maps (`[n, cells, 1280]`): the
    /// global average, then the classifier.
    pub fn logits(&self, features: &[f32], n: usize) -> Vec<f32> {
        let c = layout::HEAD_CHANNELS;
        let cells = features.len() / n.max(1) / c;
        let mut out = Vec::with_capacity(n * layout::CLASSES);
        for img in features.chunks_exact(cells * c) {
            let mut avg = vec![0.0f64; c];
            for cell in img.chunks_exact(c) {
                for (a, v) in avg.iter_mut().zip(cell) {
                    *a += f64::from(*v);
                }
            }
            let avg: Vec<f32> = avg.iter().map(|a| (a / cells as f64) as f32).collect();
            for k in 0..layout::CLASSES {
                let row = &self.fc_w[k * c..(k + 1) * c];
                let dot: f64 = row.iter().zip(&avg).map(|(w, a)| f64::from(w * a)).sum();
                out.push(dot as f32 + self.fc_b[k]);
            }
        }
        out
    }

    /// One image through the network.
    #[allow(clippy::type_complexity)]
    fn image(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        taps: &[usize],
        s: &mut Scratch,
    ) -> (Vec<f32>, Vec<(usize, Vec<f32>, Vec<f32>)>) {
        let mut tapped = Vec::new();
        let tap = |layer: usize,
                   act: &[f32],
                   c: usize,
                   tapped: &mut Vec<(usize, usize, Vec<f32>, Vec<f32>)>| {
            if let Some(pos) = taps.iter().position(|&t| t == layer) {
                let (avg, max) = summarise(act, c);
                tapped.push((pos, c, avg, max));
            }
        };
        let (mut ch, mut cw) = (same_padding(h, 3, 2).0, same_padding(w, 3, 2).0);
        set_len(&mut s.a, ch * cw * layout::STEM_CHANNELS);
        self.isa.dispatch(StemJob {
            s: &self.stem,
            x,
            h,
            w,
            out: &mut s.a,
        });
        tap(0, &s.a, layout::STEM_CHANNELS, &mut tapped);
        for (bi, b) in self.blocks.iter().enumerate() {
            let spec = b.spec;
            let pixels = ch * cw;
            // a: block input; b: expanded; c: depthwise output; then a = projection (+ a).
            let expanded: &[f32] = match &b.expand {
                Some(e) => {
                    e.forward(self.isa, &s.a, pixels, true, None, &mut s.b);
                    &s.b
                }
                None => &s.a,
            };
            let (oh, ow) = (
                same_padding(ch, spec.kernel, spec.stride).0,
                same_padding(cw, spec.kernel, spec.stride).0,
            );
            set_len(&mut s.c, oh * ow * spec.c_mid());
            self.isa.dispatch(DepthwiseJob {
                d: &b.depthwise,
                x: expanded,
                h: ch,
                w: cw,
                out: &mut s.c,
            });
            let mut projected = std::mem::take(&mut s.b);
            let residual = spec.skip().then_some(&s.a[..]);
            b.project
                .forward(self.isa, &s.c, oh * ow, false, residual, &mut projected);
            s.b = std::mem::replace(&mut s.a, projected);
            ch = oh;
            cw = ow;
            tap(1 + bi, &s.a, spec.c_out, &mut tapped);
        }
        let mut out = Vec::new();
        self.head
            .forward(self.isa, &s.a, ch * cw, true, None, &mut out);
        tap(
            1 + self.blocks.len(),
            &out,
            layout::HEAD_CHANNELS,
            &mut tapped,
        );
        tapped.sort_by_key(|t| t.0);
        (
            out,
            tapped.into_iter().map(|(_, c, a, m)| (c, a, m)).collect(),
        )
    }
}

/// Per-channel mean (summed in `f64`, in pixel order) and maximum (NaN-propagating) of `act`.
fn summarise(act: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let cells = act.len() / c;
    let mut sum = vec![0.0f64; c];
    let mut max = vec![f32::NEG_INFINITY; c];
    for cell in act.chunks_exact(c) {
        for ((s, m), v) in sum.iter_mut().zip(&mut max).zip(cell) {
            *s += f64::from(*v);
            if *v > *m || v.is_nan() {
                *m = *v;
            }
        }
    }
    (sum.iter().map(|s| (s / cells as f64) as f32).collect(), max)
}
