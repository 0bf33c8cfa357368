//! Blocked products of the float32 feature matrix with float64 operands, accumulated in
//! float64 (every float32 value is exact in float64, so this is float64 arithmetic on the
//! features without a float64 copy of them):
//!
//! * [`forward`]: `Z (n x k) = X · Wᵀ`, row groups split between threads, `W` walked in
//!   column panels that stay in cache, 4 rows by up to 6 classes of accumulators
//!   (AVX-512), 2 rows by 3 classes (AVX2), 1 row by 6 classes (portable code);
//! * [`backward_acc`]: `OUT (k x d) += Aᵀ · X`, column panels split between threads,
//!   rows walked in small blocks, up to 12 classes by 16 (AVX-512; 4 with AVX2)
//!   columns of accumulators.
//!
//! Each output value is summed by one thread in an order fixed by the shapes alone, so
//! results do not depend on the thread count, and by the same sequence of roundings on
//! every instruction set, so they do not depend on the CPU either: a forward dot product
//! keeps eight interleaved partial sums per column panel (one AVX-512 register, two AVX2
//! registers, or eight scalars), adds them in one fixed tree and then the panel's tail
//! elements in order, every product fused (`mul_add`); a backward value is one fused
//! multiply-add per row, rows in order. Kernels are selected at run time: AVX-512,
//! AVX2 + FMA, or portable scalar code; `tests::every_instruction_set_gives_the_same_bits`
//! checks they agree bit for bit.

use rayon::prelude::*;

/// Columns per panel of the forward product (a `6 x 512` float64 block of `W` is 24 KiB).
const FWD_PANEL: usize = 512;
/// Rows per task of the forward product.
const FWD_ROWS: usize = 16;
/// Columns per task of the backward product (an `11 x 1024` float64 accumulator panel is
/// 88 KiB).
const BWD_PANEL: usize = 1024;
/// Rows per block of the backward product (a `32 x 1024` float32 block is 128 KiB).
const BWD_ROWS: usize = 32;
/// Most classes per kernel call (more are done in several class blocks).
const KB_MAX: usize = 12;

