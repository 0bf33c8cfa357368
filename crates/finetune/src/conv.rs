//! 3x3 convolutions with padding 1, stride 1, bias and ReLU (VGG's) on channels-last maps, and
//! their backward pass, by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, 2015) on
//! `vgg-extract`'s tile transforms and packed GEMM micro-kernels.
//!
//! The maps are cut into 4x4 output tiles, each computed from a 6x6 input patch `d`:
//! `Y = A^T [U ⊙ V] A` with `V = B^T d B` and `U = G g G^T`. Summed over input channels, the
//! element-wise product is 36 GEMMs (one per tile position `xi`), 4x fewer multiplications
//! than a direct convolution (3x at 14x14, whose tiles cover 16x16). The backward pass is the
//! adjoint of the same algebra, on the same 36 positions:
//!
//! - `dM = A dY A^T` per output tile (the output gradient, transformed once);
//! - input gradient: `dV[xi] = dM[xi] * U[xi]^T`, then `B dV B^T` added onto the tile's patch;
//! - kernel gradient: `dU[xi] = V[xi]^T * dM[xi]` summed over every tile of the batch, then
//!   `G^T dU G`.
//!
//! Every GEMM value is one chain of fused multiply-adds over its whole inner dimension (the
//! micro-kernels do not block it), the transforms are the same additions and multiplications
//! on 16 or 1 lanes, and tile patches are added in one order: results are the same bits on
//! AVX-512 and AVX2 and for any thread count. Rounding: the transforms scale by up to 8 and by
//! 1/6 and 1/24, about one decimal digit of `f32` accuracy (gradients within 1e-4 of scale of
//! PyTorch's, `tests/grad_fixture.rs`).

use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Mutex;
use vgg_extract::kernels::{
    microkernel, AlignedBuf, Isa, Job, Lanes, WinogradF4 as F4, WinogradTile as Tile,
};

/// Transformed positions per tile (6x6).
const XI: usize = 36;
/// Output tile side.
const M: usize = 4;

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

/// Right-hand sides `B` (`k x n`), one per tile position, packed in panels of `nr` columns
/// (`panel[p][r][j] = B[r][p * nr + j]`, zero-padded), `XI` of them back to back.
struct Panels {
    k: usize,
    n: usize,
    nr: usize,
}

impl Panels {
    fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// Values per position.
    fn per_position(&self) -> usize {
        self.panels() * self.k * self.nr
    }
}

/// A layer's kernel transformed (`U = G g G^T`) and packed: per tile position, `c x o` for
/// the forward pass and, packed when first asked for, `o x c` for the input gradient.
pub struct Kernel {
    isa: Isa,
    s: Shape,
    fwd: AlignedBuf,
    /// The input-gradient packing, made from `fwd` when first asked for after an update (its
    /// buffer kept between updates).
    bwd: Mutex<Bwd>,
}

#[derive(Default)]
struct Bwd {
    fresh: bool,
    buf: Option<AlignedBuf>,
}

impl Kernel {
    /// Transforms and packs a kernel (`9c x o`, row-major: row `(ky * 3 + kx) * c + ch`).
    pub fn new(isa: Isa, s: Shape, kernel: &[f32]) -> Kernel {
        let f = Kernel::fwd_panels(isa, s);
        let mut k = Kernel {
            isa,
            s,
            fwd: AlignedBuf::zeroed(XI * f.per_position()),
            bwd: Mutex::default(),
        };
        k.update(kernel);
        k
    }

    fn fwd_panels(isa: Isa, s: Shape) -> Panels {
        Panels {
            k: s.c,
            n: s.o,
            nr: isa.nr(),
        }
    }

    fn bwd_panels(isa: Isa, s: Shape) -> Panels {
        Panels {
            k: s.o,
            n: s.c,
            nr: isa.nr(),
        }
    }

    /// Transforms and packs new values of the same kernel into the same buffer.
    pub fn update(&mut self, kernel: &[f32]) {
        let (isa, s) = (self.isa, self.s);
        assert_eq!(kernel.len(), s.kernel_len());
        let f = Kernel::fwd_panels(isa, s);
        assert!(self.fwd.len() >= XI * f.per_position());
        self.bwd.get_mut().unwrap_or_else(|e| e.into_inner()).fresh = false;
        let out = SharedMut(self.fwd.as_mut_ptr());
        (0..s.c).into_par_iter().for_each(|ch| {
            // Row `ch` of every panel of every position is this channel's alone; the padding
            // columns of the last panel are never written (zero since `new`).
            isa.dispatch(KernelJob {
                kernel,
                layout: &f,
                ch,
                out,
            })
        });
    }

