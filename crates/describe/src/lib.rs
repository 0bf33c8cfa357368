//! Descriptors of images from stored features (VGG16's or EfficientNet-Lite0's), without
//! rerunning the network.
//!
//! The study classifies flattened pool5 maps (head-nn: their global average). The literature
//! on off-the-shelf CNN features (Razavian et al. 2014; Chatfield et al. 2014) finds that
//! orderless pooling of the last convolutional layers, concatenations across layers, a signed
//! square root and L2 normalisation, and averaging the features of several views of an image
//! classify better. This crate computes such descriptors from what `vgg-extract` stored:
//! pool5 maps of each view and, for the layers it tapped, their per-image global average and
//! maximum. Trying a descriptor therefore costs seconds, not a feature extraction.
//!
//! A descriptor is a list of **parts**, each a vector per image:
//! - `pool5`: the flattened pool5 map (the study's logistic-regression input);
//! - `pool5.avg`, `pool5.max`: global average / maximum of the pool5 map;
//! - `pool5.avgKxK`, `pool5.maxKxK` (K 2..=8): average / maximum over each cell of a K x K
//!   grid of the pool5 map (a spatial pyramid level, He et al. 2014), cells in row-major order,
//!   `K*K*c` values; cell `i` of an axis of length `a` spans `floor(i*a/K)..ceil((i+1)*a/K)`;
//! - `pool5.rmac`: regional maximum activations (Tolias et al. 2016): maxima over square
//!   regions at 3 scales, each L2-normalised, summed (`c` values);
//! - `{layer}.avg`, `{layer}.max` for a layer `vgg-extract` tapped (`conv5_3.avg`, ...).
//!
//! On EfficientNet-Lite0's features (`lite0-extract`) the stored maps are the head's, and the
//! same parts are named `head`, `head.avg`, `head.max2x2`, ...; its taps are `stem`, `block0`
//! .. `block15`.
//!
//! Each part, in order: signed square root (`sqrt`), then scaled to unit L2 norm (`l2`); the
//! parts are concatenated, and with `l2` the concatenation is scaled to unit norm. The
//! descriptors of an image's views are then averaged (validation and evaluation always; the
//! training split too with `train_views = "average"`, else each view is a training row);
//! with `l2`, an average of several views is scaled to unit norm again.

mod stage;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use stage::{Describe, CACHE_VERSION};

/// How the training split uses several views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainViews {
    /// Each view is a training row (augmentation).
    Augment,
    /// The views' descriptors are averaged, as for validation and evaluation.
    Average,
}

/// The stage's parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The parts, concatenated in this order (see the crate documentation).
    pub parts: Vec<String>,
    /// Signed square root of every value, part by part (before `l2`).
    pub sqrt: bool,
    /// Each part, then the concatenation, scaled to unit L2 norm.
    pub l2: bool,
    /// Several views on the training split: `augment` (a row each) or `average`.
    pub train_views: TrainViews,
    /// The stored views to use (`[]`: all that `vgg-extract` stored).
    pub views: Vec<String>,
}

impl Params {
    /// The params a cached run of this stage used (from its run record).
    pub fn from_record(rec: &pipeline::RunRecord) -> contracts::Result<Params> {
        contracts::predictor::record_params(rec, contracts::ids::DESCRIBE)
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            parts: vec!["pool5.avg".into()],
            sqrt: false,
            l2: false,
            train_views: TrainViews::Augment,
            views: Vec::new(),
        }
    }
}

/// One part of a descriptor, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// The flattened pool5 map.
    Pool5,
    /// Global average (`max: false`) or maximum of the pool5 map.
    Pool5Stat { max: bool },
    /// Average or maximum over each cell of a `k x k` grid of the pool5 map.
    Pool5Grid { k: usize, max: bool },
    /// Regional maximum activations of the pool5 map, summed over regions.
    Pool5Rmac,
    /// A tapped layer's stored summary: the tensor `{layer}.{avg|max}`.
    Tap { tensor: String },
}

