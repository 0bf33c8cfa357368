//! 3x3 stride-1 pad-1 convolution + bias + ReLU (optionally + 2x2 max-pool) by Winograd
//! minimal filtering, F(2x2, 3x3) or F(4x4, 3x3), on channels-last activations.
//!
//! Each `m x m` block of outputs ("tile") is computed from an `a x a` input patch `d`
//! (`a = m + 2`) as `Y = A^T [ U ⊙ V ] A` with `V = B^T d B` and `U = G g G^T` (Lavin & Gray,
//! 2015). Summed over input channels, the element-wise product becomes `a²` independent GEMMs
//! (one per position `xi` of the transformed tile) of `tiles x C_in` by `C_in x C_out`: 2.25x
//! (F2) or 4x (F4) fewer multiplications than direct convolution. F2's transforms only add,
//! subtract and halve; F4's multiply by small integers and 1/6, 1/12, 1/24, which costs about
//! one decimal digit of `f32` accuracy (measured on the real VGG16 weights: pool5 within
//! ~2e-6 of a float64 reference, against ~4e-7 for F2).
//!
//! Work is split into units of (a block of tiles, a range of output channels): a unit
//! transforms its input tiles into a per-thread buffer, runs the GEMMs into a second
//! per-thread buffer, and applies the output transform with bias, ReLU and, when the layer is
//! followed by a max-pool, the pool itself (an output tile holds whole pooling windows).
//! Memory stays bounded by the block size, whatever the batch.

use std::cell::RefCell;
use std::marker::PhantomData;

use rayon::prelude::*;

use crate::gemm::{microkernel, pack_b, AlignedBuf, Isa, Job};

/// Which Winograd tile a layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// F(2x2, 3x3): 4x4 transformed tiles, 2x2 outputs.
    F2,
    /// F(4x4, 3x3): 6x6 transformed tiles, 4x4 outputs.
    F4,
}

impl Variant {
    /// Outputs per tile side.
    pub(crate) const fn m(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
        }
    }

    /// Transformed positions per tile.
    const fn xi(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }

    /// Tile grid `(rows, columns)` for an `h x w` input.
    fn tiles(self, h: usize, w: usize, pool: bool) -> (usize, usize) {
        let m = self.m();
        if pool {
            ((h / 2).div_ceil(m / 2), (w / 2).div_ceil(m / 2))
        } else {
            (h.div_ceil(m), w.div_ceil(m))
        }
    }
}

/// A convolution layer packed for the Winograd path.
pub(crate) struct Winograd {
    isa: Isa,
    variant: Variant,
    c_in: usize,
    c_out: usize,
    /// Packed panels of `U`, one block of `panels * c_in * nr` per position `xi`.
    u: AlignedBuf,
    panels: usize,
    bias: Vec<f32>,
}

/// Raw output pointer shared by the units of one layer; each unit writes a disjoint set of
/// (pixel, channel) positions.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: units write disjoint elements (distinct tiles or distinct channel ranges), and the
// buffer outlives the parallel loop that uses the pointer.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// How a layer is cut into units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Tiles per unit (a multiple of the micro-kernel's rows).
    pub tiles: usize,
    /// Output channels per unit (a multiple of the micro-kernel's columns).
    pub channels: usize,
    /// Input channels per pass of the micro-kernel.
    pub depth: usize,
}

/// `G` of F(2x2, 3x3).
const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
/// `G` of F(4x4, 3x3).
const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