    /// Runs `f` on `U[xi]^T` (`o x c` per position) packed for the input gradient: the
    /// forward panels transposed, redone after each update.
    fn with_bwd<R>(&self, f: impl FnOnce(&[f32]) -> R) -> R {
        let mut bwd = self.bwd.lock().unwrap_or_else(|e| e.into_inner());
        let (fl, b) = (
            Kernel::fwd_panels(self.isa, self.s),
            Kernel::bwd_panels(self.isa, self.s),
        );
        if !bwd.fresh {
            let (c, o, nr) = (self.s.c, self.s.o, self.isa.nr());
            // Padding columns (channels >= c) are zero from `zeroed` and never written.
            let buf = bwd
                .buf
                .get_or_insert_with(|| AlignedBuf::zeroed(XI * b.per_position()));
            buf.par_chunks_mut(b.per_position())
                .zip(self.fwd.par_chunks(fl.per_position()))
                .for_each(|(bw, fw)| {
                    for q in 0..fl.panels() {
                        for ch in 0..c {
                            let (p, j) = (ch / nr, ch % nr);
                            let src = &fw[(q * c + ch) * nr..][..nr];
                            for (jj, v) in src.iter().enumerate().take(o - q * nr) {
                                bw[(p * o + q * nr + jj) * nr + j] = *v;
                            }
                        }
                    }
                });
            bwd.fresh = true;
        }
        f(bwd.buf.as_ref().expect("packed above"))
    }
}

/// The tile grid of a batch, and the padded widths of the buffers.
#[derive(Clone, Copy)]
struct Grid {
    th: usize,
    tw: usize,
    /// Tiles of the batch.
    t: usize,
    /// `t` rounded up to the micro-kernel's rows.
    tp: usize,
    /// `o` and `c` rounded up to whole panels.
    op: usize,
    cp: usize,
    /// `c` rounded up to the micro-kernel's rows.
    cm: usize,
}

impl Grid {
    fn new(isa: Isa, s: Shape, n: usize) -> Grid {
        let (th, tw) = (s.h.div_ceil(M), s.w.div_ceil(M));
        let t = n * th * tw;
        let (mr, nr) = (isa.mr(), isa.nr());
        Grid {
            th,
            tw,
            t,
            tp: t.div_ceil(mr) * mr,
            op: s.o.div_ceil(nr) * nr,
            cp: s.c.div_ceil(nr) * nr,
            cm: s.c.div_ceil(mr) * mr,
        }
    }

    fn per_image(&self) -> usize {
        self.th * self.tw
    }
}