impl Part {
    /// The stored maps' layer a part names (`pool5` for VGG16, `head` for EfficientNet-Lite0),
    /// if it names them; the parts of the two are the same.
    pub fn map_layer(s: &str) -> Option<&'static str> {
        contracts::Backbone::ALL
            .map(|b| b.feature_layer())
            .into_iter()
            .find(|m| s == *m || s.strip_prefix(m).is_some_and(|r| r.starts_with('.')))
    }

    /// Parses `pool5`, `pool5.avg`, `pool5.max`, `{layer}.avg`, `{layer}.max` (and the same
    /// with `head`, the name of EfficientNet-Lite0's stored maps, for `pool5`).
    pub fn parse(s: &str) -> Result<Part, String> {
        // Every backbone's maps take the same parts, parsed under VGG16's name.
        if let Some(m) = Part::map_layer(s).filter(|m| *m != "pool5") {
            let rest = &s[m.len()..];
            return Part::parse(&format!("pool5{rest}")).map_err(|e| e.replace("pool5", m));
        }
        match s {
            "pool5" => return Ok(Part::Pool5),
            "pool5.avg" => return Ok(Part::Pool5Stat { max: false }),
            "pool5.max" => return Ok(Part::Pool5Stat { max: true }),
            "pool5.rmac" => return Ok(Part::Pool5Rmac),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("pool5.") {
            let (max, grid) = if let Some(g) = rest.strip_prefix("max") {
                (true, g)
            } else if let Some(g) = rest.strip_prefix("avg") {
                (false, g)
            } else {
                (false, "")
            };
            if let Some((a, b)) = grid.split_once('x') {
                return match (a.parse::<usize>(), b.parse::<usize>()) {
                    (Ok(k), Ok(k2)) if k == k2 && (2..=8).contains(&k) => Ok(Part::Pool5Grid { k, max }),
                    _ => Err(format!(
                        "descriptor part \"{s}\": a pool5 grid is pool5.avgKxK or pool5.maxKxK with K from 2 to 8 (e.g. pool5.max2x2)"
                    )),
                };
            }
        }
        match s.rsplit_once('.') {
            Some((layer, "avg" | "max")) if !layer.is_empty() => Ok(Part::Tap {
                tensor: s.to_string(),
            }),
            _ => Err(format!(
                "descriptor part \"{s}\" is not one of pool5, pool5.avg, pool5.max, pool5.avgKxK, pool5.maxKxK, pool5.rmac, LAYER.avg, LAYER.max (LAYER a layer vgg-extract taps, e.g. conv5_3)"
            )),
        }
    }

    /// The tapped layer a part needs, if any.
    pub fn layer(&self) -> Option<&str> {
        match self {
            Part::Tap { tensor } => tensor.rsplit_once('.').map(|(l, _)| l),
            _ => None,
        }
    }
}

impl Params {
    /// Checks the parts.
    pub fn validate(&self) -> Result<(), String> {
        if self.parts.is_empty() {
            return Err("parts is empty: a descriptor needs at least one part".into());
        }
        for (i, p) in self.parts.iter().enumerate() {
            Part::parse(p)?;
            if self.parts[..i].contains(p) {
                return Err(format!("descriptor part \"{p}\" is listed twice"));
            }
        }
        for (i, v) in self.views.iter().enumerate() {
            if self.views[..i].contains(v) {
                return Err(format!("view \"{v}\" is listed twice"));
            }
        }
        Ok(())
    }

    /// The parsed parts.
    pub fn parsed_parts(&self) -> Result<Vec<Part>, String> {
        self.parts.iter().map(|p| Part::parse(p)).collect()
    }

    /// A one-line recipe, stored as the descriptors' layout.
    pub fn recipe(&self) -> String {
        let mut s = format!("descriptor [{}]", self.parts.join(" + "));
        if self.sqrt {
            s.push_str(", signed sqrt");
        }
        if self.l2 {
            s.push_str(", L2");
        }
        s
    }
}

/// What is stored for one view of `n` images.
#[derive(Clone, Debug)]
pub struct ViewData<'a> {
    /// `[n, h, w, c]` pool5 maps, flattened.
    pub pool5: &'a [f32],
    /// `c` of the pool5 maps.
    pub pool5_channels: usize,
    /// `(h, w)` of the pool5 maps.
    pub pool5_hw: (usize, usize),
    /// Tapped summaries by tensor base name (`conv5_3.avg` -> `[n, c]`).
    pub taps: BTreeMap<String, &'a [f32]>,
}