impl Winograd {
    /// Packs a layer. `weight` is `[c_out, c_in, 3, 3]` (PyTorch layout), `bias` is `[c_out]`.
    pub(crate) fn new(
        isa: Isa,
        variant: Variant,
        c_in: usize,
        c_out: usize,
        weight: &[f32],
        bias: &[f32],
    ) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9);
        assert_eq!(bias.len(), c_out);
        let g_mat: &[[f64; 3]] = match variant {
            Variant::F2 => &G2,
            Variant::F4 => &G4,
        };
        let a = g_mat.len();
        let xis = a * a;
        // U = G g G^T for every (k, c), in f64 and rounded once.
        let mut ut = vec![0.0f32; xis * c_out * c_in]; // [xi][k][c]
        let mut tmp = vec![[0.0f64; 3]; a];
        for k in 0..c_out {
            for c in 0..c_in {
                let g = &weight[(k * c_in + c) * 9..(k * c_in + c + 1) * 9];
                for (i, row) in tmp.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|l| g_mat[i][l] * f64::from(g[l * 3 + j])).sum();
                    }
                }
                for i in 0..a {
                    for j in 0..a {
                        let v: f64 = (0..3).map(|l| tmp[i][l] * g_mat[j][l]).sum();
                        ut[((i * a + j) * c_out + k) * c_in + c] = v as f32;
                    }
                }
            }
        }
        let nr = isa.nr();
        let panels = c_out.div_ceil(nr);
        let per_xi = panels * c_in * nr;
        let mut u = AlignedBuf::zeroed(xis * per_xi);
        for xi in 0..xis {
            let plane = &ut[xi * c_out * c_in..(xi + 1) * c_out * c_in];
            let packed = pack_b(c_in, c_out, nr, |c, k| plane[k * c_in + c]);
            u[xi * per_xi..(xi + 1) * per_xi].copy_from_slice(&packed);
        }
        Winograd {
            isa,
            variant,
            c_in,
            c_out,
            u,
            panels,
            bias: bias.to_vec(),
        }
    }

    pub(crate) fn c_out(&self) -> usize {
        self.c_out
    }

    /// Default cut of a layer over `tiles` tiles into units.
    pub(crate) fn plan(&self, tiles: usize) -> Plan {
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        // Transformed input of one unit: xi * tiles * c_in floats; aim for about 1 MiB.
        let budget = (1 << 20) / (self.variant.xi() * 4 * self.c_in.max(1));
        let mut tb = (budget / mr).clamp(2, 16) * mr;
        tb = tb.min(tiles.div_ceil(mr) * mr);
        let blocks = tiles.div_ceil(tb);
        let threads = rayon::current_num_threads().max(1);
        let mut panels_per_unit = self.panels;
        while blocks * self.panels.div_ceil(panels_per_unit) < 4 * threads && panels_per_unit > 1 {
            panels_per_unit = panels_per_unit.div_ceil(2);
        }
        Plan {
            tiles: tb,
            channels: panels_per_unit * nr,
            depth: 256,
        }
    }

    /// Convolution + bias + ReLU of `x` (`[n, h, w, c_in]`) into `out` (`[n, h, w, c_out]`).
    pub(crate) fn forward(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        let (th, tw) = self.variant.tiles(h, w, false);
        self.forward_with(x, n, h, w, false, out, self.plan(n * th * tw));
    }

    /// Convolution + bias + ReLU + 2x2 stride-2 max-pool (floor) of `x` (`[n, h, w, c_in]`)
    /// into `out` (`[n, h / 2, w / 2, c_out]`).
    pub(crate) fn forward_pool(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        let (th, tw) = self.variant.tiles(h, w, true);
        self.forward_with(x, n, h, w, true, out, self.plan(n * th * tw));
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_with(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        pool: bool,
        out: &mut [f32],
        plan: Plan,
    ) {
        match self.variant {
            Variant::F2 => self.run::<F2>(x, n, h, w, pool, out, plan),
            Variant::F4 => self.run::<F4>(x, n, h, w, pool, out, plan),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run<T: Tile>(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        pool: bool,
        out: &mut [f32],
        plan: Plan,
    ) {
        let (c_in, c_out) = (self.c_in, self.c_out);
        let xis = T::A * T::A;
        assert_eq!(x.len(), n * h * w * c_in);
        let (th, tw) = self.variant.tiles(h, w, pool);
        let (oh, ow) = if pool { (h / 2, w / 2) } else { (h, w) };
        assert_eq!(out.len(), n * oh * ow * c_out);
        let total = n * th * tw;
        if total == 0 || c_out == 0 {
            return;
        }
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        assert!(
            plan.tiles.is_multiple_of(mr)
                && plan.tiles > 0
                && plan.channels.is_multiple_of(nr)
                && plan.channels > 0
        );
        let tb = plan.tiles;
        let depth = plan.depth.max(1);
        let blocks = total.div_ceil(tb);
        let chunks = (self.panels * nr).div_ceil(plan.channels);
        let geo = Geometry {
            h,
            w,
            th,
            tw,
            oh,
            ow,
            pool,
        };
        let optr = OutPtr(out.as_mut_ptr());
        let zeros = vec![0.0f32; c_in];
        (0..blocks * chunks).into_par_iter().for_each(|unit| {
            let (block, chunk) = (unit / chunks, unit % chunks);
            let t0 = block * tb;
            let t1 = (t0 + tb).min(total);
            let k0 = chunk * plan.channels;
            let kw = plan.channels.min(self.panels * nr - k0);
            let k1 = (k0 + kw).min(c_out);
            SCRATCH.with(|s| {
                let (v, m) = &mut *s.borrow_mut();
                if v.len() < xis * tb * c_in {
                    v.resize(xis * tb * c_in, 0.0);
                }
                if m.len() < xis * tb * kw {
                    m.resize(xis * tb * kw, 0.0);
                }
                self.isa.dispatch(InputJob::<T> {
                    x,
                    geo: &geo,
                    c_in,
                    t0,
                    t1,
                    tb,
                    zeros: &zeros,
                    v,
                    tile: PhantomData,
                });
                // xi GEMMs: M[xi] (tb x kw) = V[xi] (tb x c_in) * U[xi][:, k0..k0+kw].
                let per_xi = self.panels * c_in * nr;
                let mut c0 = 0;
                while c0 < c_in {
                    let kc = depth.min(c_in - c0);
                    for xi in 0..xis {
                        for p in 0..kw / nr {
                            let panel = k0 / nr + p;
                            for g in 0..tb / mr {
                                // SAFETY: V holds tb rows of c_in per xi, U holds `panels` panels
                                // of c_in x nr per xi, M holds tb rows of kw per xi; all offsets
                                // below stay inside them, and `isa` was detected at load.
                                unsafe {
                                    microkernel(
                                        self.isa,
                                        kc,
                                        v.as_ptr().add((xi * tb + g * mr) * c_in + c0),
                                        c_in,
                                        self.u.as_ptr().add(xi * per_xi + (panel * c_in + c0) * nr),
                                        m.as_mut_ptr().add((xi * tb + g * mr) * kw + p * nr),
                                        kw,
                                        c0 > 0,
                                    );
                                }
                            }
                        }
                    }
                    c0 += kc;
                }
                let bias = &self.bias[k0..k1];
                // This unit's (tiles, k0..k1) outputs are written by no other unit.
                self.isa.dispatch(OutputJob::<T> {
                    m,
                    geo: &geo,
                    c_out,
                    t0,
                    t1,
                    tb,
                    kw,
                    k0,
                    bias,
                    out: optr,
                    tile: PhantomData,
                });
            });
        });
    }
}

struct Geometry {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    oh: usize,
    ow: usize,
    pool: bool,
}

/// `L` channels of one tile position, combined element-wise; the compiler turns each
/// operation into vector instructions.
#[derive(Clone, Copy)]
pub struct Lanes<const L: usize>(pub [f32; L]);

impl<const L: usize> Lanes<L> {
    pub const ZERO: Self = Lanes([0.0; L]);

    #[inline(always)]
    pub fn load(s: &[f32]) -> Self {
        Lanes(s[..L].try_into().unwrap())
    }

    #[inline(always)]
    pub fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut r = self.0;
        for (a, b) in r.iter_mut().zip(o.0) {
            *a = f(*a, b);
        }
        Lanes(r)
    }

    #[inline(always)]
    fn max(self, o: Self) -> Self {
        self.zip(o, crate::nan_max)
    }

    /// `relu(self + bias)`.
    #[inline(always)]
    fn bias_relu(self, b: Self) -> Self {
        self.zip(b, |a, b| crate::nan_relu(a + b))
    }
}

impl<const L: usize> std::ops::Add for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| a + b)
    }
}