/// Runs `$body` for every whole group of 16 of `0..$n` with the const `$L` = 16 and `$i` the
/// group's first index, then for each remaining index with `$L` = 1; evaluates to `$n`.
macro_rules! by_lanes {
    ($n:expr, |$i:ident, $L:ident| $body:expr) => {{
        let n = $n;
        let mut $i = 0;
        while $i + 16 <= n {
            const $L: usize = 16;
            $body;
            $i += 16;
        }
        while $i < n {
            const $L: usize = 1;
            $body;
            $i += 1;
        }
        $i
    }};
}

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `K` scratch buffers of the given lengths (reused between calls on a thread, so their
/// contents are stale: every user writes all it reads).
fn scratch<const K: usize, R>(lens: [usize; K], f: impl FnOnce([&mut [f32]; K]) -> R) -> R {
    let mut bufs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if bufs.len() < K {
        bufs.resize_with(K, Vec::new);
    }
    for (b, &l) in bufs.iter_mut().zip(&lens) {
        if b.len() < l {
            b.resize(l, 0.0);
        }
    }
    let r = {
        let mut it = bufs.iter_mut().zip(lens);
        f(std::array::from_fn(|_| {
            let (b, l) = it.next().expect("K buffers");
            &mut b[..l]
        }))
    };
    SCRATCH.with(|s| *s.borrow_mut() = bufs);
    r
}

/// Raw pointer to a buffer whose disjoint parts parallel tasks write.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: tasks write disjoint elements, and the buffer outlives the loop that uses it.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `C[xi] = A[xi] * B[xi]` for the 36 positions: `A[xi]` is `rows x k` at `a[xi * a_pos..]`
/// with row stride `lda`; `B[xi]` is packed in `b` as `layout` says; `C[xi]` is
/// `rows x (panels * nr)` at `c[xi * c_pos..]` with row stride `ldc`; `rows` is a multiple
/// of the micro-kernel's rows.
#[allow(clippy::too_many_arguments)]
fn gemm_positions(
    isa: Isa,
    rows: usize,
    a: &[f32],
    a_pos: usize,
    lda: usize,
    (layout, b): (&Panels, &[f32]),
    c: &mut [f32],
    c_pos: usize,
    ldc: usize,
) {
    let (k, panels) = (layout.k, layout.panels());
    let (mr, nr) = (isa.mr(), isa.nr());
    if rows == 0 || panels == 0 {
        return;
    }
    assert_eq!(layout.nr, nr);
    assert!(rows.is_multiple_of(mr) && lda >= k && ldc >= panels * nr);
    assert!((XI - 1) * a_pos + (rows - 1) * lda + k <= a.len());
    assert!(b.len() >= XI * layout.per_position());
    assert!((XI - 1) * c_pos + (rows - 1) * ldc + panels * nr <= c.len());
    const CHUNK: usize = 4;
    let chunks = panels.div_ceil(CHUNK);
    let out = SharedMut(c.as_mut_ptr());
    (0..XI * chunks).into_par_iter().for_each(|unit| {
        let (xi, ch) = (unit / chunks, unit % chunks);
        let (p0, p1) = (ch * CHUNK, ((ch + 1) * CHUNK).min(panels));
        for g in 0..rows / mr {
            let ap = a[xi * a_pos + g * mr * lda..].as_ptr();
            for p in p0..p1 {
                let bp = b[xi * layout.per_position() + p * k * nr..].as_ptr();
                // SAFETY: the asserts above keep rows `g*mr..(g+1)*mr` of `A[xi]`, panel `p`
                // of `B[xi]` (`k * nr` values) and whole panels of `C[xi]` inside `a`, `b`
                // and `c`; units write disjoint (position, panel) blocks of C; `isa` came
                // from `Isa::detect` or `Isa::available`.
                unsafe {
                    microkernel(
                        isa,
                        k,
                        ap,
                        lda,
                        bp,
                        out.ptr().add(xi * c_pos + g * mr * ldc + p * nr),
                        ldc,
                        false,
                    );
                }
            }
        }
    });
}

/// The 36 rows of tile `t`'s 6x6 input patch (`zeros` outside the map).
fn patch<'a>(s: Shape, g: Grid, x: &'a [f32], zeros: &'a [f32], t: usize) -> [&'a [f32]; XI] {
    let c = s.c;
    let (img, r) = (t / g.per_image(), t % g.per_image());
    let (ty, tx) = (r / g.tw, r % g.tw);
    let mut src: [&[f32]; XI] = [zeros; XI];
    for dy in 0..6 {
        let yy = (M * ty + dy).wrapping_sub(1);
        if yy >= s.h {
            continue; // zero padding (above the image wraps around)
        }
        for dx in 0..6 {
            let xx = (M * tx + dx).wrapping_sub(1);
            if xx < s.w {
                let p = (img * s.h + yy) * s.w + xx;
                src[dy * 6 + dx] = &x[p * c..(p + 1) * c];
            }
        }
    }
    src
}

/// `V = B^T d B` of every tile: `v[t][xi][ch]`, `tp` rows of `36 c` (padding rows zero).
fn input_transform(isa: Isa, s: Shape, g: Grid, x: &[f32], v: &mut [f32]) {
    let c = s.c;
    let zeros = vec![0.0f32; c];
    v.par_chunks_mut(XI * c)
        .enumerate()
        .with_min_len(4)
        .for_each(|(t, v)| {
            if t >= g.t {
                v.fill(0.0);
            } else {
                let src = patch(s, g, x, &zeros, t);
                isa.dispatch(InputJob { src: &src, c, v });
            }
        });
}

struct InputJob<'a> {
    src: &'a [&'a [f32]; XI],
    c: usize,
    v: &'a mut [f32],
}

impl Job for InputJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        by_lanes!(self.c, |ch, L| F4::input::<L>(
            self.src, ch, self.v, ch, self.c
        ));
    }
}

/// Tiles per block of the transposed input transform.
const TB: usize = 16;

/// `V` of every tile, transposed per position: `vt[xi][ch][t]` (`cm` rows of `t` per position,
/// rows `ch >= c` zero). Blocks of [`TB`] tiles are transformed into a small buffer, then
/// written a row segment of `TB` tiles at a time.
fn input_transform_transposed(isa: Isa, s: Shape, g: Grid, x: &[f32], vt: &mut [f32]) {
    let c = s.c;
    let zeros = vec![0.0f32; c];
    let out = SharedMut(vt.as_mut_ptr());
    assert!(vt.len() >= XI * g.cm * g.t);
    (0..g.t.div_ceil(TB)).into_par_iter().for_each(|b| {
        let t0 = b * TB;
        let tiles = TB.min(g.t - t0);
        let src: [[&[f32]; XI]; TB] =
            std::array::from_fn(|i| patch(s, g, x, &zeros, (t0 + i).min(g.t - 1)));
        // This block writes columns `t0..t0 + tiles` of every row, which no other block
        // writes; `vt` holds `XI * cm` rows of `t` (asserted above).
        isa.dispatch(InputTJob {
            src: &src,
            c,
            rows: g.cm,
            t: g.t,
            t0,
            tiles,
            out,
        });
    });
    vt[..XI * g.cm * g.t]
        .par_chunks_mut(g.cm * g.t)
        .for_each(|p| p[c * g.t..].fill(0.0));
}

