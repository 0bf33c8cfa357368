//! 3x3 convolutions with padding 1, stride 1, bias and ReLU (VGG's) on channels-last maps, and
//! their backward pass, on `vgg-extract`'s packed GEMM micro-kernels.
//!
//! - Forward: per image, the `(h*w) x 9c` patch matrix times the `(9c) x o` kernel.
//! - Input gradient: per image, the output gradient times the transposed kernel, folded back
//!   onto the input (col2im).
//! - Kernel gradient: `dW^T (o x 9c) += dZ^T (o x g*h*w) * patches (g*h*w x 9c)` for groups
//!   of [`GROUP`] images in order, the columns split among threads.
//!
//! Every output value is one chain of fused multiply-adds in a fixed order (the micro-kernels
//! do not block the inner dimension), so results are the same bits on AVX-512 and AVX2 and for
//! any thread count.

use rayon::prelude::*;
use std::cell::RefCell;
use vgg_extract::kernels::{microkernel, AlignedBuf, Isa};

/// Images per kernel-gradient product (its inner dimension is `GROUP * h * w`).
pub const GROUP: usize = 4;

/// One convolution's geometry: an `h x w x c` input, `o` filters, an `h x w x o` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub o: usize,
}

impl Shape {
    /// Output positions, `h * w`.
    pub fn p(&self) -> usize {
        self.h * self.w
    }
    /// Patch length, `9c`.
    pub fn k(&self) -> usize {
        9 * self.c
    }
    pub fn input_len(&self) -> usize {
        self.p() * self.c
    }
    pub fn output_len(&self) -> usize {
        self.p() * self.o
    }
    pub fn kernel_len(&self) -> usize {
        self.k() * self.o
    }
}

/// A right-hand side `B` (`k x n`) packed in panels of `isa.nr()` columns.
pub struct Packed {
    isa: Isa,
    k: usize,
    n: usize,
    buf: AlignedBuf,
}

impl Packed {
    /// `B[r][c] = b(r, c)`.
    pub fn new(isa: Isa, k: usize, n: usize, b: impl Fn(usize, usize) -> f32) -> Packed {
        let buf = vgg_extract::kernels::pack_b(k, n, isa.nr(), b);
        Packed { isa, k, n, buf }
    }

    /// A row-major `k x n` matrix (copied a panel's row at a time).
    pub fn rows(isa: Isa, k: usize, n: usize, m: &[f32]) -> Packed {
        assert_eq!(m.len(), k * n);
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let mut buf = AlignedBuf::zeroed(panels * k * nr);
        buf.par_chunks_mut(k * nr)
            .enumerate()
            .for_each(|(p, panel)| {
                let (c0, w) = (p * nr, nr.min(n - p * nr));
                for (r, dst) in panel.chunks_exact_mut(nr).enumerate() {
                    dst[..w].copy_from_slice(&m[r * n + c0..r * n + c0 + w]);
                }
            });
        Packed { isa, k, n, buf }
    }

    /// The transpose of a row-major `n x k` matrix.
    pub fn transposed(isa: Isa, k: usize, n: usize, m: &[f32]) -> Packed {
        assert_eq!(m.len(), k * n);
        Packed::new(isa, k, n, |r, c| m[c * k + r])
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.isa.nr())
    }
}