impl<const L: usize> std::ops::Sub for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| a - b)
    }
}

impl<const L: usize> std::ops::Mul<Lanes<L>> for f32 {
    type Output = Lanes<L>;
    #[inline(always)]
    fn mul(self, o: Lanes<L>) -> Lanes<L> {
        let mut r = o.0;
        for a in r.iter_mut() {
            *a *= self;
        }
        Lanes(r)
    }
}

/// The transforms of one Winograd variant, on `L` channels at a time. Tile positions are
/// numbered rows first. (Written without closures, which the compiler may keep out of line and
/// compile for the baseline target, and without pre-initialised arrays, which it would fill
/// with zeros on every call.)
pub trait Tile {
    /// Outputs per tile side.
    const M: usize;
    /// Transformed tile side, `M + 2`.
    const A: usize;
    /// `V = B^T d B` with `d[i] = src[i][c..c + L]`, stored at
    /// `v[at + xi * plane..][..L]` for `xi < A * A`.
    fn input<const L: usize>(src: &[&[f32]; 36], c: usize, v: &mut [f32], at: usize, plane: usize);
    /// `Y = A^T m A` with `m[xi] = g[at + xi * plane..][..L]`; `Y[i][j]` is returned in the
    /// top-left `M x M` corner.
    fn output<const L: usize>(g: &[f32], at: usize, plane: usize) -> [[Lanes<L>; 4]; 4];
}

