//! The two skinny matrix products every loss, gradient and Hessian-vector evaluation
//! needs, on the row-major `n x d` float32 feature matrix `X` (used in place, never
//! copied):
//!
//! * forward: `Z (n x k) = X · Wᵀ + b`,
//! * backward: `G_W (k x d) += Aᵀ · X`, `g_b += column sums of A`, for an `n x k`
//!   matrix `A`.
//!
//! [`Precision::F64`] runs the crate's own blocked float64 kernels ([`crate::kernels`]);
//! [`Precision::F32`] runs float32 GEMMs of the `gemm` crate on float32 copies of the
//! small operands. Both parallelise over the current rayon pool and split only output
//! dimensions between threads, so results are bit-identical for a given thread count.
//!
//! Parameters are stored class-major with the intercept last: class `c` owns
//! `theta[c * (d + 1) .. (c + 1) * (d + 1)]`, coefficients first.

use gemm::Parallelism;

/// Arithmetic of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float64 products of the float32 features (exact in float64) with float64
    /// parameters, as scikit-learn computes on float64 input. The default.
    #[default]
    F64,
    /// float32 products (parameters rounded to float32 for each product), float64
    /// softmax, loss and optimiser state. Faster (about 1.5-2x per evaluation), but the
    /// loss and gradient carry float32 rounding, so late iterations can leave
    /// scikit-learn's path: on 2000 x 25088 pool5-like features an lbfgs fit at C = 0.1
    /// stopped one iteration earlier at coefficients 21 % (relative L2) away from
    /// scikit-learn's, with 99.8 % of held-out predictions equal. Use it for quick
    /// exploration, not for results compared against scikit-learn.
    F32,
}

/// The feature matrix and the precision of its products (shared by every fit on it).
pub(crate) struct Design<'a> {
    pub n: usize,
    pub d: usize,
    x: &'a [f32],
    precision: Precision,
}

/// Per-fit buffers of the float32 products.
#[derive(Default)]
pub(crate) struct Scratch {
    w32: Vec<f32>,
    a32: Vec<f32>,
    z32: Vec<f32>,
    out32: Vec<f32>,
}

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        t => Parallelism::Rayon(t),
    }
}

impl<'a> Design<'a> {
    /// Wraps `x` (`n x d`, row-major, finite: checked by the caller).
    pub fn new(x: &'a [f32], n: usize, d: usize, precision: Precision) -> Self {
        debug_assert_eq!(x.len(), n * d);
        Design { n, d, x, precision }
    }

    /// `z (n x k, row-major) = X · Wᵀ + b` for `theta` in the class-major layout.
    pub fn forward(&self, theta: &[f64], k: usize, z: &mut [f64], s: &mut Scratch) {
        let (n, d, x) = (self.n, self.d, self.x);
        debug_assert_eq!(theta.len(), k * (d + 1));
        debug_assert_eq!(z.len(), n * k);
        match self.precision {
            Precision::F64 => crate::kernels::forward(x, n, d, theta, d + 1, k, z),
            Precision::F32 => {
                s.w32.clear();
                for c in 0..k {
                    let row = &theta[c * (d + 1)..c * (d + 1) + d];
                    s.w32.extend(row.iter().map(|&v| v as f32));
                }
                s.z32.resize(n * k, 0.0);
                // SAFETY: x is n x d row-major, w32 k x d row-major (read as its d x k
                // transpose), z32 n x k row-major; the extents match the dimensions.
                unsafe {
                    gemm::gemm(
                        n,
                        k,
                        d,
                        s.z32.as_mut_ptr(),
                        1,
                        k as isize,
                        false,
                        x.as_ptr(),
                        1,
                        d as isize,
                        s.w32.as_ptr(),
                        d as isize,
                        1,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        parallelism(),
                    )
                };
                for (a, &b) in z.iter_mut().zip(&s.z32) {
                    *a = f64::from(b);
                }
            }
        }
        for row in z.chunks_exact_mut(k) {
            for (c, v) in row.iter_mut().enumerate() {
                *v += theta[c * (d + 1) + d];
            }
        }
    }

    /// `out_W += Aᵀ · X` and `out_b += column sums of A`, for `a` (`n x k`, row-major) and
    /// `out` in the class-major layout.
    pub fn backward_acc(&self, a: &[f64], k: usize, out: &mut [f64], s: &mut Scratch) {
        let (n, d, x) = (self.n, self.d, self.x);
        debug_assert_eq!(a.len(), n * k);
        debug_assert_eq!(out.len(), k * (d + 1));
        match self.precision {
            Precision::F64 => crate::kernels::backward_acc(x, n, d, a, k, out, d + 1),
            Precision::F32 => {
                s.a32.clear();
                s.a32.extend(a.iter().map(|&v| v as f32));
                s.out32.resize(k * d, 0.0);
                // SAFETY: out32 is k x d row-major, a32 n x k row-major (read as its k x n
                // transpose), x n x d row-major; the extents match the dimensions.
                unsafe {
                    gemm::gemm(
                        k,
                        d,
                        n,
                        s.out32.as_mut_ptr(),
                        1,
                        d as isize,
                        false,
                        s.a32.as_ptr(),
                        k as isize,
                        1,
                        x.as_ptr(),
                        1,
                        d as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        parallelism(),
                    )
                };
                for c in 0..k {
                    let dst = &mut out[c * (d + 1)..c * (d + 1) + d];
                    for (o, &v) in dst.iter_mut().zip(&s.out32[c * d..(c + 1) * d]) {
                        *o += f64::from(v);
                    }
                }
            }
        }
        for row in a.chunks_exact(k) {
            for (c, &v) in row.iter().enumerate() {
                out[c * (d + 1) + d] += v;
            }
        }
    }
}
