//! Channels-last kernels of one image: 3x3 valid convolution (im2col + `gemm`), ReLU fused with
//! 2x2 max-pooling, and their backward passes. Single-threaded: callers parallelise over images.
//!
//! Layouts: feature maps (H, W, C) row-major; kernels (3, 3, C, O) (Keras's HWIO), which is the
//! (9C, O) matrix whose row index is (ky * 3 + kx) * C + c, matching the im2col column order.

/// Shape of one convolution + pooling layer on one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c: usize,
    /// Filters (output channels).
    pub o: usize,
}

impl ConvShape {
    /// Convolution output height (valid padding).
    pub fn oh(&self) -> usize {
        self.h - 2
    }
    /// Convolution output width.
    pub fn ow(&self) -> usize {
        self.w - 2
    }
    /// Pooled height (floor, as Keras's and PyTorch's default).
    pub fn ph(&self) -> usize {
        self.oh() / 2
    }
    /// Pooled width.
    pub fn pw(&self) -> usize {
        self.ow() / 2
    }
    /// im2col row length, 9C.
    pub fn k(&self) -> usize {
        9 * self.c
    }
    /// Convolution output positions, OH x OW.
    pub fn p(&self) -> usize {
        self.oh() * self.ow()
    }
    /// Values of the input map.
    pub fn input_len(&self) -> usize {
        self.h * self.w * self.c
    }
    /// Values of the pooled output map.
    pub fn pooled_len(&self) -> usize {
        self.ph() * self.pw() * self.o
    }
    /// Kernel values.
    pub fn kernel_len(&self) -> usize {
        self.k() * self.o
    }
}

/// A matrix operand: values with their row and column strides (in elements), so that a
/// transposed operand needs no copy.
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// A row-major matrix (`cols` values per row).
fn rows(data: &[f32], cols: usize) -> Strided<'_> {
    Strided {
        data,
        rs: cols,
        cs: 1,
    }
}

/// The transpose of a row-major matrix of `cols` values per row.
fn transposed(data: &[f32], cols: usize) -> Strided<'_> {
    Strided {
        data,
        rs: 1,
        cs: cols,
    }
}

/// Row-major `dst (m x n) = lhs (m x k) * rhs (k x n)`.
fn matmul((m, n, k): (usize, usize, usize), dst: &mut [f32], lhs: Strided<'_>, rhs: Strided<'_>) {
    let accumulate = false;
    let Strided {
        data: lhs,
        rs: lhs_rs,
        cs: lhs_cs,
    } = lhs;
    let Strided {
        data: rhs,
        rs: rhs_rs,
        cs: rhs_cs,
    } = rhs;
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n);
    if k > 0 {
        assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
        assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    }
    // SAFETY: the asserts above keep every element that gemm reads or writes inside the slices;
    // `dst` does not alias the operands (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Writes the (P, 9C) patch matrix of `x` into `col`.
pub fn im2col(x: &[f32], s: ConvShape, col: &mut [f32]) {
    let (ow, c, k) = (s.ow(), s.c, s.k());
    let run = 3 * c;
    for oy in 0..s.oh() {
        for ky in 0..3 {
            let src_row = &x[(oy + ky) * s.w * c..];
            for ox in 0..ow {
                let d = (oy * ow + ox) * k + ky * run;
                col[d..d + run].copy_from_slice(&src_row[ox * c..ox * c + run]);
            }
        }
    }
}

