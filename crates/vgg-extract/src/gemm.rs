//! Packed single-precision GEMM: register-blocked micro-kernels for AVX-512, AVX2+FMA and a
//! portable fallback, plus the packing of the constant right-hand side (the weights).
//!
//! Every product computed here is `C[m x n] = A[m x k] * B[k x n]` where `A` is row-major with a
//! free leading dimension (the micro-kernel broadcasts from `MR` rows of `A` directly, so `A`
//! needs no packing) and `B` is packed once, at load time, into panels of `NR` columns:
//! `panel[p][k][j] = B[k][p * NR + j]`, zero-padded to a whole number of panels.

use std::ops::{Deref, DerefMut};

/// The instruction set a network was packed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust; what the compiler makes of it for the baseline target.
    Portable,
    /// x86-64 AVX2 with FMA: 6 x 16 micro-kernel.
    Avx2,
    /// x86-64 AVX-512F: 12 x 32 micro-kernel.
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU supports (for tests that compare them).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// Rows of `C` per micro-kernel call.
    pub const fn mr(self) -> usize {
        match self {
            Isa::Portable => 4,
            Isa::Avx2 => 6,
            Isa::Avx512 => 12,
        }
    }

    /// Columns of `C` per micro-kernel call (the packed panel width).
    pub const fn nr(self) -> usize {
        match self {
            Isa::Portable => 16,
            Isa::Avx2 => 16,
            Isa::Avx512 => 32,
        }
    }

    /// Runs `job` compiled for this instruction set, so that the vector code the compiler
    /// derives from plain loops inside [`Job::run`] (which must be `#[inline(always)]`, as must
    /// everything it calls) uses it.
    #[inline(always)]
    pub fn dispatch<J: Job>(self, job: J) -> J::Output {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn avx2<J: Job>(job: J) -> J::Output {
                job.run()
            }
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512<J: Job>(job: J) -> J::Output {
                job.run()
            }
            match self {
                // SAFETY: `Isa::Avx2` / `Isa::Avx512` are only ever constructed after runtime
                // detection of these features (see `detect` and `available`).
                Isa::Avx2 => unsafe { avx2(job) },
                Isa::Avx512 => unsafe { avx512(job) },
                Isa::Portable => job.run(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        job.run()
    }
}

/// A piece of vectorisable work for [`Isa::dispatch`]. (A closure would not do: the
/// compiler may keep it out of line, compiled for the baseline target.)
pub trait Job {
    type Output;
    /// Must be `#[inline(always)]`.
    fn run(self) -> Self::Output;
}

/// A zeroed `f32` buffer aligned to 64 bytes (one cache line, one AVX-512 register).
pub struct AlignedBuf {
    storage: Vec<Align64>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl AlignedBuf {
    pub fn zeroed(len: usize) -> Self {
        AlignedBuf {
            storage: vec![Align64([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Align64` is `repr(C)` over `[f32; 16]` with no padding, so the storage is
        // `16 * storage.len() >= len` initialised, contiguous `f32`s.
        unsafe { std::slice::from_raw_parts(self.storage.as_ptr().cast::<f32>(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.storage.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// Packs `B` (`k x n`, element `(r, c)` given by `b(r, c)`) into `ceil(n / nr)` panels of
/// `k x nr`, zero-padding the last one.
pub fn pack_b(k: usize, n: usize, nr: usize, b: impl Fn(usize, usize) -> f32) -> AlignedBuf {
    let panels = n.div_ceil(nr);
    let mut out = AlignedBuf::zeroed(panels * k * nr);
    for p in 0..panels {
        for r in 0..k {
            let row = &mut out[(p * k + r) * nr..(p * k + r + 1) * nr];
            for (j, v) in row.iter_mut().enumerate() {
                let c = p * nr + j;
                if c < n {
                    *v = b(r, c);
                }
            }
        }
    }
    out
}

/// One micro-kernel call: `C[mr x nr] = A[mr x k] * Bpanel[k x nr]` (or `+=` when `accumulate`).
///
/// # Safety
/// `a` must be valid for reads of rows `0..isa.mr()` of `k` elements at stride `lda`, `b` for
/// `k * isa.nr()` reads, `c` for reads and writes of `isa.mr()` rows of `isa.nr()` elements at
/// stride `ldc`, and `isa` must be supported by the running CPU.
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn microkernel(
    isa: Isa,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::kernel_avx512(k, a, lda, b, c, ldc, accumulate),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::kernel_avx2(k, a, lda, b, c, ldc, accumulate),
            _ => kernel_portable(k, a, lda, b, c, ldc, accumulate),
        }
    }
}

/// `C[m x n] = A[m x k] * B` for any `m`, `n`, with `B` packed by [`pack_b`] for `isa.nr()`;
/// edges go through a small scratch tile.
///
/// # Safety
/// `a` must be valid for `m` rows of `k` elements at stride `lda`; `b` must hold
/// `ceil(n / nr)` packed panels of `k x nr`; `c` must be valid for writes of `m` rows of `n`
/// elements at stride `ldc`; `isa` must be supported by the running CPU.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    let (mr, nr) = (isa.mr(), isa.nr());
    let mut tile = [0.0f32; 12 * 32];
    let mut a_edge = Vec::new();
    for p in 0..n.div_ceil(nr) {
        let cols = nr.min(n - p * nr);
        // SAFETY: panel `p` lies inside the packed buffer.
        let bp = unsafe { b.add(p * k * nr) };
        for g in 0..m.div_ceil(mr) {
            let rows = mr.min(m - g * mr);
            // SAFETY: rows `g*mr..g*mr+rows` of A and C are inside the caller's buffers; short
            // row groups read a zero-padded copy of A, short tiles write to the scratch tile.
            unsafe {
                let mut ap = a.add(g * mr * lda);
                let mut la = lda;
                if rows < mr {
                    a_edge.clear();
                    a_edge.resize(mr * k, 0.0);
                    for r in 0..rows {
                        std::ptr::copy_nonoverlapping(
                            ap.add(r * lda),
                            a_edge.as_mut_ptr().add(r * k),
                            k,
                        );
                    }
                    ap = a_edge.as_ptr();
                    la = k;
                }
                let cp = c.add(g * mr * ldc + p * nr);
                if rows == mr && cols == nr {
                    microkernel(isa, k, ap, la, bp, cp, ldc, false);
                } else {
                    microkernel(isa, k, ap, la, bp, tile.as_mut_ptr(), nr, false);
                    for r in 0..rows {
                        std::ptr::copy_nonoverlapping(
                            tile.as_ptr().add(r * nr),
                            cp.add(r * ldc),
                            cols,
                        );
                    }
                }
            }
        }
    }
}

/// Portable micro-kernel, `4 x 16`.
///
/// # Safety
/// As [`microkernel`] with `mr = 4`, `nr = 16`.
unsafe fn kernel_portable(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..k {
        // SAFETY: within the caller's bounds.
        let bv: &[f32; NR] = unsafe { &*b.add(p * NR).cast::<[f32; NR]>() };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: within the caller's bounds.
            let av = unsafe { *a.add(i * lda + p) };
            for j in 0..NR {
                row[j] += av * bv[j];
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: within the caller's bounds.
            unsafe {
                let dst = c.add(i * ldc + j);
                *dst = if accumulate { *dst + v } else { *v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX2 micro-kernel, `6 x 16` (12 accumulators, 2 panel loads and 6 broadcasts per step).
    ///
    /// # Safety
    /// As `super::microkernel` with `mr = 6`, `nr = 16`; AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_avx2(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 6;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        // SAFETY: all pointer arithmetic stays inside the caller's buffers (contract above).
        unsafe {
            let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * lda));
            let mut bp = b;
            for p in 0..k {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for i in 0..MR {
                    let x = _mm256_broadcast_ss(&*rows[i].add(p));
                    acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
                }
                bp = bp.add(16);
            }
            for (i, r) in acc.iter().enumerate() {
                let dst = c.add(i * ldc);
                for (j, v) in r.iter().enumerate() {
                    let d = dst.add(8 * j);
                    let v = if accumulate {
                        _mm256_add_ps(_mm256_loadu_ps(d), *v)
                    } else {
                        *v
                    };
                    _mm256_storeu_ps(d, v);
                }
            }
        }
    }

    /// AVX-512 micro-kernel, `12 x 32` (24 accumulators, 2 panel loads and 12 broadcasts per
    /// step).
    ///
    /// # Safety
    /// As `super::microkernel` with `mr = 12`, `nr = 32`; AVX-512F must be available.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn kernel_avx512(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 12;
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        // SAFETY: all pointer arithmetic stays inside the caller's buffers (contract above).
        unsafe {
            let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * lda));
            let mut bp = b;
            for p in 0..k {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for i in 0..MR {
                    let x = _mm512_set1_ps(*rows[i].add(p));
                    acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
                }
                bp = bp.add(32);
            }
            for (i, r) in acc.iter().enumerate() {
                let dst = c.add(i * ldc);
                for (j, v) in r.iter().enumerate() {
                    let d = dst.add(16 * j);
                    let v = if accumulate {
                        _mm512_add_ps(_mm512_loadu_ps(d), *v)
                    } else {
                        *v
                    };
                    _mm512_storeu_ps(d, v);
                }
            }
        }
    }
}