struct InputTJob<'a> {
    src: &'a [[&'a [f32]; XI]; TB],
    c: usize,
    rows: usize,
    t: usize,
    t0: usize,
    tiles: usize,
    out: SharedMut,
}

impl Job for InputTJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let mut buf = [0.0f32; XI * TB * 16];
        by_lanes!(self.c, |ch, L| self.channels::<L>(ch, &mut buf));
    }
}

impl InputTJob<'_> {
    /// Channels `ch..ch + L` of the block: `buf[xi][tile][lane]`, then row segments.
    #[inline(always)]
    fn channels<const L: usize>(&self, ch: usize, buf: &mut [f32; XI * TB * 16]) {
        for (i, src) in self.src.iter().enumerate() {
            F4::input::<L>(src, ch, buf, i * L, TB * L);
        }
        for xi in 0..XI {
            for l in 0..L {
                let mut seg = [0.0f32; TB];
                for (i, v) in seg.iter_mut().enumerate() {
                    *v = buf[(xi * TB + i) * L + l];
                }
                let row = xi * self.rows + ch + l;
                // SAFETY: rows `< XI * cm` of `t` values are inside `vt`, and columns
                // `t0..t0 + tiles` belong to this job alone (see `input_transform_transposed`).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        seg.as_ptr(),
                        self.out.ptr().add(row * self.t + self.t0),
                        self.tiles,
                    );
                }
            }
        }
    }
}

/// `out = ReLU(A^T m A + bias)` of every tile, `m[t][xi][f]` (rows of `36 op`).
fn output_transform(isa: Isa, s: Shape, g: Grid, m: &[f32], bias: &[f32], out: &mut [f32]) {
    out.par_chunks_exact_mut(s.output_len())
        .enumerate()
        .for_each(|(img, out)| {
            isa.dispatch(OutputJob {
                s,
                g,
                m,
                bias,
                img,
                out,
            })
        });
}

struct OutputJob<'a> {
    s: Shape,
    g: Grid,
    m: &'a [f32],
    bias: &'a [f32],
    img: usize,
    out: &'a mut [f32],
}

impl Job for OutputJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let OutputJob {
            s,
            g,
            m,
            bias,
            img,
            out,
        } = self;
        for r in 0..g.per_image() {
            let (ty, tx) = (r / g.tw, r % g.tw);
            let at = (img * g.per_image() + r) * XI * g.op;
            by_lanes!(s.o, |f, L| emit::<L>(
                s,
                m,
                at + f,
                g.op,
                &bias[f..],
                (ty, tx),
                f,
                out
            ));
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit<const L: usize>(
    s: Shape,
    m: &[f32],
    at: usize,
    plane: usize,
    bias: &[f32],
    (ty, tx): (usize, usize),
    f: usize,
    out: &mut [f32],
) {
    let y = F4::output::<L>(m, at, plane);
    let b = Lanes::<L>::load(bias);
    for (i, row) in y.iter().enumerate() {
        let oy = M * ty + i;
        if oy >= s.h {
            break;
        }
        for (j, v) in row.iter().enumerate() {
            let ox = M * tx + j;
            if ox >= s.w {
                break;
            }
            let v = v.zip(b, |v, b| (v + b).max(0.0));
            out[(oy * s.w + ox) * s.o + f..][..L].copy_from_slice(&v.0);
        }
    }
}

/// `ReLU(conv(x) + bias)` for `n` images (`x`: `n x h x w x c`; `out`: `n x h x w x o`).
pub fn forward(s: Shape, x: &[f32], n: usize, kernel: &Kernel, bias: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), n * s.input_len());
    assert_eq!(out.len(), n * s.output_len());
    assert_eq!((kernel.s, bias.len()), (s, s.o));
    let (isa, g) = (kernel.isa, Grid::new(kernel.isa, s, n));
    scratch([g.tp * XI * s.c, g.tp * XI * g.op], |[v, m]| {
        input_transform(isa, s, g, x, v);
        let fwd = Kernel::fwd_panels(isa, s);
        gemm_positions(
            isa,
            g.tp,
            v,
            s.c,
            XI * s.c,
            (&fwd, &kernel.fwd),
            m,
            g.op,
            XI * g.op,
        );
        output_transform(isa, s, g, m, bias, out);
    });
}