/// Descriptors of `n` images from their views: with `average`, `n` rows (the mean over the
/// views), else `n * views` rows, image by image, view by view. Returns the rows and their
/// length.
pub fn descriptors(
    parts: &[Part],
    p: &Params,
    n: usize,
    views: &[ViewData<'_>],
    average: bool,
) -> Result<(Vec<f32>, usize), String> {
    if views.is_empty() {
        return Err("no views to describe".into());
    }
    if n == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut dim = None;
    let mut per_view = Vec::with_capacity(views.len());
    for v in views {
        let (rows, d) = describe_view(parts, p, n, v)?;
        if dim.is_some_and(|x| x != d) {
            let mut e = String::from("the views' descriptors differ in length");
            if parts.contains(&Part::Pool5) {
                e.push_str(
                    ": the views' pool5 maps differ in size, so the flattened `pool5` part does; use a pooled part (pool5.avg, pool5.max, pool5.max2x2, pool5.rmac) with views of several sizes",
                );
            }
            return Err(e);
        }
        dim = Some(d);
        per_view.push(rows);
    }
    let d = dim.unwrap_or(0);
    let mut out = Vec::with_capacity(if average { n * d } else { n * d * views.len() });
    for i in 0..n {
        fn row(v: &[f32], i: usize, d: usize) -> &[f32] {
            &v[i * d..(i + 1) * d]
        }
        if average {
            let k = views.len() as f64;
            let start = out.len();
            for j in 0..d {
                let s: f64 = per_view.iter().map(|v| row(v, i, d)[j] as f64).sum();
                out.push((s / k) as f32);
            }
            // The mean of unit vectors is shorter: back to unit norm, as the training rows.
            if p.l2 && views.len() > 1 {
                l2_normalize(&mut out[start..]);
            }
        } else {
            for v in &per_view {
                out.extend_from_slice(row(v, i, d));
            }
        }
    }
    Ok((out, d))
}

/// The descriptors of one view: `n` rows and their length.
fn describe_view(
    parts: &[Part],
    p: &Params,
    n: usize,
    v: &ViewData<'_>,
) -> Result<(Vec<f32>, usize), String> {
    let c = v.pool5_channels;
    if c == 0 || v.pool5.is_empty() || !v.pool5.len().is_multiple_of(n * c) {
        return Err(format!(
            "{} pool5 values are not {n} maps of {c} channels",
            v.pool5.len()
        ));
    }
    let map = v.pool5.len() / n;
    let (h, w) = v.pool5_hw;
    if h * w * c != map {
        return Err(format!(
            "pool5 maps of {map} values are not {h}x{w}x{c} (the stored shape)"
        ));
    }
    let mut columns: Vec<(Vec<f32>, usize)> = Vec::with_capacity(parts.len());
    for part in parts {
        let values = match part {
            Part::Pool5 => (v.pool5.to_vec(), map),
            Part::Pool5Stat { max } => (pool(v.pool5, n, c, *max), c),
            Part::Pool5Grid { k, max } => (grid_pool(v.pool5, n, h, w, c, *k, *max), k * k * c),
            Part::Pool5Rmac => (rmac(v.pool5, n, h, w, c), c),
            Part::Tap { tensor } => {
                let t = v.taps.get(tensor).ok_or_else(|| {
                    format!(
                        "descriptor part \"{tensor}\" needs vgg-extract to tap layer `{}` (add it to vgg-extract's `taps`); it tapped: {}",
                        part.layer().unwrap_or(""),
                        v.taps.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?;
                if t.is_empty() || !t.len().is_multiple_of(n) {
                    return Err(format!("{tensor}: {} values for {n} images", t.len()));
                }
                (t.to_vec(), t.len() / n)
            }
        };
        columns.push(values);
    }
    let d: usize = columns.iter().map(|(_, d)| d).sum();
    let mut out = Vec::with_capacity(n * d);
    let mut row = Vec::with_capacity(d);
    for i in 0..n {
        row.clear();
        for (values, w) in &columns {
            let start = row.len();
            row.extend_from_slice(&values[i * w..(i + 1) * w]);
            let part = &mut row[start..];
            if p.sqrt {
                signed_sqrt(part);
            }
            if p.l2 {
                l2_normalize(part);
            }
        }
        if p.l2 && columns.len() > 1 {
            l2_normalize(&mut row);
        }
        out.extend_from_slice(&row);
    }
    Ok((out, d))
}

/// Global average (accumulated in f64) or maximum over the positions of `n` channels-last
/// maps of `c` channels: `n x c` values.
pub fn pool(x: &[f32], n: usize, c: usize, max: bool) -> Vec<f32> {
    let spatial = x.len() / (n * c);
    let mut out = Vec::with_capacity(n * c);
    for m in x.chunks_exact(spatial * c) {
        if max {
            let mut acc = vec![f32::NEG_INFINITY; c];
            for px in m.chunks_exact(c) {
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a = a.max(v);
                }
            }
            out.extend(acc);
        } else {
            let mut acc = vec![0f64; c];
            for px in m.chunks_exact(c) {
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a += v as f64;
                }
            }
            out.extend(acc.iter().map(|&a| (a / spatial as f64) as f32));
        }
    }
    out
}

/// The start and end of cell `i` of `k` along an axis of length `a`: `floor(i*a/k)` to
/// `ceil((i+1)*a/k)` (adaptive pooling; cells overlap where `k` does not divide `a`, and none
/// is empty).
fn cell(i: usize, k: usize, a: usize) -> (usize, usize) {
    (i * a / k, ((i + 1) * a).div_ceil(k))
}

/// Average or maximum over the `region` (`rows`, `cols` ranges) of a channels-last `w`-wide
/// map of `c` channels, appended to `out`.
fn region_pool(
    m: &[f32],
    w: usize,
    c: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    max: bool,
    out: &mut Vec<f32>,
) {
    if max {
        let mut acc = vec![f32::NEG_INFINITY; c];
        for y in rows.0..rows.1 {
            for x in cols.0..cols.1 {
                let px = &m[(y * w + x) * c..(y * w + x + 1) * c];
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a = a.max(v);
                }
            }
        }
        out.extend(acc);
    } else {
        let mut acc = vec![0f64; c];
        for y in rows.0..rows.1 {
            for x in cols.0..cols.1 {
                let px = &m[(y * w + x) * c..(y * w + x + 1) * c];
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a += v as f64;
                }
            }
        }
        let cells = ((rows.1 - rows.0) * (cols.1 - cols.0)) as f64;
        out.extend(acc.iter().map(|&a| (a / cells) as f32));
    }
}