/// `C (m x n) = A (m x k) * B` (or `+=` with `accumulate`) for B's panels `p0..p1` (C's
/// columns `p0 * nr ..`), `A` row-major at stride `lda`, `C` at stride `ldc`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &Packed,
    (p0, p1): (usize, usize),
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (isa, k) = (b.isa, b.k);
    let (mr, nr) = (isa.mr(), isa.nr());
    let n = (p1 * nr).min(b.n) - p0 * nr;
    if m == 0 || n == 0 {
        return;
    }
    assert!(p1 <= b.panels() && p0 < p1);
    assert!(a.len() >= (m - 1) * lda + k && lda >= k);
    assert!(c.len() >= (m - 1) * ldc + n && ldc >= n);
    let mut tile = [0.0f32; 12 * 32];
    let mut a_edge = vec![0.0f32; mr * k];
    for p in p0..p1 {
        let cols = nr.min(b.n - p * nr);
        let bp = b.buf[p * k * nr..].as_ptr();
        for g in 0..m.div_ceil(mr) {
            let rows = mr.min(m - g * mr);
            let (ap, la) = if rows < mr {
                a_edge.fill(0.0);
                for r in 0..rows {
                    let src = &a[(g * mr + r) * lda..][..k];
                    a_edge[r * k..(r + 1) * k].copy_from_slice(src);
                }
                (a_edge.as_ptr(), k)
            } else {
                (a[g * mr * lda..].as_ptr(), lda)
            };
            let c0 = g * mr * ldc + (p - p0) * nr;
            // SAFETY: the asserts above keep rows `g*mr..g*mr+rows` of A (or the zero-padded
            // copy of `mr` rows) and panel `p` (`k * nr` values) inside their buffers; a whole
            // tile of C is inside `c`, a partial one goes through `tile`; `isa` came from
            // `Isa::detect` or `Isa::available`.
            unsafe {
                if rows == mr && cols == nr {
                    microkernel(isa, k, ap, la, bp, c[c0..].as_mut_ptr(), ldc, accumulate);
                } else {
                    if accumulate {
                        for r in 0..rows {
                            tile[r * nr..r * nr + cols].copy_from_slice(&c[c0 + r * ldc..][..cols]);
                        }
                    }
                    microkernel(isa, k, ap, la, bp, tile.as_mut_ptr(), nr, accumulate);
                    for r in 0..rows {
                        c[c0 + r * ldc..][..cols].copy_from_slice(&tile[r * nr..r * nr + cols]);
                    }
                }
            }
        }
    }
}

/// Writes the `(h*w) x 9c` patch matrix of `x` (`h x w x c`, zero outside) into `cols`; the
/// column of input channel `ch` at kernel position `(ky, kx)` is `(ky * 3 + kx) * c + ch`.
pub fn im2col(x: &[f32], s: Shape, cols: &mut [f32]) {
    let (h, w, c, k) = (s.h, s.w, s.c, s.k());
    for oy in 0..h {
        for ox in 0..w {
            let row = &mut cols[(oy * w + ox) * k..][..k];
            for ky in 0..3 {
                for kx in 0..3 {
                    let d = &mut row[(ky * 3 + kx) * c..][..c];
                    let (iy, ix) = ((oy + ky).wrapping_sub(1), (ox + kx).wrapping_sub(1));
                    if iy < h && ix < w {
                        d.copy_from_slice(&x[(iy * w + ix) * c..][..c]);
                    } else {
                        d.fill(0.0);
                    }
                }
            }
        }
    }
}

