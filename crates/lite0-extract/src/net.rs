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
use vgg_extract::TapSummary;

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
    v.clamp(0.0, 6.0)
}

/// TensorFlow `SAME`: output size and the padding before the first input.
pub fn same_padding(size: usize, k: usize, s: usize) -> (usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(size);
    (out, total / 2)
}

/// Channels per depthwise block: one AVX-512 register, two AVX2 ones (every Lite0 layer has
/// a multiple of 16 channels).
const DW_BLOCK: usize = 16;

/// A depthwise `k x k` convolution with bias and ReLU6; weights as `[ky][kx][c]`.
struct Depthwise {
    c: usize,
    k: usize,
    stride: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Depthwise {
    /// From weights `[c, k, k]`.
    fn new(w: &[f32], bias: &[f32], c: usize, k: usize, stride: usize) -> Self {
        assert!(
            c.is_multiple_of(DW_BLOCK),
            "depthwise channels {c} not a multiple of {DW_BLOCK}"
        );
        let mut t = vec![0.0; w.len()];
        for ch in 0..c {
            for j in 0..k * k {
                t[j * c + ch] = w[ch * k * k + j];
            }
        }
        Depthwise {
            c,
            k,
            stride,
            w: t,
            bias: bias.to_vec(),
        }
    }

    /// `out` (`[oh, ow, c]`) from `x` (`[h, w, c]`), one output pixel at a time, all its
    /// channels in blocks of 16.
    fn forward(&self, isa: Isa, x: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let (c, k, s) = (self.c, self.k, self.stride);
        let (oh, pt) = same_padding(h, k, s);
        let (ow, pl) = same_padding(w, k, s);
        assert!(x.len() >= h * w * c && out.len() >= oh * ow * c);
        // Offsets (in values) of the taps inside the input, for the pixel's valid window.
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(k * k);
        for oy in 0..oh {
            for ox in 0..ow {
                taps.clear();
                for ky in 0..k {
                    let iy = (oy * s + ky).wrapping_sub(pt);
                    if iy >= h {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s + kx).wrapping_sub(pl);
                        if ix < w {
                            taps.push(((iy * w + ix) * c, (ky * k + kx) * c));
                        }
                    }
                }
                let o = (oy * ow + ox) * c;
                // SAFETY: every tap offset plus `c` lies inside `x` / the weights (checked
                // bounds above), `o + c` inside `out`; `isa` came from detection.
                unsafe {
                    dw_pixel(
                        isa,
                        c,
                        x.as_ptr(),
                        self.w.as_ptr(),
                        &taps,
                        self.bias.as_ptr(),
                        out.as_mut_ptr().add(o),
                    )
                };
            }
        }
    }
}