/// `x` as `G x` (`G` of F(4x4, 3x3)), a 3-vector to a 6-vector.
#[inline(always)]
fn g6<const L: usize>([x0, x1, x2]: [Lanes<L>; 3]) -> [Lanes<L>; 6] {
    const SIXTH: f32 = 1.0 / 6.0;
    let (a, b) = (x0 + x2, (1.0 / 24.0) * x0 + SIXTH * x2);
    [
        0.25 * x0,
        (-SIXTH) * (a + x1),
        (-SIXTH) * (a - x1),
        b + (1.0 / 12.0) * x1,
        b - (1.0 / 12.0) * x1,
        x2,
    ]
}

/// `G^T y`, a 6-vector to a 3-vector.
#[inline(always)]
fn gt6<const L: usize>([y0, y1, y2, y3, y4, y5]: [Lanes<L>; 6]) -> [Lanes<L>; 3] {
    const SIXTH: f32 = 1.0 / 6.0;
    let (p, q) = (y1 + y2, y3 + y4);
    let (r, d) = (y2 - y1, y3 - y4);
    [
        0.25 * y0 - SIXTH * p + (1.0 / 24.0) * q,
        SIXTH * r + (1.0 / 12.0) * d,
        SIXTH * (q - p) + y5,
    ]
}

/// `A y` (`A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, -1, 8, -8, 1]]`), a 4-vector to a 6-vector.
#[inline(always)]
fn a6<const L: usize>([y0, y1, y2, y3]: [Lanes<L>; 4]) -> [Lanes<L>; 6] {
    let (e, f) = (y0 + y2, y1 + y3);
    let (e4, f2) = (y0 + 4.0 * y2, 2.0 * y1 + 8.0 * y3);
    [y0, e + f, e - f, e4 + f2, e4 - f2, y3]
}

/// `B x` (`B^T` as in `vgg-extract`'s input transform), a 6-vector to a 6-vector.
#[inline(always)]
fn b6<const L: usize>([x0, x1, x2, x3, x4, x5]: [Lanes<L>; 6]) -> [Lanes<L>; 6] {
    let (p, q) = (x2 - x1, x3 - x4);
    let (r, t) = (x1 + x2, x3 + x4);
    [
        4.0 * x0,
        4.0 * p + 2.0 * (x4 - x3) + 4.0 * x5,
        (-5.0) * x0 - 4.0 * r - t,
        2.0 * q - p - 5.0 * x5,
        x0 + r + t,
        x5,
    ]
}

/// `U = G g G^T` of input channel `ch` for every filter, written to row `ch` of each panel
/// of each position of the packed forward kernel (`layout`: `c x o` per position).
struct KernelJob<'a> {
    kernel: &'a [f32],
    layout: &'a Panels,
    ch: usize,
    out: SharedMut,
}

impl Job for KernelJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        by_lanes!(self.layout.n, |f, L| self.filters::<L>(f));
    }
}

impl KernelJob<'_> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // `i` indexes three arrays
    fn filters<const L: usize>(&self, f: usize) {
        let (c, o, nr) = (self.layout.k, self.layout.n, self.layout.nr);
        let mut cols = [[Lanes::<L>::ZERO; 6]; 3];
        for (kx, col) in cols.iter_mut().enumerate() {
            let mut g = [Lanes::<L>::ZERO; 3];
            for (ky, v) in g.iter_mut().enumerate() {
                *v = Lanes::load(&self.kernel[((ky * 3 + kx) * c + self.ch) * o + f..]);
            }
            *col = g6(g);
        }
        // `f` is a multiple of `L`, which divides `nr`: the lanes stay inside one panel row.
        let at = ((f / nr) * c + self.ch) * nr + f % nr;
        for i in 0..6 {
            let row = g6([cols[0][i], cols[1][i], cols[2][i]]);
            for (j, v) in row.iter().enumerate() {
                let xi = i * 6 + j;
                // SAFETY: `at + L <= per_position` (row `ch < c` of panel `f / nr`); the
                // buffer holds `XI` positions (asserted by `update`); this row is the job's own.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        v.0.as_ptr(),
                        self.out.ptr().add(xi * self.layout.per_position() + at),
                        L,
                    )
                };
            }
        }
    }
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