/// Average or maximum over each cell of a `k x k` grid of `n` channels-last `h x w` maps of
/// `c` channels: `n x (k*k*c)` values, cells in row-major order.
pub fn grid_pool(
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    max: bool,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * k * k * c);
    for m in x.chunks_exact(h * w * c) {
        for i in 0..k {
            for j in 0..k {
                region_pool(m, w, c, cell(i, k, h), cell(j, k, w), max, &mut out);
            }
        }
    }
    out
}

/// The square regions of R-MAC (Tolias, Sicre and Jegou 2016, "Particular object retrieval
/// with integral max-pooling of CNN activations"; 3 scales, about 40% overlap) on an `h x w`
/// map: `(top, left, side)` each.
pub fn rmac_regions(h: usize, w: usize) -> Vec<(usize, usize, usize)> {
    const SCALES: usize = 3;
    const OVERLAP: f64 = 0.4;
    let short = h.min(w) as f64;
    let long = h.max(w) as f64;
    // Extra regions along the long side: the count whose overlap is nearest 40%.
    let mut extra = 0;
    if long > short {
        let mut best = f64::INFINITY;
        for steps in 2..=7usize {
            let b = (long - short) / (steps - 1) as f64;
            let ov = ((short * short - short * b) / (short * short) - OVERLAP).abs();
            if ov < best {
                best = ov;
                extra = steps - 1;
            }
        }
    }
    let (extra_h, extra_w) = if h > w { (extra, 0) } else { (0, extra) };
    let mut out = Vec::new();
    for l in 1..=SCALES {
        let side = ((2.0 * short / (l as f64 + 1.0)).floor() as usize).max(1);
        let starts = |a: usize, extra: usize| -> Vec<usize> {
            let count = l + extra;
            if count <= 1 || a <= side {
                return vec![0];
            }
            let step = (a - side) as f64 / (count - 1) as f64;
            let mut s: Vec<usize> = (0..count)
                .map(|k| (k as f64 * step).floor() as usize)
                .collect();
            s.dedup();
            s
        };
        for &top in &starts(h, extra_h) {
            for &left in &starts(w, extra_w) {
                out.push((top, left, side));
            }
        }
    }
    out
}

