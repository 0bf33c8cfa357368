//! Seeded synthetic features shaped like ReLU'd VGG16 pool5 activations, for tests,
//! benches and timing runs: non-negative, about two thirds zeros, values about 0..50,
//! a low-rank class signal plus per-feature noise, imbalanced classes. The output
//! depends only on the arguments (not on the thread count).

use rayon::prelude::*;

/// The workspace's SplitMix64, with the draws synthetic features need.
#[derive(Debug, Clone)]
pub struct Rng(pipeline::SplitMix64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(pipeline::SplitMix64::new(seed))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }
}

/// `n` samples of `d` pool5-like features over `k` classes: returns row-major `x` (`n x d`)
/// and labels `y`. Class frequencies differ (up to about 3:1); the first `k` samples
/// cover every class once, so each class is present when `n >= k`.
pub fn pool5_like(n: usize, d: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    pool5_like_split(n, 0, d, k, seed).0
}

/// [`pool5_like`]'s `n` samples (the very same values) plus `n_val` further samples of the
/// same distribution (same class frequencies, centres and projection; labels drawn at
/// random), for a held-out validation set: returns `((x, y), (x_val, y_val))`.
#[allow(clippy::type_complexity)]
pub fn pool5_like_split(
    n: usize,
    n_val: usize,
    d: usize,
    k: usize,
    seed: u64,
) -> ((Vec<f32>, Vec<usize>), (Vec<f32>, Vec<usize>)) {
    const LATENT: usize = 32;
    let mut rng = Rng::new(seed);
    let props: Vec<f64> = (0..k).map(|_| 1.0 + 2.0 * rng.uniform()).collect();
    let total: f64 = props.iter().sum();
    let draw = |rng: &mut Rng| {
        let mut u = rng.uniform() * total;
        for (c, p) in props.iter().enumerate() {
            if u < *p {
                return c;
            }
            u -= p;
        }
        k - 1
    };
    let y: Vec<usize> = (0..n)
        .map(|i| if i < k { i } else { draw(&mut rng) })
        .collect();
    let centers: Vec<f64> = (0..k * LATENT).map(|_| rng.normal()).collect();
    let scale = 1.0 / (LATENT as f64).sqrt();
    // feature-major: proj[j * LATENT + l]
    let proj: Vec<f64> = (0..LATENT * d).map(|_| rng.normal() * scale).collect();
    let row_seed = rng.next_u64();
    let y_val: Vec<usize> = (0..n_val).map(|_| draw(&mut rng)).collect();
    // row i of the combined sample (validation rows numbered after the training rows)
    let rows = |y: &[usize], first: usize| {
        let mut x = vec![0f32; y.len() * d];
        x.par_chunks_mut(d.max(1)).enumerate().for_each(|(i, row)| {
            let i = first + i;
            let mut r = Rng::new(row_seed ^ (i as u64).wrapping_mul(0xD134_2543_DE82_EF95));
            let z: Vec<f64> = (0..LATENT)
                .map(|l| centers[y[i - first] * LATENT + l] + 1.2 * r.normal())
                .collect();
            for (j, v) in row.iter_mut().enumerate() {
                let mut h = r.normal() - 0.8;
                for (zl, pl) in z.iter().zip(&proj[j * LATENT..(j + 1) * LATENT]) {
                    h += zl * pl;
                }
                let a = h.max(0.0);
                *v = (1.5 * a * a).min(60.0) as f32;
            }
        });
        x
    };
    let x = rows(&y, 0);
    let x_val = rows(&y_val, n);
    ((x, y), (x_val, y_val))
}