/// Adds the (P, 9C) patch gradients `dcol` back onto the input gradient `dx` (H, W, C).
pub fn col2im_add(dcol: &[f32], s: ConvShape, dx: &mut [f32]) {
    let (ow, c, k) = (s.ow(), s.c, s.k());
    let run = 3 * c;
    for oy in 0..s.oh() {
        for ky in 0..3 {
            let row = (oy + ky) * s.w * c;
            for ox in 0..ow {
                let src = &dcol[(oy * ow + ox) * k + ky * run..][..run];
                let dst = &mut dx[row + ox * c..][..run];
                for (d, v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            }
        }
    }
}

/// Convolution without bias: `out` (P, O) = im2col(x) * kernel. `col` is scratch of P x 9C.
pub fn conv(x: &[f32], s: ConvShape, kernel: &[f32], col: &mut [f32], out: &mut [f32]) {
    let (p, k, o) = (s.p(), s.k(), s.o);
    im2col(x, s, &mut col[..p * k]);
    matmul((p, o, k), &mut out[..p * o], rows(col, k), rows(kernel, o));
}

/// Bias, ReLU and 2x2 max-pooling of a convolution output `out` (P, O): `pooled` (PH, PW, O) =
/// max(0, max of the window + bias); `argmax` gets the window position (0..4, row-major, the
/// first maximum on ties) of each pooled value.
pub fn bias_relu_pool(
    out: &[f32],
    s: ConvShape,
    bias: &[f32],
    pooled: &mut [f32],
    argmax: &mut [u8],
) {
    let (ow, o) = (s.ow(), s.o);
    for py in 0..s.ph() {
        for px in 0..s.pw() {
            let base = ((2 * py) * ow + 2 * px) * o;
            let offs = [base, base + o, base + ow * o, base + ow * o + o];
            let q = (py * s.pw() + px) * o;
            for ch in 0..o {
                let mut best = out[offs[0] + ch];
                let mut at = 0u8;
                for (i, &off) in offs.iter().enumerate().skip(1) {
                    let v = out[off + ch];
                    if v > best {
                        best = v;
                        at = i as u8;
                    }
                }
                pooled[q + ch] = (best + bias[ch]).max(0.0);
                argmax[q + ch] = at;
            }
        }
    }
}

/// Scratch buffers of [`conv_backward`].
#[derive(Default)]
pub struct Scratch {
    /// im2col patches, P x 9C.
    pub col: Vec<f32>,
    /// Convolution output or its gradient, P x O.
    pub out: Vec<f32>,
    /// Patch gradients, P x 9C.
    pub dcol: Vec<f32>,
}

impl Scratch {
    /// Grows the buffers to fit layer `s`.
    pub fn fit(&mut self, s: ConvShape) {
        let (pk, po) = (s.p() * s.k(), s.p() * s.o);
        if self.col.len() < pk {
            self.col.resize(pk, 0.0);
            self.dcol.resize(pk, 0.0);
        }
        if self.out.len() < po {
            self.out.resize(po, 0.0);
        }
    }
}

/// What the forward pass of one conv + bias + ReLU + pool layer kept for its backward pass.
#[derive(Clone, Copy)]
pub struct LayerForward<'a> {
    /// The layer input (H, W, C).
    pub x: &'a [f32],
    pub shape: ConvShape,
    /// (9C, O).
    pub kernel: &'a [f32],
    /// The pooled output and, per pooled value, its window position.
    pub pooled: &'a [f32],
    pub argmax: &'a [u8],
}

/// The gradients a layer's backward pass writes (overwritten).
pub struct LayerGrads<'a> {
    /// (9C, O).
    pub dkernel: &'a mut [f32],
    /// (O).
    pub dbias: &'a mut [f32],
    /// The input gradient (H, W, C), when the layer is not the first.
    pub dx: Option<&'a mut [f32]>,
}

