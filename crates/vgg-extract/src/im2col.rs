//! 3x3 stride-1 pad-1 convolution + bias + ReLU as a GEMM over an explicit im2col buffer,
//! for layers with few input channels (the first layer, fed RGB), where the Winograd
//! transforms would cost more than they save. The buffer covers a band of output rows at a
//! time, so its size does not depend on the batch.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::gemm::{gemm, pack_b, AlignedBuf, Isa};

/// A convolution layer packed for the im2col path.
pub(crate) struct Im2col {
    isa: Isa,
    c_in: usize,
    c_out: usize,
    /// `B[(ky * 3 + kx) * c_in + c][k] = weight[k][c][ky][kx]`, packed.
    b: AlignedBuf,
    bias: Vec<f32>,
}

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Output pixels per unit of work.
const PIXELS_PER_UNIT: usize = 1024;

impl Im2col {
    /// Packs a layer. `weight` is `[c_out, c_in, 3, 3]` (PyTorch layout), `bias` is `[c_out]`.
    pub(crate) fn new(isa: Isa, c_in: usize, c_out: usize, weight: &[f32], bias: &[f32]) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9);
        assert_eq!(bias.len(), c_out);
        let b = pack_b(9 * c_in, c_out, isa.nr(), |r, k| {
            let (tap, c) = (r / c_in, r % c_in);
            weight[(k * c_in + c) * 9 + tap]
        });
        Im2col {
            isa,
            c_in,
            c_out,
            b,
            bias: bias.to_vec(),
        }
    }

    pub(crate) fn c_out(&self) -> usize {
        self.c_out
    }

    /// Convolution + bias + ReLU of `x` (`[n, h, w, c_in]`) into `out` (`[n, h, w, c_out]`).
    pub(crate) fn forward(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        let (c_in, c_out) = (self.c_in, self.c_out);
        assert_eq!(x.len(), n * h * w * c_in);
        assert_eq!(out.len(), n * h * w * c_out);
        if out.is_empty() {
            return;
        }
        let kdim = 9 * c_in;
        let unit = PIXELS_PER_UNIT.min(n * h * w);
        out.par_chunks_mut(unit * c_out)
            .enumerate()
            .for_each(|(u, dst)| {
                let p0 = u * unit;
                let pixels = dst.len() / c_out;
                COLS.with(|cols| {
                    let cols = &mut *cols.borrow_mut();
                    cols.clear();
                    cols.resize(pixels * kdim, 0.0);
                    for (q, a) in cols.chunks_exact_mut(kdim).enumerate() {
                        let p = p0 + q;
                        let (img, y, xx) = (p / (h * w), p / w % h, p % w);
                        for tap in 0..9 {
                            let (sy, sx) =
                                ((y + tap / 3) as isize - 1, (xx + tap % 3) as isize - 1);
                            if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                let s = ((img * h + sy as usize) * w + sx as usize) * c_in;
                                a[tap * c_in..(tap + 1) * c_in].copy_from_slice(&x[s..s + c_in]);
                            }
                        }
                    }
                    // SAFETY: `cols` holds `pixels` rows of `kdim`, `b` is packed for `kdim x c_out`
                    // and this ISA, `dst` holds `pixels` rows of `c_out`.
                    unsafe {
                        gemm(
                            self.isa,
                            pixels,
                            c_out,
                            kdim,
                            cols.as_ptr(),
                            kdim,
                            self.b.as_ptr(),
                            dst.as_mut_ptr(),
                            c_out,
                        )
                    };
                });
                for px in dst.chunks_exact_mut(c_out) {
                    for (v, b) in px.iter_mut().zip(&self.bias) {
                        *v = crate::nan_relu(*v + b);
                    }
                }
            });
    }
}

/// 2x2 stride-2 max-pool (floor) of `x` (`[n, h, w, c]`) into `out` (`[n, h / 2, w / 2, c]`).
pub(crate) fn maxpool2x2(x: &[f32], n: usize, h: usize, w: usize, c: usize, out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    assert_eq!(x.len(), n * h * w * c);
    assert_eq!(out.len(), n * oh * ow * c);
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(ow * c).enumerate().for_each(|(r, dst)| {
        let (img, oy) = (r / oh, r % oh);
        for ox in 0..ow {
            let at = |dy: usize, dx: usize| ((img * h + 2 * oy + dy) * w + 2 * ox + dx) * c;
            let (a, b, p, q) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
            for (j, o) in dst[ox * c..(ox + 1) * c].iter_mut().enumerate() {
                let (top, bottom) = (
                    crate::nan_max(x[a + j], x[b + j]),
                    crate::nan_max(x[p + j], x[q + j]),
                );
                *o = crate::nan_max(top, bottom);
            }
        }
    });
}
