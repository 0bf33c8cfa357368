//! Level-1 vector operations on parameter-sized vectors (`k (d + 1)` values). Serial and
//! with a fixed summation order, so results do not depend on the thread count.

const LANES: usize = 8;

/// `Σ a_i b_i`.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    acc.iter().sum::<f64>() + s
}

/// `y += a x`.
pub(crate) fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Euclidean norm.
pub(crate) fn norm2(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `max |a_i|` (0 for an empty slice; NaN propagates).
pub(crate) fn max_abs(a: &[f64]) -> f64 {
    let mut m = 0.0f64;
    for &v in a {
        let av = v.abs();
        if av > m || av.is_nan() {
            m = av;
        }
    }
    m
}

/// `Σ |a_i|`.
pub(crate) fn sum_abs(a: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let c = a.chunks_exact(LANES);
    let r = c.remainder();
    for x in c {
        for l in 0..LANES {
            acc[l] += x[l].abs();
        }
    }
    acc.iter().sum::<f64>() + r.iter().map(|v| v.abs()).sum::<f64>()
}