/// `dM = A dZ A^T` of every output tile, where `dZ` is `gy` where `y > 0` (the ReLU's
/// gradient) and zero elsewhere, written packed as the right-hand side of the kernel
/// gradient's GEMMs (`dmp`, `t x o` per position, as `layout` says) and, when `dm` is given,
/// as `dm[t][xi][f]` (`tp` rows of `36 o`, padding rows zero) for the input gradient's.
fn grad_output_transform(
    isa: Isa,
    s: Shape,
    g: Grid,
    (y, gy): (&[f32], &[f32]),
    (layout, dmp): (&Panels, &mut [f32]),
    dm: Option<&mut [f32]>,
) {
    assert!(dmp.len() >= XI * layout.per_position() && layout.k == g.t && layout.n == s.o);
    let packed = SharedMut(dmp.as_mut_ptr());
    let plain = dm.map(|dm| {
        assert!(dm.len() >= g.tp * XI * s.o);
        dm[g.t * XI * s.o..].fill(0.0);
        SharedMut(dm.as_mut_ptr())
    });
    (0..g.t).into_par_iter().with_min_len(4).for_each(|t| {
        // Row `t` of every panel of `dmp`, and row `t` of `dm`, are this tile's alone.
        isa.dispatch(GradOutJob {
            s,
            g,
            y,
            gy,
            t,
            layout,
            packed,
            plain,
        })
    });
}

struct GradOutJob<'a> {
    s: Shape,
    g: Grid,
    y: &'a [f32],
    gy: &'a [f32],
    t: usize,
    layout: &'a Panels,
    packed: SharedMut,
    plain: Option<SharedMut>,
}

impl Job for GradOutJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let mut f = by_lanes!(self.s.o, |f, L| self.filters::<L>(f));
        // The padding columns of the last panel.
        let nr = self.layout.nr;
        while f < self.layout.panels() * nr {
            for xi in 0..XI {
                let at = xi * self.layout.per_position() + ((f / nr) * self.g.t + self.t) * nr;
                // SAFETY: as in `filters`.
                unsafe { *self.packed.ptr().add(at + f % nr) = 0.0 };
            }
            f += 1;
        }
    }
}

impl GradOutJob<'_> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // `i` indexes three arrays
    fn filters<const L: usize>(&self, f: usize) {
        let (s, g, nr) = (self.s, self.g, self.layout.nr);
        let (img, r) = (self.t / g.per_image(), self.t % g.per_image());
        let (ty, tx) = (r / g.tw, r % g.tw);
        // Columns of the 4x4 output gradient (zero outside the map), each through `A`.
        let mut cols = [[Lanes::<L>::ZERO; 6]; 4];
        for (j, col) in cols.iter_mut().enumerate() {
            let ox = M * tx + j;
            let mut d = [Lanes::<L>::ZERO; 4];
            if ox < s.w {
                for (i, v) in d.iter_mut().enumerate() {
                    let oy = M * ty + i;
                    if oy < s.h {
                        let at = ((img * s.h + oy) * s.w + ox) * s.o + f;
                        let (y, gy) =
                            (Lanes::<L>::load(&self.y[at..]), Lanes::load(&self.gy[at..]));
                        *v = y.zip(gy, |y, g| if y > 0.0 { g } else { 0.0 });
                    }
                }
            }
            *col = a6(d);
        }
        // `f` is a multiple of `L`, which divides `nr`: the lanes stay inside one panel row.
        let at = ((f / nr) * g.t + self.t) * nr + f % nr;
        for i in 0..6 {
            let row = a6([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
            for (j, v) in row.iter().enumerate() {
                let xi = i * 6 + j;
                // SAFETY: row `t < layout.k` of panel `f / nr` and row `t` of `dm` are inside
                // the buffers (asserted in `grad_output_transform`) and this job's alone.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        v.0.as_ptr(),
                        self.packed.ptr().add(xi * self.layout.per_position() + at),
                        L,
                    );
                    if let Some(plain) = self.plain {
                        std::ptr::copy_nonoverlapping(
                            v.0.as_ptr(),
                            plain.ptr().add((self.t * XI + xi) * s.o + f),
                            L,
                        );
                    }
                }
            }
        }
    }
}

/// Adds `B dV B^T` of every tile of image `img` onto its patch of `dx` (one image's map).
struct InputGradJob<'a> {
    s: Shape,
    g: Grid,
    dv: &'a [f32],
    img: usize,
    dx: &'a mut [f32],
}

impl Job for InputGradJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(mut self) {
        for r in 0..self.g.per_image() {
            by_lanes!(self.s.c, |ch, L| self.channels::<L>(r, ch));
        }
    }
}