/// One output pixel of a depthwise convolution: for every channel, the bias plus the sum over
/// `taps` (input offset, weight offset) of input times weight, then ReLU6.
///
/// # Safety
/// For every tap, `x + xo .. x + xo + c` and `w + wo .. w + wo + c` must be readable; `bias`
/// and `out` valid for `c` values; `c` a multiple of 16; `isa` supported by this CPU.
#[inline]
unsafe fn dw_pixel(
    isa: Isa,
    c: usize,
    x: *const f32,
    w: *const f32,
    taps: &[(usize, usize)],
    bias: *const f32,
    out: *mut f32,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::dw_pixel_avx512(c, x, w, taps, bias, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::dw_pixel_avx2(c, x, w, taps, bias, out),
            _ => {
                for ch in 0..c {
                    let mut acc = *bias.add(ch);
                    for &(xo, wo) in taps {
                        acc += *x.add(xo + ch) * *w.add(wo + ch);
                    }
                    *out.add(ch) = relu6(acc);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX-512 [`super::dw_pixel`]: 16 channels per register, four registers at a time,
    /// then one.
    ///
    /// # Safety
    /// As [`super::dw_pixel`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dw_pixel_avx512(
        c: usize,
        x: *const f32,
        w: *const f32,
        taps: &[(usize, usize)],
        bias: *const f32,
        out: *mut f32,
    ) {
        let mut c0 = 0;
        // SAFETY: the caller's bounds (see `dw_pixel`); `c` is a multiple of 16.
        unsafe {
            while c0 + 64 <= c {
                channels_512::<4>(c0, x, w, taps, bias, out);
                c0 += 64;
            }
            while c0 < c {
                channels_512::<1>(c0, x, w, taps, bias, out);
                c0 += 16;
            }
        }
    }

    /// Channels `c0 .. c0 + 16 R` of [`dw_pixel_avx512`], in `R` registers.
    ///
    /// # Safety
    /// As [`super::dw_pixel`] for those channels; AVX-512F must be available.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn channels_512<const R: usize>(
        c0: usize,
        x: *const f32,
        w: *const f32,
        taps: &[(usize, usize)],
        bias: *const f32,
        out: *mut f32,
    ) {
        // SAFETY: the caller's bounds.
        unsafe {
            let mut a: [__m512; R] =
                std::array::from_fn(|j| _mm512_loadu_ps(bias.add(c0 + 16 * j)));
            for &(xo, wo) in taps {
                for (j, aj) in a.iter_mut().enumerate() {
                    let o = c0 + 16 * j;
                    *aj = _mm512_fmadd_ps(
                        _mm512_loadu_ps(x.add(xo + o)),
                        _mm512_loadu_ps(w.add(wo + o)),
                        *aj,
                    );
                }
            }
            // ReLU6 that keeps NaN: `max` and `min` return their second operand when either
            // is NaN.
            let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
            for (j, aj) in a.iter().enumerate() {
                _mm512_storeu_ps(
                    out.add(c0 + 16 * j),
                    _mm512_min_ps(six, _mm512_max_ps(zero, *aj)),
                );
            }
        }
    }

    /// AVX2 [`super::dw_pixel`]: 8 channels per register, two registers at a time.
    ///
    /// # Safety
    /// As [`super::dw_pixel`]; AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dw_pixel_avx2(
        c: usize,
        x: *const f32,
        w: *const f32,
        taps: &[(usize, usize)],
        bias: *const f32,
        out: *mut f32,
    ) {
        // SAFETY: the caller's bounds (see `dw_pixel`); `c` is a multiple of 16.
        unsafe {
            let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
            for c0 in (0..c).step_by(16) {
                let mut a: [__m256; 2] =
                    std::array::from_fn(|j| _mm256_loadu_ps(bias.add(c0 + 8 * j)));
                for &(xo, wo) in taps {
                    for (j, aj) in a.iter_mut().enumerate() {
                        let o = c0 + 8 * j;
                        *aj = _mm256_fmadd_ps(
                            _mm256_loadu_ps(x.add(xo + o)),
                            _mm256_loadu_ps(w.add(wo + o)),
                            *aj,
                        );
                    }
                }
                for (j, aj) in a.iter().enumerate() {
                    _mm256_storeu_ps(
                        out.add(c0 + 8 * j),
                        _mm256_min_ps(six, _mm256_max_ps(zero, *aj)),
                    );
                }
            }
        }
    }
}

/// The stem's input patches: row `(oy, ox)` holds the 3x3x3 window (`ky, kx, ci` order,
/// zeros outside the image) that output pixel reads, so the stem is one GEMM.
fn stem_patches(x: &[f32], h: usize, w: usize, out: &mut Vec<f32>) -> usize {
    let (oh, pt) = same_padding(h, 3, 2);
    let (ow, pl) = same_padding(w, 3, 2);
    set_len(out, oh * ow * STEM_K);
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut out[(oy * ow + ox) * STEM_K..][..STEM_K];
            for ky in 0..3 {
                let iy = (oy * 2 + ky).wrapping_sub(pt);
                for kx in 0..3 {
                    let ix = (ox * 2 + kx).wrapping_sub(pl);
                    let dst = &mut row[(ky * 3 + kx) * 3..][..3];
                    if iy < h && ix < w {
                        dst.copy_from_slice(&x[(iy * w + ix) * 3..][..3]);
                    } else {
                        dst.fill(0.0);
                    }
                }
            }
        }
    }
    oh * ow
}

/// Values in a stem patch.
const STEM_K: usize = 27;

struct MbBlock {
    spec: Block,
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
}