/// R-MAC descriptors of `n` channels-last `h x w` maps of `c` channels: per region the
/// maximum of each channel, L2-normalised, summed over the regions (`n x c` values).
pub fn rmac(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let regions = rmac_regions(h, w);
    let mut out = Vec::with_capacity(n * c);
    let mut r = Vec::with_capacity(c);
    for m in x.chunks_exact(h * w * c) {
        let mut acc = vec![0f64; c];
        for &(top, left, side) in &regions {
            r.clear();
            region_pool(
                m,
                w,
                c,
                (top, (top + side).min(h)),
                (left, (left + side).min(w)),
                true,
                &mut r,
            );
            l2_normalize(&mut r);
            for (a, &v) in acc.iter_mut().zip(&r) {
                *a += v as f64;
            }
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// `sign(v) * sqrt(|v|)` in place.
pub fn signed_sqrt(v: &mut [f32]) {
    for x in v {
        *x = x.signum() * x.abs().sqrt();
    }
}

/// Scales `v` to unit L2 norm (accumulated in f64); a zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_matches_a_plain_loop() {
        // Two 2x2 maps of 3 channels.
        let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
        let avg = pool(&x, 2, 3, false);
        let max = pool(&x, 2, 3, true);
        for img in 0..2 {
            for ch in 0..3 {
                let vals: Vec<f32> = (0..4).map(|p| x[img * 12 + p * 3 + ch]).collect();
                let mean = vals.iter().sum::<f32>() / 4.0;
                let m = vals.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert!((avg[img * 3 + ch] - mean).abs() < 1e-6);
                assert_eq!(max[img * 3 + ch], m);
            }
        }
    }

    #[test]
    fn normalisation_gives_unit_parts_and_a_unit_whole() {
        let mut v = vec![3.0, -4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, -0.8]);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
        let mut s = vec![4.0, -9.0, 0.0];
        signed_sqrt(&mut s);
        assert_eq!(s, vec![2.0, -3.0, 0.0]);

        // Two parts: each of norm 1, then the whole of norm 1 (each part 1/sqrt(2)).
        let pool5 = [1.0f32, 2.0, 3.0, 4.0]; // one image, 2x1 map of 2 channels
        let tap = [5.0f32, 0.0, 12.0];
        let v = ViewData {
            pool5: &pool5,
            pool5_channels: 2,
            pool5_hw: (2, 1),
            taps: BTreeMap::from([("conv5_3.avg".to_string(), &tap[..])]),
        };
        let p = Params {
            parts: vec!["pool5.max".into(), "conv5_3.avg".into()],
            l2: true,
            ..Params::default()
        };
        let (rows, d) = descriptors(&p.parsed_parts().unwrap(), &p, 1, &[v], true).unwrap();
        assert_eq!(d, 5);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let want = [0.6 * h, 0.8 * h, 5.0 / 13.0 * h, 0.0, 12.0 / 13.0 * h];
        for (a, b) in rows.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{rows:?}");
        }
        let norm: f32 = rows.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    #[test]
    fn views_are_averaged_or_kept_as_rows() {
        static A: [f32; 4] = [1.0, 2.0, 3.0, 4.0]; // two images, 1x1 maps of 2 channels
        static B: [f32; 4] = [3.0, 6.0, 5.0, 0.0];
        let view = |x: &'static [f32]| ViewData {
            pool5: x,
            pool5_channels: 2,
            pool5_hw: (1, 1),
            taps: BTreeMap::new(),
        };
        let p = Params {
            parts: vec!["pool5".into()],
            ..Params::default()
        };
        let parts = p.parsed_parts().unwrap();
        let (avg, _) = descriptors(&parts, &p, 2, &[view(&A), view(&B)], true).unwrap();
        assert_eq!(avg, vec![2.0, 4.0, 4.0, 2.0]);
        let (rows, d) = descriptors(&parts, &p, 2, &[view(&A), view(&B)], false).unwrap();
        assert_eq!(d, 2);
        assert_eq!(rows, vec![1.0, 2.0, 3.0, 6.0, 3.0, 4.0, 5.0, 0.0]);
    }

    #[test]
    fn an_average_of_normalised_views_has_unit_norm_again() {
        static A: [f32; 2] = [1.0, 0.0];
        static B: [f32; 2] = [0.0, 1.0];
        let view = |x: &'static [f32]| ViewData {
            pool5: x,
            pool5_channels: 2,
            pool5_hw: (1, 1),
            taps: BTreeMap::new(),
        };
        let p = Params {
            parts: vec!["pool5".into()],
            l2: true,
            ..Params::default()
        };
        let parts = p.parsed_parts().unwrap();
        let (avg, _) = descriptors(&parts, &p, 1, &[view(&A), view(&B)], true).unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (avg[0] - h).abs() < 1e-6 && (avg[1] - h).abs() < 1e-6,
            "{avg:?}"
        );
    }

    #[test]
    fn bad_parts_are_named() {
        let e = Part::parse("conv5_3.mean").unwrap_err();
        assert!(e.contains("conv5_3.mean"), "{e}");
        let p = Params {
            parts: vec!["conv5_3.avg".into()],
            ..Params::default()
        };
        let pool5 = [1.0f32; 4];
        let v = ViewData {
            pool5: &pool5,
            pool5_channels: 4,
            pool5_hw: (1, 1),
            taps: BTreeMap::new(),
        };
        let e = descriptors(&p.parsed_parts().unwrap(), &p, 1, &[v], true).unwrap_err();
        assert!(e.contains("tap layer `conv5_3`"), "{e}");
    }

    #[test]
    fn grid_pooling_matches_a_plain_loop_with_overlapping_cells() {
        // Two 3x3 maps of 2 channels; a 2x2 grid on 3 positions: cells 0..2 and 1..3.
        let (n, h, w, c) = (2, 3, 3, 2);
        let x: Vec<f32> = (0..n * h * w * c)
            .map(|i| ((i * 5) % 13) as f32 - 4.0)
            .collect();
        for max in [false, true] {
            let g = grid_pool(&x, n, h, w, c, 2, max);
            assert_eq!(g.len(), n * 4 * c);
            for img in 0..n {
                for (cell, (rows, cols)) in [
                    ((0, 2), (0, 2)),
                    ((0, 2), (1, 3)),
                    ((1, 3), (0, 2)),
                    ((1, 3), (1, 3)),
                ]
                .into_iter()
                .enumerate()
                {
                    for ch in 0..c {
                        let mut vals = Vec::new();
                        for y in rows.0..rows.1 {
                            for xx in cols.0..cols.1 {
                                vals.push(x[((img * h + y) * w + xx) * c + ch]);
                            }
                        }
                        let want = if max {
                            vals.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
                        } else {
                            vals.iter().sum::<f32>() / vals.len() as f32
                        };
                        let got = g[(img * 4 + cell) * c + ch];
                        assert!(
                            (got - want).abs() < 1e-6,
                            "max {max} img {img} cell {cell} ch {ch}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // A 1x1 grid would be the global pooling; a KxK grid of a KxK map is the map itself.
        assert_eq!(grid_pool(&x, n, h, w, c, 3, true), x);
        assert_eq!(grid_pool(&x, n, h, w, c, 3, false), x);
    }

    #[test]
    fn rmac_regions_follow_the_three_scales() {
        // 10x10 (a 320 input): the whole map, 2x2 regions of 6 (step 4), 3x3 of 5 (step 2.5).
        let mut want = vec![(0, 0, 10)];
        for t in [0, 4] {
            for l in [0, 4] {
                want.push((t, l, 6));
            }
        }
        for t in [0, 2, 5] {
            for l in [0, 2, 5] {
                want.push((t, l, 5));
            }
        }
        assert_eq!(rmac_regions(10, 10), want);
        // 7x10: one more region along the long side (overlap nearest 40%).
        let r = rmac_regions(7, 10);
        assert_eq!(&r[..2], &[(0, 0, 7), (0, 3, 7)]);
        assert_eq!(r.len(), 2 + 2 * 3 + 3 * 4);
        assert!(r.iter().all(|&(t, l, s)| t + s <= 7 && l + s <= 10));
        // A 1x1 map: one region at every scale.
        assert_eq!(rmac_regions(1, 1), vec![(0, 0, 1); 3]);
    }

    #[test]
    fn rmac_sums_normalised_regional_maxima() {
        let (h, w, c) = (7, 7, 3);
        let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 7) % 17) as f32).collect();
        let got = rmac(&x, 1, h, w, c);
        let mut want = vec![0f32; c];
        for (t, l, s) in rmac_regions(h, w) {
            let mut m = vec![f32::NEG_INFINITY; c];
            for y in t..t + s {
                for xx in l..l + s {
                    for ch in 0..c {
                        m[ch] = m[ch].max(x[(y * w + xx) * c + ch]);
                    }
                }
            }
            let norm = m.iter().map(|v| v * v).sum::<f32>().sqrt();
            for ch in 0..c {
                want[ch] += m[ch] / norm;
            }
        }
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn pooled_parts_serve_views_of_several_sizes_and_pool5_says_why_not() {
        // One image, a 2x2 view and a 1x1 view of 2 channels.
        static BIG: [f32; 8] = [1.0, 0.0, 2.0, 1.0, 3.0, 5.0, 0.0, 2.0];
        static SMALL: [f32; 2] = [4.0, 4.0];
        let view = |x: &'static [f32], s: usize| ViewData {
            pool5: x,
            pool5_channels: 2,
            pool5_hw: (s, s),
            taps: BTreeMap::new(),
        };
        let views = [view(&BIG, 2), view(&SMALL, 1)];
        for part in ["pool5.max2x2", "pool5.rmac", "pool5.avg"] {
            let p = Params {
                parts: vec![part.into()],
                ..Params::default()
            };
            let (rows, d) = descriptors(&p.parsed_parts().unwrap(), &p, 1, &views, true).unwrap();
            assert_eq!(rows.len(), d, "{part}");
        }
        let p = Params {
            parts: vec!["pool5.max2x2".into()],
            ..Params::default()
        };
        let (rows, _) = descriptors(&p.parsed_parts().unwrap(), &p, 1, &views, true).unwrap();
        // The 2x2 view's cells are its positions; the 1x1 view repeats its one position.
        assert_eq!(rows, vec![2.5, 2.0, 3.0, 2.5, 3.5, 4.5, 2.0, 3.0]);
        let p = Params {
            parts: vec!["pool5".into()],
            ..Params::default()
        };
        let e = descriptors(&p.parsed_parts().unwrap(), &p, 1, &views, true).unwrap_err();
        assert!(
            e.contains("pool5.max2x2") && e.contains("differ in size"),
            "{e}"
        );
    }

    #[test]
    fn grid_and_rmac_parts_parse_and_bad_grids_are_named() {
        assert_eq!(
            Part::parse("pool5.max2x2"),
            Ok(Part::Pool5Grid { k: 2, max: true })
        );
        assert_eq!(
            Part::parse("pool5.avg3x3"),
            Ok(Part::Pool5Grid { k: 3, max: false })
        );
        assert_eq!(Part::parse("pool5.rmac"), Ok(Part::Pool5Rmac));
        for bad in [
            "pool5.max2x3",
            "pool5.max1x1",
            "pool5.avg9x9",
            "pool5.maxaxb",
        ] {
            let e = Part::parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("K from 2 to 8"), "{e}");
        }
    }

    #[test]
    fn lite0_head_parts_parse_as_pool5_parts_under_their_own_name() {
        assert_eq!(Part::parse("head"), Ok(Part::Pool5));
        assert_eq!(Part::parse("head.avg"), Ok(Part::Pool5Stat { max: false }));
        assert_eq!(
            Part::parse("head.avg2x2"),
            Ok(Part::Pool5Grid { k: 2, max: false })
        );
        assert_eq!(Part::map_layer("head.max"), Some("head"));
        assert_eq!(Part::map_layer("pool5"), Some("pool5"));
        // A layer whose name starts like a map's is a tap, not the maps.
        assert_eq!(Part::map_layer("headroom.avg"), None);
        assert_eq!(
            Part::parse("headroom.avg"),
            Ok(Part::Tap {
                tensor: "headroom.avg".into()
            })
        );
        let e = Part::parse("head.avg9x9").unwrap_err();
        assert!(e.contains("head.avg9x9") && !e.contains("pool5"), "{e}");
    }
}
