//! A split's stored activations, memory-mapped: rows are (image, view) pairs taken at random.

use contracts::{FeaturesReader, MappedChunk};
use pipeline::BoxError;

/// Every chunk of one split of `vgg-activations`.
pub struct SplitMaps {
    what: String,
    chunks: Vec<MappedChunk>,
    /// The first image of each chunk.
    starts: Vec<usize>,
    pub views: Vec<String>,
    pub labels: Vec<u32>,
    pub index: Vec<i64>,
    /// `(h, w, c)` of one map.
    pub map: (usize, usize, usize),
}

impl SplitMaps {
    pub fn open(reader: &FeaturesReader<'_>, what: &str) -> Result<SplitMaps, BoxError> {
        let views = reader.views()?;
        let mut s = SplitMaps {
            what: what.to_string(),
            chunks: Vec::new(),
            starts: Vec::new(),
            views,
            labels: Vec::new(),
            index: Vec::new(),
            map: (0, 0, 0),
        };
        for i in 0..reader.chunks() {
            let c = reader.mapped(i)?;
            let [_, h, w, ch] = c.shape[..] else {
                return Err(format!("{what}: chunk {i} has maps of shape {:?}", c.shape).into());
            };
            if s.chunks.is_empty() {
                s.map = (h, w, ch);
            } else if s.map != (h, w, ch) {
                return Err(format!(
                    "{what}: chunk {i} holds {h}x{w}x{ch} maps, the first chunk {:?}; fine-tuning needs one input size",
                    s.map
                )
                .into());
            }
            for v in &s.views {
                c.view_bytes(v)?;
            }
            s.starts.push(s.labels.len());
            for &l in &c.labels {
                s.labels
                    .push(u32::try_from(l).map_err(|_| format!("{what}: label {l}"))?);
            }
            s.index.extend(&c.index);
            s.chunks.push(c);
        }
        Ok(s)
    }

    pub fn images(&self) -> usize {
        self.labels.len()
    }

    pub fn map_len(&self) -> usize {
        self.map.0 * self.map.1 * self.map.2
    }

    /// Appends the map of image `i`, view `v` to `out`; a NaN or infinite value is an error.
    pub fn push(&self, i: usize, v: usize, out: &mut Vec<f32>) -> Result<(), BoxError> {
        let (h, w, _) = self.map;
        self.push_window(i, v, (0, 0, h, w), out)
    }

    /// Appends the window `(y0, x0, h, w)` of the map of image `i`, view `v` to `out`.
    pub fn push_window(
        &self,
        i: usize,
        v: usize,
        (y0, x0, wh, ww): (usize, usize, usize, usize),
        out: &mut Vec<f32>,
    ) -> Result<(), BoxError> {
        let ci = self.starts.partition_point(|&s| s <= i) - 1;
        let row = i - self.starts[ci];
        let bytes = self.chunks[ci].view_bytes(&self.views[v])?;
        let (_, mw, c) = self.map;
        let len = self.map_len();
        let map = &bytes[row * len * 4..(row + 1) * len * 4];
        let start = out.len();
        for y in y0..y0 + wh {
            let line = &map[((y * mw + x0) * c) * 4..((y * mw + x0 + ww) * c) * 4];
            out.extend(
                line.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        if out[start..].iter().any(|x| !x.is_finite()) {
            return Err(format!(
                "{}: the stored map of image {} (view {}) holds a NaN or infinite value",
                self.what, self.index[i], self.views[v]
            )
            .into());
        }
        Ok(())
    }
}

/// The training rows' images: one or more splits' maps, in order (image `i` of the pool is
/// image `i` of the first split, then of the next, ...); every split with the same map size
/// and views.
pub struct Pool<'a> {
    parts: Vec<&'a SplitMaps>,
}

impl<'a> Pool<'a> {
    pub fn new(parts: Vec<&'a SplitMaps>) -> Result<Pool<'a>, BoxError> {
        let first = *parts.first().ok_or("no split to train on")?;
        for s in &parts[1..] {
            if s.map != first.map || s.views != first.views {
                return Err(format!(
                    "{} holds {:?} maps of views {:?}, {} {:?} maps of views {:?}: they cannot be trained on together",
                    first.what, first.map, first.views, s.what, s.map, s.views
                )
                .into());
            }
        }
        Ok(Pool { parts })
    }

    pub fn images(&self) -> usize {
        self.parts.iter().map(|s| s.images()).sum()
    }

    pub fn views(&self) -> usize {
        self.parts[0].views.len()
    }

    /// `(h, w, c)` of every map.
    pub fn map(&self) -> (usize, usize, usize) {
        self.parts[0].map
    }

    /// The split holding image `i` of the pool and its index there.
    pub fn locate(&self, mut i: usize) -> (&'a SplitMaps, usize) {
        for s in &self.parts {
            if i < s.images() {
                return (s, i);
            }
            i -= s.images();
        }
        panic!("image {i} past the pool's end")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split of `n` images with no stored maps (enough for the pool's bookkeeping).
    fn split(what: &str, n: u32, map: (usize, usize, usize), views: &[&str]) -> SplitMaps {
        SplitMaps {
            what: what.into(),
            chunks: Vec::new(),
            starts: Vec::new(),
            views: views.iter().map(|v| v.to_string()).collect(),
            labels: (0..n).map(|i| 100 + i).collect(),
            index: (0..n as i64).collect(),
            map,
        }
    }

    #[test]
    fn a_pool_numbers_the_images_of_its_splits_in_order() {
        let (a, b) = (
            split("training", 3, (20, 20, 512), &["features"]),
            split("validation", 2, (20, 20, 512), &["features"]),
        );
        let pool = Pool::new(vec![&a, &b]).unwrap();
        assert_eq!((pool.images(), pool.views()), (5, 1));
        let got: Vec<(&str, usize)> = (0..5)
            .map(|i| {
                let (s, j) = pool.locate(i);
                (s.what.as_str(), j)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("training", 0),
                ("training", 1),
                ("training", 2),
                ("validation", 0),
                ("validation", 1)
            ]
        );
        let other = split("validation", 2, (14, 14, 512), &["features"]);
        let e = Pool::new(vec![&a, &other]).err().unwrap().to_string();
        assert!(e.contains("cannot be trained on together"), "{e}");
        let flip = split(
            "validation",
            2,
            (20, 20, 512),
            &["features", "features@flip"],
        );
        assert!(Pool::new(vec![&a, &flip]).is_err());
    }
}