/// EfficientNet-Lite0 with its batch norms folded.
pub struct Lite0 {
    isa: Isa,
    stem: Pointwise,
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

/// One image's head maps and its taps' (channels, average, maximum).
type ImageOut = (Vec<f32>, Vec<(usize, Vec<f32>, Vec<f32>)>);

thread_local! {
    /// Each thread's buffers, kept between images and batches (no allocation, no zeroing).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

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
        // Stem `[co, ci, ky, kx]` -> `[co, (ky, kx, ci)]`, the patches' order.
        let sw = t("stem.weight");
        let co = layout::STEM_CHANNELS;
        let mut stem_w = vec![0.0; sw.len()];
        for o in 0..co {
            for ci in 0..3 {
                for ky in 0..3 {
                    for kx in 0..3 {
                        stem_w[o * STEM_K + (ky * 3 + kx) * 3 + ci] =
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
                    depthwise: Depthwise::new(
                        t(&format!("blocks.{i}.depthwise.weight")),
                        t(&format!("blocks.{i}.depthwise.bias")),
                        mid,
                        spec.kernel,
                        spec.stride,
                    ),
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
            stem: Pointwise::new(isa, &stem_w, t("stem.bias"), co, STEM_K),
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
        let results: Vec<ImageOut> = (0..n)
            .into_par_iter()
            .map(|i| {
                SCRATCH.with_borrow_mut(|s| {
                    self.image(&x[i * per_in..(i + 1) * per_in], h, w, taps, s)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n * per_out);
        let mut sums: Vec<TapSummary> = taps
            .iter()
            .map(|_| TapSummary {
                channels: 0,
                avg: Vec::new(),
                max: Vec::new(),
            })
            .collect();
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
    fn image(&self, x: &[f32], h: usize, w: usize, taps: &[usize], s: &mut Scratch) -> ImageOut {
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
        let pixels = stem_patches(x, h, w, &mut s.c);
        self.stem
            .forward(self.isa, &s.c, pixels, true, None, &mut s.a);
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
            b.depthwise.forward(self.isa, expanded, ch, cw, &mut s.c);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random_weights(seed: &mut u64) -> Weights {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let tensors = lite0_weights::expected_tensors()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let fan_in = if shape.len() > 1 { n / shape[0] } else { 1 };
                let scale = (6.0 / fan_in as f32).sqrt();
                (name, shape, (0..n).map(|_| next() * scale).collect())
            })
            .collect();
        Weights::from_tensors(tensors).unwrap()
    }

    #[test]
    fn same_padding_is_tensorflows() {
        // 224 -> 112 with a 3x3 stride 2: one extra column after, none before.
        assert_eq!(same_padding(224, 3, 2), (112, 0));
        assert_eq!(same_padding(56, 5, 2), (28, 1));
        assert_eq!(same_padding(14, 5, 1), (14, 2));
        assert_eq!(same_padding(7, 3, 1), (7, 1));
        assert_eq!(same_padding(225, 3, 2), (113, 1));
    }

    /// AVX2 and AVX-512 sum every output in the same order (one fused multiply-add per term,
    /// whatever the tile sizes), so the features are the same bits on every x86 CPU the
    /// project runs on; the portable fallback (no FMA) only rounds differently.
    #[test]
    fn every_vector_instruction_set_gives_the_same_bits_and_any_size_works() {
        let mut seed = 0x1234_5678;
        let w = random_weights(&mut seed);
        let isas = Isa::available();
        for (h, wd) in [(64, 64), (37, 50)] {
            let x: Vec<f32> = (0..2 * h * wd * 3)
                .map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0)
                .collect();
            let taps = [0, 5, 17];
            type Out = (Isa, (Vec<f32>, Vec<TapSummary>));
            let outs: Vec<Out> = isas
                .iter()
                .map(|&isa| {
                    (
                        isa,
                        Lite0::with_isa(isa, &w).forward_with_taps(&x, 2, h, wd, &taps),
                    )
                })
                .collect();
            let (oh, ow, oc) = Lite0::with_isa(isas[0], &w).output_shape(h, wd);
            assert_eq!((oh, ow, oc), (h.div_ceil(32), wd.div_ceil(32), 1280));
            let reference = &outs.last().unwrap().1;
            assert_eq!(reference.0.len(), 2 * oh * ow * oc);
            assert!(
                reference.0.iter().any(|v| *v > 0.0),
                "an all-zero output proves nothing"
            );
            for (isa, (f, t)) in &outs {
                if *isa == Isa::Portable {
                    let scale = reference.0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let diff = f
                        .iter()
                        .zip(&reference.0)
                        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(diff <= 1e-4 * scale, "{isa:?}: {diff} of {scale}");
                } else {
                    assert_eq!(f, &reference.0, "{isa:?} features, {h}x{wd}");
                    assert_eq!(t, &reference.1, "{isa:?} taps, {h}x{wd}");
                }
            }
        }
    }
}