/// Column `j` of the `A x A` input patch.
#[inline(always)]
fn patch_col<const A: usize, const L: usize>(
    src: &[&[f32]; 36],
    c: usize,
    j: usize,
) -> [Lanes<L>; A] {
    let mut col = [Lanes::ZERO; A];
    for (i, v) in col.iter_mut().enumerate() {
        *v = Lanes::load(&src[i * A + j][c..]);
    }
    col
}

/// Column `j` of the `A x A` GEMM results of one tile.
#[inline(always)]
fn result_col<const A: usize, const L: usize>(
    g: &[f32],
    at: usize,
    plane: usize,
    j: usize,
) -> [Lanes<L>; A] {
    let mut col = [Lanes::ZERO; A];
    for (i, v) in col.iter_mut().enumerate() {
        *v = Lanes::load(&g[at + (i * A + j) * plane..]);
    }
    col
}

#[inline(always)]
fn put<const L: usize>(v: &mut [f32], at: usize, plane: usize, xi: usize, x: Lanes<L>) {
    v[at + xi * plane..][..L].copy_from_slice(&x.0);
}

/// F(2x2, 3x3).
struct F2;
/// F(4x4, 3x3).
pub struct F4;

/// `B^T x` for F(2x2, 3x3): `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
#[inline(always)]
fn bt4<const L: usize>([d0, d1, d2, d3]: [Lanes<L>; 4]) -> [Lanes<L>; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `A^T x` for F(2x2, 3x3): `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
#[inline(always)]
fn at4<const L: usize>([m0, m1, m2, m3]: [Lanes<L>; 4]) -> [Lanes<L>; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `B^T x` for F(4x4, 3x3): `B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0],
/// [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]`.
#[inline(always)]
fn bt6<const L: usize>([d0, d1, d2, d3, d4, d5]: [Lanes<L>; 6]) -> [Lanes<L>; 6] {
    let (p, q) = (d3 + d4, d1 + d2);
    let (r, s) = (d4 - d3, d1 - d2);
    let (u, w) = (d4 - d2, d3 - d1);
    [
        4.0 * d0 - 5.0 * d2 + d4,
        p - 4.0 * q,
        r + 4.0 * s,
        u + 2.0 * w,
        u - 2.0 * w,
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// `A^T x` for F(4x4, 3x3): `A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0],
/// [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]`.
#[inline(always)]
fn at6<const L: usize>([m0, m1, m2, m3, m4, m5]: [Lanes<L>; 6]) -> [Lanes<L>; 4] {
    let (a, b) = (m1 + m2, m1 - m2);
    let (c, e) = (m3 + m4, m3 - m4);
    [m0 + a + c, b + 2.0 * e, a + 4.0 * c, b + 8.0 * e + m5]
}

impl Tile for F2 {
    const M: usize = 2;
    const A: usize = 4;

    #[inline(always)]
    fn input<const L: usize>(src: &[&[f32]; 36], c: usize, v: &mut [f32], at: usize, plane: usize) {
        let c0 = bt4(patch_col::<4, L>(src, c, 0));
        let c1 = bt4(patch_col::<4, L>(src, c, 1));
        let c2 = bt4(patch_col::<4, L>(src, c, 2));
        let c3 = bt4(patch_col::<4, L>(src, c, 3));
        for i in 0..4 {
            let row = bt4([c0[i], c1[i], c2[i], c3[i]]);
            for (j, x) in row.into_iter().enumerate() {
                put(v, at, plane, i * 4 + j, x);
            }
        }
    }

    #[inline(always)]
    fn output<const L: usize>(g: &[f32], at: usize, plane: usize) -> [[Lanes<L>; 4]; 4] {
        let c0 = at4(result_col::<4, L>(g, at, plane, 0));
        let c1 = at4(result_col::<4, L>(g, at, plane, 1));
        let c2 = at4(result_col::<4, L>(g, at, plane, 2));
        let c3 = at4(result_col::<4, L>(g, at, plane, 3));
        let r0 = at4([c0[0], c1[0], c2[0], c3[0]]);
        let r1 = at4([c0[1], c1[1], c2[1], c3[1]]);
        let z = Lanes::ZERO;
        [[r0[0], r0[1], z, z], [r1[0], r1[1], z, z], [z; 4], [z; 4]]
    }
}

impl Tile for F4 {
    const M: usize = 4;
    const A: usize = 6;

    #[inline(always)]
    fn input<const L: usize>(src: &[&[f32]; 36], c: usize, v: &mut [f32], at: usize, plane: usize) {
        let c0 = bt6(patch_col::<6, L>(src, c, 0));
        let c1 = bt6(patch_col::<6, L>(src, c, 1));
        let c2 = bt6(patch_col::<6, L>(src, c, 2));
        let c3 = bt6(patch_col::<6, L>(src, c, 3));
        let c4 = bt6(patch_col::<6, L>(src, c, 4));
        let c5 = bt6(patch_col::<6, L>(src, c, 5));
        for i in 0..6 {
            let row = bt6([c0[i], c1[i], c2[i], c3[i], c4[i], c5[i]]);
            for (j, x) in row.into_iter().enumerate() {
                put(v, at, plane, i * 6 + j, x);
            }
        }
    }

    #[inline(always)]
    fn output<const L: usize>(g: &[f32], at: usize, plane: usize) -> [[Lanes<L>; 4]; 4] {
        let c0 = at6(result_col::<6, L>(g, at, plane, 0));
        let c1 = at6(result_col::<6, L>(g, at, plane, 1));
        let c2 = at6(result_col::<6, L>(g, at, plane, 2));
        let c3 = at6(result_col::<6, L>(g, at, plane, 3));
        let c4 = at6(result_col::<6, L>(g, at, plane, 4));
        let c5 = at6(result_col::<6, L>(g, at, plane, 5));
        [
            at6([c0[0], c1[0], c2[0], c3[0], c4[0], c5[0]]),
            at6([c0[1], c1[1], c2[1], c3[1], c4[1], c5[1]]),
            at6([c0[2], c1[2], c2[2], c3[2], c4[2], c5[2]]),
            at6([c0[3], c1[3], c2[3], c3[3], c4[3], c5[3]]),
        ]
    }
}

/// Writes `V = B^T d B` for tiles `t0..t1` into `v[xi][t - t0][c]` (rows of `c_in`, planes of
/// `tb` rows).
struct InputJob<'a, T> {
    x: &'a [f32],
    geo: &'a Geometry,
    c_in: usize,
    t0: usize,
    t1: usize,
    tb: usize,
    zeros: &'a [f32],
    v: &'a mut [f32],
    tile: PhantomData<T>,
}

impl<T: Tile> Job for InputJob<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let InputJob {
            x,
            geo,
            c_in,
            t0,
            t1,
            tb,
            zeros,
            v,
            ..
        } = self;
        input_transform::<T>(x, geo, c_in, t0, t1, tb, zeros, v);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_transform<T: Tile>(
    x: &[f32],
    geo: &Geometry,
    c_in: usize,
    t0: usize,
    t1: usize,
    tb: usize,
    zeros: &[f32],
    v: &mut [f32],
) {
    let per_img = geo.th * geo.tw;
    for t in t0..t1 {
        let (img, r) = (t / per_img, t % per_img);
        let (ty, tx) = (r / geo.tw, r % geo.tw);
        let mut src = [zeros; 36];
        for dy in 0..T::A {
            let y = (T::M * ty + dy).wrapping_sub(1);
            if y >= geo.h {
                continue; // above or below the image (wrapped): zero padding
            }
            for dx in 0..T::A {
                let xx = (T::M * tx + dx).wrapping_sub(1);
                if xx < geo.w {
                    let p = (img * geo.h + y) * geo.w + xx;
                    src[dy * T::A + dx] = &x[p * c_in..(p + 1) * c_in];
                }
            }
        }
        let row = t - t0;
        let mut c = 0;
        while c + 16 <= c_in {
            transform_in_chunk::<T, 16>(&src, c, v, row, tb, c_in);
            c += 16;
        }
        while c < c_in {
            transform_in_chunk::<T, 1>(&src, c, v, row, tb, c_in);
            c += 1;
        }
    }
}

#[inline(always)]
fn transform_in_chunk<T: Tile, const L: usize>(
    src: &[&[f32]; 36],
    c: usize,
    v: &mut [f32],
    row: usize,
    tb: usize,
    c_in: usize,
) {
    T::input::<L>(src, c, v, row * c_in + c, tb * c_in);
}

/// Applies `Y = A^T M A`, bias, ReLU and the optional pool to tiles `t0..t1`, output
/// channels `k0..k0 + bias.len()`, reading `m[xi][t - t0][k - k0]` (rows of `kw`), writing
/// through `out`, which must point to the `[n, oh, ow, c_out]` output, with no other thread
/// writing the elements of these tiles and channels concurrently.
struct OutputJob<'a, T> {
    m: &'a [f32],
    geo: &'a Geometry,
    c_out: usize,
    t0: usize,
    t1: usize,
    tb: usize,
    kw: usize,
    k0: usize,
    bias: &'a [f32],
    out: OutPtr,
    tile: PhantomData<T>,
}