impl InputGradJob<'_> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // `i` indexes three arrays
    fn channels<const L: usize>(&mut self, r: usize, ch: usize) {
        let (s, g) = (self.s, self.g);
        let (ty, tx) = (r / g.tw, r % g.tw);
        let at = ((self.img * g.per_image() + r) * XI) * g.cp + ch;
        let mut cols = [[Lanes::<L>::ZERO; 6]; 6];
        for (j, col) in cols.iter_mut().enumerate() {
            let mut d = [Lanes::<L>::ZERO; 6];
            for (i, v) in d.iter_mut().enumerate() {
                *v = Lanes::load(&self.dv[at + (i * 6 + j) * g.cp..]);
            }
            *col = b6(d);
        }
        for i in 0..6 {
            let yy = (M * ty + i).wrapping_sub(1);
            if yy >= s.h {
                continue; // the padding (above the map wraps around)
            }
            let row = b6([
                cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i],
            ]);
            for (j, v) in row.iter().enumerate() {
                let xx = (M * tx + j).wrapping_sub(1);
                if xx < s.w {
                    let d = &mut self.dx[(yy * s.w + xx) * s.c + ch..][..L];
                    let sum = Lanes::<L>::load(d) + *v;
                    d.copy_from_slice(&sum.0);
                }
            }
        }
    }
}

/// `dW = G^T dU G` of input channel `ch` for every filter, from `du[xi * pos + f]`, into rows
/// `tap * c + ch` of the kernel gradient `dk` (`9c x o`).
struct KernelGradJob<'a> {
    c: usize,
    o: usize,
    ch: usize,
    du: &'a [f32],
    pos: usize,
    dk: SharedMut,
}

impl Job for KernelGradJob<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        by_lanes!(self.o, |f, L| self.filters::<L>(f));
    }
}

impl KernelGradJob<'_> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // `ky` indexes six arrays
    fn filters<const L: usize>(&self, f: usize) {
        let mut cols = [[Lanes::<L>::ZERO; 3]; 6];
        for (j, col) in cols.iter_mut().enumerate() {
            let mut d = [Lanes::<L>::ZERO; 6];
            for (i, v) in d.iter_mut().enumerate() {
                *v = Lanes::load(&self.du[(i * 6 + j) * self.pos + f..]);
            }
            *col = gt6(d);
        }
        for ky in 0..3 {
            let row = gt6([
                cols[0][ky],
                cols[1][ky],
                cols[2][ky],
                cols[3][ky],
                cols[4][ky],
                cols[5][ky],
            ]);
            for (kx, v) in row.iter().enumerate() {
                let at = ((ky * 3 + kx) * self.c + self.ch) * self.o + f;
                // SAFETY: `dk` holds `9 c o` values; this row is the job's own (see where
                // it is made) and `f + L <= o`.
                unsafe { std::ptr::copy_nonoverlapping(v.0.as_ptr(), self.dk.ptr().add(at), L) };
            }
        }
    }
}