/// Adds the patch gradients `dcols` (`(h*w) x 9c`) onto the input gradient `dx` (`h x w x c`).
pub fn col2im_add(dcols: &[f32], s: Shape, dx: &mut [f32]) {
    let (h, w, c, k) = (s.h, s.w, s.c, s.k());
    for oy in 0..h {
        for ox in 0..w {
            let row = &dcols[(oy * w + ox) * k..][..k];
            for ky in 0..3 {
                for kx in 0..3 {
                    let (iy, ix) = ((oy + ky).wrapping_sub(1), (ox + kx).wrapping_sub(1));
                    if iy < h && ix < w {
                        let d = &mut dx[(iy * w + ix) * c..][..c];
                        for (d, v) in d.iter_mut().zip(&row[(ky * 3 + kx) * c..][..c]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn with_cols<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < len {
            c.resize(len, 0.0);
        }
        f(&mut c[..len])
    })
}

/// The kernel (`9c x o`, row-major) packed for the forward pass.
pub fn pack_kernel(isa: Isa, s: Shape, kernel: &[f32]) -> Packed {
    Packed::rows(isa, s.k(), s.o, kernel)
}

/// `out = ReLU(conv(x) + bias)` for `n` images (`x`: `n x h x w x c`; `out`: `n x h x w x o`).
pub fn forward(s: Shape, x: &[f32], n: usize, kernel: &Packed, bias: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), n * s.input_len());
    assert_eq!(out.len(), n * s.output_len());
    assert_eq!((kernel.k, kernel.n, bias.len()), (s.k(), s.o, s.o));
    x.par_chunks_exact(s.input_len())
        .zip(out.par_chunks_exact_mut(s.output_len()))
        .for_each(|(x, y)| {
            with_cols(s.p() * s.k(), |cols| {
                im2col(x, s, cols);
                matmul(
                    cols,
                    s.k(),
                    s.p(),
                    kernel,
                    (0, kernel.panels()),
                    y,
                    s.o,
                    false,
                );
            });
            for px in y.chunks_exact_mut(s.o) {
                for (v, b) in px.iter_mut().zip(bias) {
                    *v = (*v + b).max(0.0);
                }
            }
        });
}

/// Gradients of one convolution layer for a batch.
pub struct LayerGrads {
    /// `9c x o`.
    pub kernel: Vec<f32>,
    /// `o`.
    pub bias: Vec<f32>,
    /// `n x h x w x c`, when asked for.
    pub input: Option<Vec<f32>>,
}

/// Backward pass of `y = ReLU(conv(x) + bias)` for `n` images, given `gy = dL/dy`: the kernel
/// and bias gradients (summed over the images) and, if `want_input`, `dL/dx`. `kernel` is the
/// `9c x o` row-major kernel of the forward pass.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    isa: Isa,
    s: Shape,
    x: &[f32],
    y: &[f32],
    gy: &[f32],
    n: usize,
    kernel: &[f32],
    want_input: bool,
) -> LayerGrads {
    assert_eq!(x.len(), n * s.input_len());
    assert_eq!(y.len(), n * s.output_len());
    assert_eq!(gy.len(), y.len());
    assert_eq!(kernel.len(), s.kernel_len());
    let (p, k, o) = (s.p(), s.k(), s.o);
    // dZ: the gradient before the ReLU.
    let gz: Vec<f32> = y
        .par_chunks(1 << 16)
        .zip(gy.par_chunks(1 << 16))
        .flat_map_iter(|(y, g)| {
            y.iter()
                .zip(g)
                .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
        })
        .collect();
    let mut bias = vec![0.0f32; o];
    for px in gz.chunks_exact(o) {
        for (b, g) in bias.iter_mut().zip(px) {
            *b += g;
        }
    }
    // Kernel gradient, transposed: dW^T (o x 9c), columns split among tasks.
    let nr = isa.nr();
    let panels = k.div_ceil(nr);
    let per_task = panels
        .div_ceil(4 * rayon::current_num_threads().max(1))
        .max(1);
    let ranges: Vec<(usize, usize)> = (0..panels)
        .step_by(per_task)
        .map(|p0| (p0, (p0 + per_task).min(panels)))
        .collect();
    let mut blocks: Vec<Vec<f32>> = ranges
        .iter()
        .map(|&(p0, p1)| vec![0.0f32; o * ((p1 * nr).min(k) - p0 * nr)])
        .collect();
    let mut cols = vec![0.0f32; GROUP * p * k];
    let mut gzt = vec![0.0f32; o * GROUP * p];
    for (gi, first) in (0..n).step_by(GROUP).enumerate() {
        let g = GROUP.min(n - first);
        let rows = g * p;
        cols[..rows * k]
            .par_chunks_exact_mut(p * k)
            .zip(x[first * s.input_len()..].par_chunks_exact(s.input_len()))
            .for_each(|(c, x)| im2col(x, s, c));
        let b = Packed::rows(isa, rows, k, &cols[..rows * k]);
        let zs = &gz[first * p * o..(first + g) * p * o];
        for ch in 0..o {
            for r in 0..rows {
                gzt[ch * rows + r] = zs[r * o + ch];
            }
        }
        let gzt = &gzt[..o * rows];
        blocks
            .par_iter_mut()
            .zip(&ranges)
            .for_each(|(blk, &(p0, p1))| {
                let width = (p1 * nr).min(k) - p0 * nr;
                matmul(gzt, rows, o, &b, (p0, p1), blk, width, gi > 0);
            });
    }
    let mut dk = vec![0.0f32; k * o];
    for (blk, &(p0, p1)) in blocks.iter().zip(&ranges) {
        let width = (p1 * nr).min(k) - p0 * nr;
        for ch in 0..o {
            for j in 0..width {
                dk[(p0 * nr + j) * o + ch] = blk[ch * width + j];
            }
        }
    }
    let input = want_input.then(|| {
        let kt = Packed::transposed(isa, o, k, kernel);
        let mut dx = vec![0.0f32; n * s.input_len()];
        dx.par_chunks_exact_mut(s.input_len())
            .zip(gz.par_chunks_exact(s.output_len()))
            .for_each(|(dx, gz)| {
                with_cols(p * k, |dcols| {
                    matmul(gz, o, p, &kt, (0, kt.panels()), dcols, k, false);
                    col2im_add(dcols, s, dx);
                });
            });
        dx
    });
    LayerGrads {
        kernel: dk,
        bias,
        input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut st = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                st ^= st << 13;
                st ^= st >> 17;
                st ^= st << 5;
                (st % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Direct convolution in f64, before the ReLU.
    fn conv_naive(x: &[f32], s: Shape, kernel: &[f32], bias: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; s.output_len()];
        for oy in 0..s.h {
            for ox in 0..s.w {
                for f in 0..s.o {
                    let mut acc = bias[f] as f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = (oy as isize + ky - 1, ox as isize + kx - 1);
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            for c in 0..s.c {
                                acc += x[((iy as usize) * s.w + ix as usize) * s.c + c] as f64
                                    * kernel[(((ky * 3 + kx) as usize) * s.c + c) * s.o + f] as f64;
                            }
                        }
                    }
                    out[(oy * s.w + ox) * s.o + f] = acc;
                }
            }
        }
        out
    }

    const S: Shape = Shape {
        h: 5,
        w: 4,
        c: 7,
        o: 37,
    };

    #[test]
    fn forward_matches_a_direct_convolution_on_every_instruction_set() {
        let n = 3;
        let x = values(n * S.input_len(), 1);
        let kern = values(S.kernel_len(), 2);
        let bias = values(S.o, 3);
        let mut first: Option<Vec<f32>> = None;
        for isa in Isa::available() {
            let mut y = vec![0.0; n * S.output_len()];
            forward(S, &x, n, &pack_kernel(isa, S, &kern), &bias, &mut y);
            for i in 0..n {
                let want = conv_naive(&x[i * S.input_len()..][..S.input_len()], S, &kern, &bias);
                for (a, b) in y[i * S.output_len()..].iter().zip(&want) {
                    assert!((*a as f64 - b.max(0.0)).abs() < 1e-4, "{isa:?} {a} {b}");
                }
            }
            if isa != Isa::Portable {
                match &first {
                    None => first = Some(y),
                    Some(f) => assert_eq!(f, &y, "{isa:?} differs"),
                }
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences_and_is_the_same_on_every_instruction_set() {
        let n = 6; // two kernel-gradient groups, the second partial
        let x = values(n * S.input_len(), 4);
        let kern = values(S.kernel_len(), 5);
        let bias: Vec<f32> = values(S.o, 6).iter().map(|b| b * 0.1).collect();
        let probe = values(n * S.output_len(), 7);
        // L = sum(probe * y): dL/dy = probe.
        let loss = |kern: &[f32], bias: &[f32], x: &[f32]| -> f64 {
            (0..n)
                .map(|i| {
                    let z = conv_naive(&x[i * S.input_len()..][..S.input_len()], S, kern, bias);
                    z.iter()
                        .zip(&probe[i * S.output_len()..])
                        .map(|(z, p)| z.max(0.0) * *p as f64)
                        .sum::<f64>()
                })
                .sum()
        };
        let mut first: Option<(Vec<f32>, Vec<f32>, Vec<f32>)> = None;
        for isa in Isa::available() {
            let mut y = vec![0.0; n * S.output_len()];
            forward(S, &x, n, &pack_kernel(isa, S, &kern), &bias, &mut y);
            let g = backward(isa, S, &x, &y, &probe, n, &kern, true);
            let dx = g.input.clone().unwrap();
            let eps = 1e-3f32;
            for &i in &[0usize, 17, 100, S.kernel_len() - 1] {
                let (mut kp, mut km) = (kern.clone(), kern.clone());
                kp[i] += eps;
                km[i] -= eps;
                let fd = (loss(&kp, &bias, &x) - loss(&km, &bias, &x)) / (2.0 * eps as f64);
                assert!(
                    (fd - g.kernel[i] as f64).abs() < 2e-2,
                    "dW[{i}] {fd} {}",
                    g.kernel[i]
                );
            }
            for &i in &[0usize, 3, S.o - 1] {
                let (mut bp, mut bm) = (bias.clone(), bias.clone());
                bp[i] += eps;
                bm[i] -= eps;
                let fd = (loss(&kern, &bp, &x) - loss(&kern, &bm, &x)) / (2.0 * eps as f64);
                assert!(
                    (fd - g.bias[i] as f64).abs() < 2e-2,
                    "db[{i}] {fd} {}",
                    g.bias[i]
                );
            }
            for &i in &[0usize, 41, n * S.input_len() - 1] {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += eps;
                xm[i] -= eps;
                let fd = (loss(&kern, &bias, &xp) - loss(&kern, &bias, &xm)) / (2.0 * eps as f64);
                assert!((fd - dx[i] as f64).abs() < 2e-2, "dx[{i}] {fd} {}", dx[i]);
            }
            if isa != Isa::Portable {
                let got = (g.kernel, g.bias, dx);
                match &first {
                    None => first = Some(got),
                    Some(f) => assert!(f == &got, "{isa:?} differs"),
                }
            }
        }
    }
}