impl<T: Tile> Job for OutputJob<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let OutputJob {
            m,
            geo,
            c_out,
            t0,
            t1,
            tb,
            kw,
            k0,
            bias,
            out,
            ..
        } = self;
        // SAFETY: the contract of `OutputJob`, which `Winograd::run` upholds.
        unsafe { output_transform::<T>(m, geo, c_out, t0, t1, tb, kw, k0, bias, out) }
    }
}

/// # Safety
/// `out` must point to the `[n, oh, ow, c_out]` output, and no other thread may write the
/// elements of these tiles and channels concurrently.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform<T: Tile>(
    m: &[f32],
    geo: &Geometry,
    c_out: usize,
    t0: usize,
    t1: usize,
    tb: usize,
    kw: usize,
    k0: usize,
    bias: &[f32],
    out: OutPtr,
) {
    let per_img = geo.th * geo.tw;
    let kn = bias.len();
    for t in t0..t1 {
        let (img, r) = (t / per_img, t % per_img);
        let (ty, tx) = (r / geo.tw, r % geo.tw);
        let at = OutTile {
            row: t - t0,
            img,
            ty,
            tx,
        };
        let mut k = 0;
        // SAFETY: forwarded contract.
        unsafe {
            while k + 16 <= kn {
                emit::<T, 16>(m, geo, c_out, &at, tb, kw, k0, k, bias, out);
                k += 16;
            }
            while k < kn {
                emit::<T, 1>(m, geo, c_out, &at, tb, kw, k0, k, bias, out);
                k += 1;
            }
        }
    }
}