/// Backward pass of `y = ReLU(conv(x) + bias)` for `n` images, given `gy = dL/dy`: the kernel
/// and bias gradients (summed over the images) and, if `want_input`, `dL/dx`.
pub fn backward(
    s: Shape,
    x: &[f32],
    y: &[f32],
    gy: &[f32],
    n: usize,
    kernel: &Kernel,
    want_input: bool,
) -> LayerGrads {
    assert_eq!(x.len(), n * s.input_len());
    assert_eq!(y.len(), n * s.output_len());
    assert_eq!(gy.len(), y.len());
    assert_eq!(kernel.s, s);
    let (c, o) = (s.c, s.o);
    let (isa, g) = (kernel.isa, Grid::new(kernel.isa, s, n));
    // The bias gradient: per image in parallel, then summed over the images in order.
    let per_image: Vec<Vec<f32>> = y
        .par_chunks_exact(s.output_len())
        .zip(gy.par_chunks_exact(s.output_len()))
        .map(|(y, gy)| {
            let mut b = vec![0.0f32; o];
            for (y, gy) in y.chunks_exact(o).zip(gy.chunks_exact(o)) {
                for ((b, &y), &g) in b.iter_mut().zip(y).zip(gy) {
                    *b += if y > 0.0 { g } else { 0.0 };
                }
            }
            b
        })
        .collect();
    let mut bias = vec![0.0f32; o];
    for b in &per_image {
        for (s, v) in bias.iter_mut().zip(b) {
            *s += v;
        }
    }
    let lens = [
        XI * g.cm * g.t,
        if want_input { g.tp * XI * o } else { 0 },
        XI * g.op * g.t,
        XI * g.cm * g.op,
        if want_input { g.tp * XI * g.cp } else { 0 },
    ];
    scratch(lens, |[vt, dm, dmp, du, dv]| {
        input_transform_transposed(isa, s, g, x, vt);
        // dU^T[xi] (c x o) = V[xi]^T (c x t) * dM[xi] (t x o).
        let dmp_layout = Panels {
            k: g.t,
            n: o,
            nr: isa.nr(),
        };
        grad_output_transform(
            isa,
            s,
            g,
            (y, gy),
            (&dmp_layout, dmp),
            want_input.then_some(&mut *dm),
        );
        let dm = &*dm;
        gemm_positions(
            isa,
            g.cm,
            vt,
            g.cm * g.t,
            g.t,
            (&dmp_layout, dmp),
            du,
            g.cm * g.op,
            g.op,
        );
        let mut dk = vec![0.0f32; 9 * c * o];
        let out = SharedMut(dk.as_mut_ptr());
        let du = &*du;
        (0..c).into_par_iter().for_each(|ch| {
            // Rows `(tap * 3 + kx) * c + ch` of `dk` belong to this channel alone.
            isa.dispatch(KernelGradJob {
                c,
                o,
                ch,
                du: &du[ch * g.op..],
                pos: g.cm * g.op,
                dk: out,
            })
        });
        let input = want_input.then(|| {
            // dV[xi] (t x c) = dM[xi] (t x o) * U[xi]^T (o x c).
            let bwd = Kernel::bwd_panels(isa, s);
            kernel.with_bwd(|packed| {
                gemm_positions(
                    isa,
                    g.tp,
                    dm,
                    o,
                    XI * o,
                    (&bwd, packed),
                    dv,
                    g.cp,
                    XI * g.cp,
                )
            });
            let mut dx = vec![0.0f32; n * s.input_len()];
            let dv = &*dv;
            dx.par_chunks_exact_mut(s.input_len())
                .enumerate()
                .for_each(|(img, dx)| isa.dispatch(InputGradJob { s, g, dv, img, dx }));
            dx
        });
        LayerGrads {
            kernel: dk,
            bias,
            input,
        }
    })
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
    #[allow(clippy::needless_range_loop)] // `ky` indexes six arrays
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
            forward(S, &x, n, &Kernel::new(isa, S, &kern), &bias, &mut y);
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

    /// Direct backward pass in f64 for `n` images, given the forward's `y` (its ReLU mask)
    /// and `gy`: (kernel gradient `9c x o`, input gradient).
    #[allow(clippy::needless_range_loop)] // `ky` indexes six arrays
    fn backward_naive(
        s: Shape,
        x: &[f32],
        y: &[f32],
        gy: &[f32],
        n: usize,
        kernel: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut dk = vec![0.0f64; s.kernel_len()];
        let mut dx = vec![0.0f64; n * s.input_len()];
        for i in 0..n {
            for oy in 0..s.h {
                for ox in 0..s.w {
                    for f in 0..s.o {
                        let at = i * s.output_len() + (oy * s.w + ox) * s.o + f;
                        if y[at] <= 0.0 {
                            continue;
                        }
                        let g = gy[at] as f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) =
                                    ((oy + ky).wrapping_sub(1), (ox + kx).wrapping_sub(1));
                                if iy >= s.h || ix >= s.w {
                                    continue;
                                }
                                for c in 0..s.c {
                                    let xi = i * s.input_len() + (iy * s.w + ix) * s.c + c;
                                    let ki = ((ky * 3 + kx) * s.c + c) * s.o + f;
                                    dk[ki] += g * x[xi] as f64;
                                    dx[xi] += g * kernel[ki] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (dk, dx)
    }

    /// Every gradient value against the direct computation in f64, on maps whose sides are
    /// not multiples of the tile and channel counts that are not multiples of the lanes.
    #[test]
    fn backward_matches_a_direct_computation_everywhere() {
        let s = Shape {
            h: 7,
            w: 9,
            c: 19,
            o: 35,
        };
        let n = 3;
        let x: Vec<f32> = values(n * s.input_len(), 8)
            .iter()
            .map(|v| v.abs())
            .collect();
        let kern = values(s.kernel_len(), 9);
        let bias: Vec<f32> = values(s.o, 10).iter().map(|b| b * 0.1).collect();
        let gy = values(n * s.output_len(), 11);
        for isa in Isa::available() {
            let k = Kernel::new(isa, s, &kern);
            let mut y = vec![0.0; n * s.output_len()];
            forward(s, &x, n, &k, &bias, &mut y);
            let g = backward(s, &x, &y, &gy, n, &k, true);
            let (dk, dx) = backward_naive(s, &x, &y, &gy, n, &kern);
            for (what, got, want) in [
                ("dW", &g.kernel, &dk),
                ("dx", g.input.as_ref().unwrap(), &dx),
            ] {
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() <= 1e-5 * scale,
                        "{isa:?} {what}[{i}] {a} {b} (scale {scale})"
                    );
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
            forward(S, &x, n, &Kernel::new(isa, S, &kern), &bias, &mut y);
            let g = backward(S, &x, &y, &probe, n, &Kernel::new(isa, S, &kern), true);
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
