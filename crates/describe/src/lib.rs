//! Descriptors of images from stored VGG16 features, without rerunning the network.
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
//! - `{layer}.avg`, `{layer}.max` for a layer `vgg-extract` tapped (`conv5_3.avg`, ...).
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
    /// A tapped layer's stored summary: the tensor `{layer}.{avg|max}`.
    Tap { tensor: String },
}

impl Part {
    /// Parses `pool5`, `pool5.avg`, `pool5.max`, `{layer}.avg`, `{layer}.max`.
    pub fn parse(s: &str) -> Result<Part, String> {
        match s {
            "pool5" => return Ok(Part::Pool5),
            "pool5.avg" => return Ok(Part::Pool5Stat { max: false }),
            "pool5.max" => return Ok(Part::Pool5Stat { max: true }),
            _ => {}
        }
        match s.rsplit_once('.') {
            Some((layer, "avg" | "max")) if !layer.is_empty() => Ok(Part::Tap {
                tensor: s.to_string(),
            }),
            _ => Err(format!(
                "descriptor part \"{s}\" is not one of pool5, pool5.avg, pool5.max, LAYER.avg, LAYER.max (LAYER a layer vgg-extract taps, e.g. conv5_3)"
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
            return Err("the views' descriptors differ in length".into());
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
    let mut columns: Vec<(Vec<f32>, usize)> = Vec::with_capacity(parts.len());
    for part in parts {
        let values = match part {
            Part::Pool5 => (v.pool5.to_vec(), map),
            Part::Pool5Stat { max } => (pool(v.pool5, n, c, *max), c),
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
            taps: BTreeMap::new(),
        };
        let e = descriptors(&p.parsed_parts().unwrap(), &p, 1, &[v], true).unwrap_err();
        assert!(e.contains("tap layer `conv5_3`"), "{e}");
    }
}