/// One SIMD vector of float64 lanes.
trait Simd: Copy {
    const LANES: usize;
    type V: Copy;
    /// All zeros.
    unsafe fn zero() -> Self::V;
    /// All lanes `v`.
    unsafe fn splat(v: f64) -> Self::V;
    /// `LANES` float32 values from `p`, widened.
    unsafe fn load_f32(p: *const f32) -> Self::V;
    /// `LANES` float64 values from `p`.
    unsafe fn load(p: *const f64) -> Self::V;
    /// Stores `LANES` values at `p`.
    unsafe fn store(p: *mut f64, v: Self::V);
    /// `a * b + c`, fused.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

#[derive(Clone, Copy)]
struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f64;
    #[inline(always)]
    unsafe fn zero() -> f64 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(v: f64) -> f64 {
        v
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> f64 {
        // SAFETY: the caller guarantees p is readable
        f64::from(unsafe { *p })
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> f64 {
        // SAFETY: the caller guarantees p is readable
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: f64) {
        // SAFETY: the caller guarantees p is writable
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn fmadd(a: f64, b: f64, c: f64) -> f64 {
        // fused, as the vector kernels' multiply-adds are
        a.mul_add(b, c)
    }
}

/// Eight interleaved float64 partial sums, however many registers they take: the forward
/// product's accumulator, identical in value on every instruction set.
trait Lanes8: Copy {
    type V: Copy;
    /// Accumulator rows per tile and classes per tile that fit the register file.
    const ROWS: usize;
    const CLASSES: usize;
    /// All zeros.
    unsafe fn zero8() -> Self::V;
    /// 8 float32 values from `p`, widened.
    unsafe fn load8_f32(p: *const f32) -> Self::V;
    /// 8 float64 values from `p`.
    unsafe fn load8(p: *const f64) -> Self::V;
    /// `a * b + c`, lane by lane, fused.
    unsafe fn fmadd8(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7))`, in exactly that order.
    unsafe fn hsum8(v: Self::V) -> f64;
}

impl Lanes8 for Scalar {
    type V = [f64; 8];
    const ROWS: usize = 1;
    const CLASSES: usize = 6;
    #[inline(always)]
    unsafe fn zero8() -> [f64; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn load8_f32(p: *const f32) -> [f64; 8] {
        // SAFETY: the caller guarantees 8 readable values at p
        std::array::from_fn(|l| f64::from(unsafe { *p.add(l) }))
    }
    #[inline(always)]
    unsafe fn load8(p: *const f64) -> [f64; 8] {
        // SAFETY: the caller guarantees 8 readable values at p
        std::array::from_fn(|l| unsafe { *p.add(l) })
    }
    #[inline(always)]
    unsafe fn fmadd8(a: [f64; 8], b: [f64; 8], c: [f64; 8]) -> [f64; 8] {
        std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
    }
    #[inline(always)]
    unsafe fn hsum8(v: [f64; 8]) -> f64 {
        let a = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
        (a[0] + a[2]) + (a[1] + a[3])
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes8, Simd};
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(super) struct Avx2;

    impl Simd for Avx2 {
        const LANES: usize = 4;
        type V = __m256d;
        #[inline(always)]
        unsafe fn zero() -> __m256d {
            // SAFETY: only called from functions compiled with avx2 + fma
            unsafe { _mm256_setzero_pd() }
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> __m256d {
            // SAFETY: as above
            unsafe { _mm256_set1_pd(v) }
        }
        #[inline(always)]
        unsafe fn load_f32(p: *const f32) -> __m256d {
            // SAFETY: as above; the caller guarantees 4 readable values
            unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> __m256d {
            // SAFETY: as above
            unsafe { _mm256_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f64, v: __m256d) {
            // SAFETY: as above
            unsafe { _mm256_storeu_pd(p, v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            // SAFETY: as above
            unsafe { _mm256_fmadd_pd(a, b, c) }
        }
    }

    impl Lanes8 for Avx2 {
        /// Lanes 0-3 and 4-7.
        type V = [__m256d; 2];
        // 2 x 3 accumulators of two registers, 2 row halves and one W half: 15 of 16
        const ROWS: usize = 2;
        const CLASSES: usize = 3;
        #[inline(always)]
        unsafe fn zero8() -> [__m256d; 2] {
            // SAFETY: only called from functions compiled with avx2 + fma
            unsafe { [_mm256_setzero_pd(); 2] }
        }
        #[inline(always)]
        unsafe fn load8_f32(p: *const f32) -> [__m256d; 2] {
            // SAFETY: as above; the caller guarantees 8 readable values
            unsafe {
                [
                    _mm256_cvtps_pd(_mm_loadu_ps(p)),
                    _mm256_cvtps_pd(_mm_loadu_ps(p.add(4))),
                ]
            }
        }
        #[inline(always)]
        unsafe fn load8(p: *const f64) -> [__m256d; 2] {
            // SAFETY: as above
            unsafe { [_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4))] }
        }
        #[inline(always)]
        unsafe fn fmadd8(a: [__m256d; 2], b: [__m256d; 2], c: [__m256d; 2]) -> [__m256d; 2] {
            // SAFETY: as above
            unsafe {
                [
                    _mm256_fmadd_pd(a[0], b[0], c[0]),
                    _mm256_fmadd_pd(a[1], b[1], c[1]),
                ]
            }
        }
        #[inline(always)]
        unsafe fn hsum8(v: [__m256d; 2]) -> f64 {
            // SAFETY: as above
            unsafe {
                let a = _mm256_add_pd(v[0], v[1]); // v_i + v_(i+4)
                let b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
                _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)))
            }
        }
    }

    #[derive(Clone, Copy)]
    pub(super) struct Avx512;

    impl Simd for Avx512 {
        const LANES: usize = 8;
        type V = __m512d;
        #[inline(always)]
        unsafe fn zero() -> __m512d {
            // SAFETY: only called from functions compiled with avx512f
            unsafe { _mm512_setzero_pd() }
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> __m512d {
            // SAFETY: as above
            unsafe { _mm512_set1_pd(v) }
        }
        #[inline(always)]
        unsafe fn load_f32(p: *const f32) -> __m512d {
            // SAFETY: as above; the caller guarantees 8 readable values
            unsafe { _mm512_cvtps_pd(_mm256_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> __m512d {
            // SAFETY: as above
            unsafe { _mm512_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f64, v: __m512d) {
            // SAFETY: as above
            unsafe { _mm512_storeu_pd(p, v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            // SAFETY: as above
            unsafe { _mm512_fmadd_pd(a, b, c) }
        }
    }

    impl Lanes8 for Avx512 {
        type V = __m512d;
        // 4 x 6 accumulators, 4 rows and one W vector: 29 of 32 registers
        const ROWS: usize = 4;
        const CLASSES: usize = 6;
        #[inline(always)]
        unsafe fn zero8() -> __m512d {
            // SAFETY: only called from functions compiled with avx512f
            unsafe { _mm512_setzero_pd() }
        }
        #[inline(always)]
        unsafe fn load8_f32(p: *const f32) -> __m512d {
            // SAFETY: as above; the caller guarantees 8 readable values
            unsafe { _mm512_cvtps_pd(_mm256_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn load8(p: *const f64) -> __m512d {
            // SAFETY: as above
            unsafe { _mm512_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn fmadd8(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            // SAFETY: as above
            unsafe { _mm512_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn hsum8(v: __m512d) -> f64 {
            // SAFETY: as above
            unsafe {
                let a = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
                let b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
                _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)))
            }
        }
    }
}

/// Instruction set chosen once per process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Lower-case name (`scalar`, `avx2`, `avx512`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
        }
    }
}

/// Every instruction set this machine runs, the portable one first.
pub(crate) fn available_isas() -> Vec<Isa> {
    #[allow(unused_mut)]
    let mut v = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(Isa::Avx512);
        }
    }
    v
}

pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

// ---------------------------------------------------------------- forward

/// `out[r * ldo + c] += Σ_j x[r * ldx + j] · w[c * ldw + j]` for `r < R`, `c < KB`,
/// `j < len`: eight interleaved partial sums, their fixed tree, then the tail in order.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // explicit indices keep the accumulators in registers
unsafe fn fwd_tile<S: Lanes8, const R: usize, const KB: usize>(
    x: *const f32,
    ldx: usize,
    w: *const f64,
    ldw: usize,
    len: usize,
    out: *mut f64,
    ldo: usize,
) {
    // SAFETY (whole body): the caller guarantees R rows of len readable values at x with
    // stride ldx, KB rows at w with stride ldw, and R x KB writable values at out.
    unsafe {
        let mut acc = [[S::zero8(); KB]; R];
        let mut j = 0;
        while j + 8 <= len {
            let mut xv = [S::zero8(); R];
            for (r, v) in xv.iter_mut().enumerate() {
                *v = S::load8_f32(x.add(r * ldx + j));
            }
            for c in 0..KB {
                let wv = S::load8(w.add(c * ldw + j));
                for r in 0..R {
                    acc[r][c] = S::fmadd8(xv[r], wv, acc[r][c]);
                }
            }
            j += 8;
        }
        for r in 0..R {
            for c in 0..KB {
                let mut s = S::hsum8(acc[r][c]);
                for jj in j..len {
                    s = f64::from(*x.add(r * ldx + jj)).mul_add(*w.add(c * ldw + jj), s);
                }
                *out.add(r * ldo + c) += s;
            }
        }
    }
}

/// Rows `[0, rows)` of one column panel of `x` (`len` columns, stride `d`) against the `KB`
/// rows of `w` (stride `ldw`), `R` rows at a time, into `out` (`rows x ldo`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_rows<S: Lanes8, const R: usize, const KB: usize>(
    x: *const f32,
    rows: usize,
    d: usize,
    w: *const f64,
    ldw: usize,
    out: *mut f64,
    ldo: usize,
    len: usize,
) {
    let mut r = 0;
    // SAFETY: indices stay inside the extents guaranteed by `forward`
    unsafe {
        while r + R <= rows {
            fwd_tile::<S, R, KB>(x.add(r * d), d, w, ldw, len, out.add(r * ldo), ldo);
            r += R;
        }
        while r < rows {
            fwd_tile::<S, 1, KB>(x.add(r * d), d, w, ldw, len, out.add(r * ldo), ldo);
            r += 1;
        }
    }
}

macro_rules! fwd_r_fn {
    ($name:ident, $r:expr) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<S: Lanes8, const KB: usize>(
            x: *const f32,
            rows: usize,
            d: usize,
            w: *const f64,
            ldw: usize,
            out: *mut f64,
            ldo: usize,
            len: usize,
        ) {
            // SAFETY: forwarded contract
            unsafe { fwd_rows::<S, { $r }, KB>(x, rows, d, w, ldw, out, ldo, len) }
        }
    };
}
fwd_r_fn!(fwd_rows_r1, 1);
fwd_r_fn!(fwd_rows_r2, 2);
fwd_r_fn!(fwd_rows_r4, 4);

macro_rules! dispatch_kb6 {
    ($kb:expr, $f:ident, $s:ty, ($($arg:expr),*)) => {
        match $kb {
            1 => $f::<$s, 1>($($arg),*),
            2 => $f::<$s, 2>($($arg),*),
            3 => $f::<$s, 3>($($arg),*),
            4 => $f::<$s, 4>($($arg),*),
            5 => $f::<$s, 5>($($arg),*),
            _ => $f::<$s, 6>($($arg),*),
        }
    };
}

macro_rules! dispatch_kb {
    ($kb:expr, $f:ident, $s:ty, ($($arg:expr),*)) => {
        match $kb {
            1 => $f::<$s, 1>($($arg),*),
            2 => $f::<$s, 2>($($arg),*),
            3 => $f::<$s, 3>($($arg),*),
            4 => $f::<$s, 4>($($arg),*),
            5 => $f::<$s, 5>($($arg),*),
            6 => $f::<$s, 6>($($arg),*),
            7 => $f::<$s, 7>($($arg),*),
            8 => $f::<$s, 8>($($arg),*),
            9 => $f::<$s, 9>($($arg),*),
            10 => $f::<$s, 10>($($arg),*),
            11 => $f::<$s, 11>($($arg),*),
            _ => $f::<$s, 12>($($arg),*),
        }
    };
}

/// One row group: column panel by column panel (so the group's panel of `x` is read from
/// memory once and stays in cache for every class block), `S::ROWS` rows by `S::CLASSES`
/// classes per tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_group<S: Lanes8>(
    x: *const f32,
    rows: usize,
    d: usize,
    w: *const f64,
    ldw: usize,
    k: usize,
    out: *mut f64,
) {
    let mut j0 = 0;
    while j0 < d {
        let len = FWD_PANEL.min(d - j0);
        let mut c0 = 0;
        while c0 < k {
            let kb = S::CLASSES.min(k - c0);
            // SAFETY: class block c0..c0 + kb lies inside w's k rows and out's k columns,
            // the panel j0..j0 + len inside every row
            unsafe {
                let (xb, wb, ob) = (x.add(j0), w.add(c0 * ldw + j0), out.add(c0));
                match S::ROWS {
                    4 => dispatch_kb6!(kb, fwd_rows_r4, S, (xb, rows, d, wb, ldw, ob, k, len)),
                    2 => dispatch_kb6!(kb, fwd_rows_r2, S, (xb, rows, d, wb, ldw, ob, k, len)),
                    _ => dispatch_kb6!(kb, fwd_rows_r1, S, (xb, rows, d, wb, ldw, ob, k, len)),
                }
            }
            c0 += kb;
        }
        j0 += len;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd_group_avx512(
    x: *const f32,
    rows: usize,
    d: usize,
    w: *const f64,
    ldw: usize,
    k: usize,
    out: *mut f64,
) {
    // SAFETY: forwarded contract
    unsafe { fwd_group::<x86::Avx512>(x, rows, d, w, ldw, k, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fwd_group_avx2(
    x: *const f32,
    rows: usize,
    d: usize,
    w: *const f64,
    ldw: usize,
    k: usize,
    out: *mut f64,
) {
    // SAFETY: forwarded contract
    unsafe { fwd_group::<x86::Avx2>(x, rows, d, w, ldw, k, out) }
}

/// `z = X · Wᵀ` for `x` (`n x d`, row-major), `w` holding `k` rows of `d` coefficients
/// with stride `ldw >= d`, and `z` (`n x k`, row-major, overwritten).
pub(crate) fn forward(
    x: &[f32],
    n: usize,
    d: usize,
    w: &[f64],
    ldw: usize,
    k: usize,
    z: &mut [f64],
) {
    forward_isa(isa(), x, n, d, w, ldw, k, z)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_isa(
    isa: Isa,
    x: &[f32],
    n: usize,
    d: usize,
    w: &[f64],
    ldw: usize,
    k: usize,
    z: &mut [f64],
) {
    assert!(x.len() >= n * d && z.len() >= n * k && ldw >= d);
    assert!(k == 0 || w.len() >= (k - 1) * ldw + d);
    z[..n * k].fill(0.0);
    z[..n * k]
        .par_chunks_mut(FWD_ROWS * k)
        .zip(x[..n * d].par_chunks(FWD_ROWS * d))
        .for_each(|(zc, xc)| {
            let rows = xc.len() / d;
            let (xp, wp, zp) = (xc.as_ptr(), w.as_ptr(), zc.as_mut_ptr());
            // SAFETY: xc holds rows x d values, zc rows x k, w k rows of stride ldw (asserted
            // above); the ISA was detected at run time.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => fwd_group_avx512(xp, rows, d, wp, ldw, k, zp),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => fwd_group_avx2(xp, rows, d, wp, ldw, k, zp),
                    Isa::Scalar => fwd_group::<Scalar>(xp, rows, d, wp, ldw, k, zp),
                }
            }
        });
}

// ---------------------------------------------------------------- backward

/// `out[c * ldo + v * LANES + l] += Σ_i a[i * lda + c] · x[i * ldx + v * LANES + l]` for
/// `c < KB`, `v < NV`, `i < rows`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_tile<S: Simd, const KB: usize, const NV: usize>(
    x: *const f32,
    ldx: usize,
    rows: usize,
    a: *const f64,
    lda: usize,
    out: *mut f64,
    ldo: usize,
) {
    // SAFETY (whole body): the caller guarantees rows x (NV * LANES) readable values at x
    // (stride ldx), rows x KB at a (stride lda), KB x (NV * LANES) writable at out.
    unsafe {
        let mut acc = [[S::zero(); NV]; KB];
        for (c, row) in acc.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                *slot = S::load(out.add(c * ldo + v * S::LANES));
            }
        }
        for i in 0..rows {
            let mut xv = [S::zero(); NV];
            for (v, slot) in xv.iter_mut().enumerate() {
                *slot = S::load_f32(x.add(i * ldx + v * S::LANES));
            }
            for (c, row) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add(i * lda + c));
                for (v, slot) in row.iter_mut().enumerate() {
                    *slot = S::fmadd(av, xv[v], *slot);
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (v, slot) in row.iter().enumerate() {
                S::store(out.add(c * ldo + v * S::LANES), *slot);
            }
        }
    }
}

/// One column panel `[j0, j0 + len)` for classes `c0..c0 + KB`, all rows, in row blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_panel<S: Simd, const KB: usize, const NV: usize>(
    x: *const f32,
    n: usize,
    d: usize,
    a: *const f64,
    lda: usize,
    out: *mut f64,
    ldo: usize,
    len: usize,
) {
    let strip = NV * S::LANES;
    let mut i0 = 0;
    while i0 < n {
        let rows = BWD_ROWS.min(n - i0);
        let mut j = 0;
        // SAFETY: offsets stay inside the panel and the row block
        unsafe {
            while j + strip <= len {
                bwd_tile::<S, KB, NV>(
                    x.add(i0 * d + j),
                    d,
                    rows,
                    a.add(i0 * lda),
                    lda,
                    out.add(j),
                    ldo,
                );
                j += strip;
            }
            for jj in j..len {
                for c in 0..KB {
                    let mut s = *out.add(c * ldo + jj);
                    for i in i0..i0 + rows {
                        s = (*a.add(i * lda + c)).mul_add(f64::from(*x.add(i * d + jj)), s);
                    }
                    *out.add(c * ldo + jj) = s;
                }
            }
        }
        i0 += rows;
    }
}

macro_rules! bwd_kb_fn {
    ($name:ident, $nv:expr) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<S: Simd, const KB: usize>(
            x: *const f32,
            n: usize,
            d: usize,
            a: *const f64,
            lda: usize,
            out: *mut f64,
            ldo: usize,
            len: usize,
        ) {
            // SAFETY: forwarded contract
            unsafe { bwd_panel::<S, KB, { $nv }>(x, n, d, a, lda, out, ldo, len) }
        }
    };
}
bwd_kb_fn!(bwd_panel_nv1, 1);
bwd_kb_fn!(bwd_panel_nv2, 2);
bwd_kb_fn!(bwd_panel_nv4, 4);

/// All class blocks of one column panel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_group<S: Simd>(
    x: *const f32,
    n: usize,
    d: usize,
    a: *const f64,
    k: usize,
    out: *mut f64,
    ldo: usize,
    len: usize,
) {
    let mut c0 = 0;
    while c0 < k {
        let kb = KB_MAX.min(k - c0);
        // SAFETY: class block c0..c0 + kb lies inside a's k columns and out's k rows
        unsafe {
            let (ab, ob) = (a.add(c0), out.add(c0 * ldo));
            match S::LANES {
                8 => dispatch_kb!(kb, bwd_panel_nv2, S, (x, n, d, ab, k, ob, ldo, len)),
                4 => dispatch_kb!(kb, bwd_panel_nv1, S, (x, n, d, ab, k, ob, ldo, len)),
                _ => dispatch_kb!(kb, bwd_panel_nv4, S, (x, n, d, ab, k, ob, ldo, len)),
            }
        }
        c0 += kb;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_group_avx512(
    x: *const f32,
    n: usize,
    d: usize,
    a: *const f64,
    k: usize,
    out: *mut f64,
    ldo: usize,
    len: usize,
) {
    // SAFETY: forwarded contract
    unsafe { bwd_group::<x86::Avx512>(x, n, d, a, k, out, ldo, len) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn bwd_group_avx2(
    x: *const f32,
    n: usize,
    d: usize,
    a: *const f64,
    k: usize,
    out: *mut f64,
    ldo: usize,
    len: usize,
) {
    // SAFETY: forwarded contract
    unsafe { bwd_group::<x86::Avx2>(x, n, d, a, k, out, ldo, len) }
}

/// Raw pointer that may cross threads; each task writes a disjoint column range.
#[derive(Clone, Copy)]
struct SendPtr(*mut f64);
impl SendPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the field).
    fn get(self) -> *mut f64 {
        self.0
    }
}
// SAFETY: tasks write disjoint column panels of the buffer the pointer points into
unsafe impl Send for SendPtr {}
// SAFETY: as above
unsafe impl Sync for SendPtr {}

/// `out[c * ldo + j] += Σ_i a[i * k + c] · x[i * d + j]` for `c < k`, `j < d`: `a` is
/// `n x k` row-major, `out` holds `k` rows with stride `ldo >= d` (values past `d` in a
/// row are left alone).
pub(crate) fn backward_acc(
    x: &[f32],
    n: usize,
    d: usize,
    a: &[f64],
    k: usize,
    out: &mut [f64],
    ldo: usize,
) {
    backward_acc_isa(isa(), x, n, d, a, k, out, ldo)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_acc_isa(
    isa: Isa,
    x: &[f32],
    n: usize,
    d: usize,
    a: &[f64],
    k: usize,
    out: &mut [f64],
    ldo: usize,
) {
    assert!(x.len() >= n * d && a.len() >= n * k && ldo >= d);
    assert!(k == 0 || out.len() >= (k - 1) * ldo + d);
    let n_panels = d.div_ceil(BWD_PANEL);
    let optr = SendPtr(out.as_mut_ptr());
    (0..n_panels).into_par_iter().for_each(|p| {
        let j0 = p * BWD_PANEL;
        let len = BWD_PANEL.min(d - j0);
        // SAFETY: panel p reads columns j0..j0 + len of every row of x (in bounds by the
        // assertions) and writes only those columns of out, disjoint from other panels;
        // the ISA was detected at run time.
        unsafe {
            let xp = x.as_ptr().add(j0);
            let op = optr.get().add(j0);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => bwd_group_avx512(xp, n, d, a.as_ptr(), k, op, ldo, len),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => bwd_group_avx2(xp, n, d, a.as_ptr(), k, op, ldo, len),
                Isa::Scalar => bwd_group::<Scalar>(xp, n, d, a.as_ptr(), k, op, ldo, len),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], n: usize, d: usize, w: &[f64], k: usize) -> Vec<f64> {
        let mut z = vec![0.0; n * k];
        for i in 0..n {
            for c in 0..k {
                z[i * k + c] = (0..d)
                    .map(|j| f64::from(x[i * d + j]) * w[c * (d + 1) + j])
                    .sum();
            }
        }
        z
    }

    #[test]
    fn kernels_match_naive_products_for_odd_shapes() {
        for isa in available_isas() {
            check_isa(isa);
        }
    }

    fn check_isa(isa: Isa) {
        let mut rng = crate::synthetic::Rng::new(3);
        for &(n, d, k) in &[
            (1, 1, 1),
            (5, 17, 3),
            (33, 531, 11),
            (300, 1100, 13),
            (3, 9, 25),
            (70, 2100, 7),
        ] {
            let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
            let w: Vec<f64> = (0..k * (d + 1)).map(|_| rng.normal()).collect();
            let a: Vec<f64> = (0..n * k).map(|_| rng.normal()).collect();
            let mut z = vec![f64::NAN; n * k];
            forward_isa(isa, &x, n, d, &w, d + 1, k, &mut z);
            let zr = reference(&x, n, d, &w, k);
            for (p, q) in z.iter().zip(&zr) {
                assert!(
                    (p - q).abs() <= 1e-12 * (1.0 + q.abs()) * d as f64,
                    "{isa:?} {n} {d} {k}: {p} {q}"
                );
            }
            let mut out = w.clone();
            backward_acc_isa(isa, &x, n, d, &a, k, &mut out, d + 1);
            for c in 0..k {
                for j in 0..=d {
                    let expect = if j == d {
                        w[c * (d + 1) + j]
                    } else {
                        w[c * (d + 1) + j]
                            + (0..n)
                                .map(|i| a[i * k + c] * f64::from(x[i * d + j]))
                                .sum::<f64>()
                    };
                    let got = out[c * (d + 1) + j];
                    assert!(
                        (got - expect).abs() <= 1e-12 * (1.0 + expect.abs()) * n as f64,
                        "{isa:?} {n} {d} {k} c{c} j{j}"
                    );
                }
            }
        }
    }

    /// The property the content-addressed cache relies on: a machine with AVX-512 and one
    /// with AVX2 only (or neither) compute the same bits, so a cached result is the same
    /// whichever node made it. Shapes cover full panels, tails of every length mod 8 and
    /// 16, and class counts around each kernel's class block.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let isas = available_isas();
        let mut rng = crate::synthetic::Rng::new(11);
        for &(n, d, k) in &[
            (1, 1, 1),
            (3, 7, 2),
            (5, 17, 3),
            (9, 515, 4),
            (17, 1031, 11),
            (33, 2053, 7),
            (6, 4099, 13),
        ] {
            let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
            let w: Vec<f64> = (0..k * (d + 1)).map(|_| rng.normal()).collect();
            let a: Vec<f64> = (0..n * k).map(|_| rng.normal()).collect();
            let run = |isa: Isa| {
                let mut z = vec![f64::NAN; n * k];
                forward_isa(isa, &x, n, d, &w, d + 1, k, &mut z);
                let mut out = w.clone();
                backward_acc_isa(isa, &x, n, d, &a, k, &mut out, d + 1);
                let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                (bits(&z), bits(&out))
            };
            let base = run(isas[0]);
            for &isa in &isas[1..] {
                let got = run(isa);
                assert!(got.0 == base.0, "forward {isa:?} vs scalar, {n}x{d}x{k}");
                assert!(got.1 == base.1, "backward {isa:?} vs scalar, {n}x{d}x{k}");
            }
        }
    }
}
