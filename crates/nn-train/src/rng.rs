//! A small, fixed pseudo-random generator (xoshiro256++ seeded through SplitMix64).

/// Stream of the weight initialisation.
pub const STREAM_INIT: u64 = 1;
/// Stream of the per-epoch shuffles.
pub const STREAM_SHUFFLE: u64 = 2;
/// Stream of the dropout masks.
pub const STREAM_DROPOUT: u64 = 3;

/// xoshiro256++ generator. One seed gives independent streams (initialisation, shuffling,
/// dropout), so a change in how one of them is used leaves the others as they were.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The generator of `stream` for `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut st = pipeline::SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let s = [st.next_u64(), st.next_u64(), st.next_u64(), st.next_u64()];
        Rng { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in [0, n), without bias (Lemire's method). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n || low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

/// `len` weights drawn from Glorot's (Xavier's) uniform distribution, as Keras's
/// `glorot_uniform` and PyTorch's `xavier_uniform_`: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)).
/// For a convolution, `fan_in` = kernel area x input channels, `fan_out` = kernel area x filters.
pub fn glorot_uniform(rng: &mut Rng, fan_in: usize, fan_out: usize, len: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    (0..len)
        .map(|_| (2.0 * rng.next_f32() - 1.0) * limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(7, 2).next_u64());
        assert_ne!(Rng::new(7, 1).next_u64(), Rng::new(8, 1).next_u64());
    }

    #[test]
    fn below_and_permutation() {
        let mut r = Rng::new(1, 0);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.below(3) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let mut p = r.permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn glorot_limits_and_spread() {
        let mut r = Rng::new(3, STREAM_INIT);
        let w = glorot_uniform(&mut r, 512, 100, 51_200);
        let l = (6.0f32 / 612.0).sqrt();
        assert!(w.iter().all(|x| x.abs() <= l));
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
        assert!(mean.abs() < 1e-3);
        assert!((var - (l as f64).powi(2) / 3.0).abs() < 1e-4);
    }
}