struct OutTile {
    row: usize,
    img: usize,
    ty: usize,
    tx: usize,
}

/// Output transform + epilogue of one tile for channels `k0 + k .. k0 + k + L`.
///
/// # Safety
/// As [`output_transform`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn emit<T: Tile, const L: usize>(
    m: &[f32],
    geo: &Geometry,
    c_out: usize,
    at: &OutTile,
    tb: usize,
    kw: usize,
    k0: usize,
    k: usize,
    bias: &[f32],
    out: OutPtr,
) {
    let y = T::output::<L>(m, at.row * kw + k, tb * kw);
    let b = Lanes::<L>::load(&bias[k..]);
    // SAFETY (for every `store` below): (oy, ox) is inside the output (checked just before)
    // and this unit owns these channels of this tile.
    let base = |oy: usize, ox: usize| ((at.img * geo.oh + oy) * geo.ow + ox) * c_out + k0 + k;
    if geo.pool {
        let half = T::M / 2;
        for pi in 0..half {
            for pj in 0..half {
                let (oy, ox) = (half * at.ty + pi, half * at.tx + pj);
                if oy >= geo.oh || ox >= geo.ow {
                    continue;
                }
                let (top, bottom) = (&y[2 * pi], &y[2 * pi + 1]);
                let mx = top[2 * pj]
                    .max(top[2 * pj + 1])
                    .max(bottom[2 * pj].max(bottom[2 * pj + 1]));
                unsafe { store(out, base(oy, ox), mx.bias_relu(b)) };
            }
        }
    } else {
        for (i, yr) in y.iter().enumerate().take(T::M) {
            for (j, yv) in yr.iter().enumerate().take(T::M) {
                let (oy, ox) = (T::M * at.ty + i, T::M * at.tx + j);
                if oy >= geo.oh || ox >= geo.ow {
                    continue;
                }
                unsafe { store(out, base(oy, ox), yv.bias_relu(b)) };
            }
        }
    }
}

/// # Safety
/// `out.0 + at` must be valid for writes of `L` values that no other thread accesses.
#[inline(always)]
unsafe fn store<const L: usize>(out: OutPtr, at: usize, v: Lanes<L>) {
    // SAFETY: forwarded contract.
    unsafe { std::ptr::copy_nonoverlapping(v.0.as_ptr(), out.0.add(at), L) };
}