/// Backward pass of conv + bias + ReLU + pool for one image: from the gradient `gpooled` of the
/// pooled output, the kernel, bias and (if asked for) input gradients.
pub fn conv_backward(
    fwd: LayerForward<'_>,
    gpooled: &[f32],
    scratch: &mut Scratch,
    grads: LayerGrads<'_>,
) {
    let LayerForward {
        x,
        shape: s,
        kernel,
        pooled,
        argmax,
    } = fwd;
    let LayerGrads { dkernel, dbias, dx } = grads;
    scratch.fit(s);
    let (p, k, o, ow) = (s.p(), s.k(), s.o, s.ow());
    let dy = &mut scratch.out[..p * o];
    dy.fill(0.0);
    dbias[..o].fill(0.0);
    for py in 0..s.ph() {
        for px in 0..s.pw() {
            let base = ((2 * py) * ow + 2 * px) * o;
            let offs = [base, base + o, base + ow * o, base + ow * o + o];
            let q = (py * s.pw() + px) * o;
            for ch in 0..o {
                if pooled[q + ch] > 0.0 {
                    let g = gpooled[q + ch];
                    dy[offs[argmax[q + ch] as usize] + ch] = g;
                    dbias[ch] += g;
                }
            }
        }
    }
    let col = &mut scratch.col[..p * k];
    im2col(x, s, col);
    // dkernel (9C x O) = col^T (9C x P) * dy (P x O)
    matmul(
        (k, o, p),
        &mut dkernel[..k * o],
        transposed(col, k),
        rows(dy, o),
    );
    if let Some(dx) = dx {
        // dcol (P x 9C) = dy (P x O) * kernel^T (O x 9C)
        let dcol = &mut scratch.dcol[..p * k];
        matmul((p, k, o), dcol, rows(dy, o), transposed(kernel, o));
        dx[..s.input_len()].fill(0.0);
        col2im_add(dcol, s, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, for reference.
    fn conv_naive(x: &[f32], s: ConvShape, kernel: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; s.p() * s.o];
        for oy in 0..s.oh() {
            for ox in 0..s.ow() {
                for f in 0..s.o {
                    let mut acc = 0.0;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            for c in 0..s.c {
                                acc += x[((oy + ky) * s.w + ox + kx) * s.c + c]
                                    * kernel[((ky * 3 + kx) * s.c + c) * s.o + f];
                            }
                        }
                    }
                    out[(oy * s.ow() + ox) * s.o + f] = acc;
                }
            }
        }
        out
    }

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

    #[test]
    fn conv_matches_direct_convolution() {
        let s = ConvShape {
            h: 7,
            w: 6,
            c: 3,
            o: 5,
        };
        let x = values(s.input_len(), 1);
        let kern = values(s.kernel_len(), 2);
        let mut col = vec![0.0; s.p() * s.k()];
        let mut out = vec![0.0; s.p() * s.o];
        conv(&x, s, &kern, &mut col, &mut out);
        for (a, b) in out.iter().zip(conv_naive(&x, s, &kern)) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn col2im_is_adjoint_of_im2col() {
        // <im2col(x), g> == <x, col2im(g)>
        let s = ConvShape {
            h: 6,
            w: 8,
            c: 2,
            o: 1,
        };
        let x = values(s.input_len(), 3);
        let g = values(s.p() * s.k(), 4);
        let mut col = vec![0.0; s.p() * s.k()];
        im2col(&x, s, &mut col);
        let mut dx = vec![0.0; s.input_len()];
        col2im_add(&g, s, &mut dx);
        let a: f64 = col.iter().zip(&g).map(|(a, b)| (a * b) as f64).sum();
        let b: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
        assert!((a - b).abs() < 1e-4, "{a} {b}");
    }

    #[test]
    fn pool_takes_first_maximum_and_odd_edges_are_dropped() {
        // 5x5 conv output (7x7 input), one channel: pooled 2x2, last row and column dropped.
        let s = ConvShape {
            h: 7,
            w: 7,
            c: 1,
            o: 1,
        };
        let mut out = vec![-1.0; 25];
        out[0] = 2.0; // window (0,0): position 0
        out[1] = 2.0; // tie with position 0 -> first wins
        out[2 * 5 + 3] = 5.0; // window (1,1) covers rows 2-3, cols 2-3: position 1
        out[4 * 5 + 4] = 9.0; // dropped edge
        let (mut pooled, mut arg) = (vec![0.0; 4], vec![0u8; 4]);
        bias_relu_pool(&out, s, &[0.5], &mut pooled, &mut arg);
        assert_eq!(pooled, vec![2.5, 0.0, 0.0, 5.5]);
        assert_eq!(arg, vec![0, 0, 0, 1]);
    }
}
