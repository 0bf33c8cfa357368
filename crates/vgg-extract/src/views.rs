//! The views of an image whose features `vgg-extract` computes in one pass: the image, its
//! mirror, square crops (the centre and the four corners) and rescalings of the whole image
//! (a larger input gives pool5 more cells).

use serde::{Deserialize, Serialize};

use contracts::ORIGINAL_VIEW;

/// The smallest side VGG16's five pools leave a cell of.
pub const MIN_SIDE: usize = 32;
/// The largest rescaled side a view may ask for.
pub const MAX_SIDE: usize = 2048;

/// Where a crop view sits in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CropAt {
    Center,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

impl CropAt {
    const ALL: [(CropAt, &'static str); 5] = [
        (CropAt::Center, "center"),
        (CropAt::TopLeft, "tl"),
        (CropAt::TopRight, "tr"),
        (CropAt::BottomLeft, "bl"),
        (CropAt::BottomRight, "br"),
    ];

    fn name(self) -> &'static str {
        CropAt::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("", |c| c.1)
    }
}

/// One view of an image. Names (in params, tensor names and metadata): `original`, `flip`,
/// `crop-center`, `crop-tl`, `crop-tr`, `crop-bl`, `crop-br` (a square of side `crop` times
/// the shorter side, see [`crate::Params::crop`]) and `scale-N` (the whole image resized to
/// N x N pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum View {
    /// The image as preprocessed.
    Original,
    /// Mirrored left-right.
    Flip,
    /// A square crop.
    Crop(CropAt),
    /// The whole image resized to `N x N` (bilinear; antialiased when shrinking).
    Scale(usize),
}

impl View {
    /// The view's name in params, tensor names and metadata.
    pub fn name(self) -> String {
        match self {
            View::Original => ORIGINAL_VIEW.to_string(),
            View::Flip => "flip".to_string(),
            View::Crop(at) => format!("crop-{}", at.name()),
            View::Scale(s) => format!("scale-{s}"),
        }
    }

    /// The view's pixels of `n` RGB images of `h x w` (`[n, h, w, 3]`) and their size, or
    /// `None` for the original (the input itself). `crop` is the crop side over the shorter
    /// side.
    pub fn pixels(
        self,
        rgb: &[u8],
        (n, h, w): (usize, usize, usize),
        crop: f64,
    ) -> crate::Result<Option<(Vec<u8>, usize, usize)>> {
        Ok(match self {
            View::Original => None,
            View::Flip => Some((flip_rgb(rgb, n, h, w), h, w)),
            View::Crop(at) => {
                let side = crop_side(h, w, crop)?;
                let (top, left) = match at {
                    CropAt::Center => ((h - side) / 2, (w - side) / 2),
                    CropAt::TopLeft => (0, 0),
                    CropAt::TopRight => (0, w - side),
                    CropAt::BottomLeft => (h - side, 0),
                    CropAt::BottomRight => (h - side, w - side),
                };
                Some((crop_rgb(rgb, (n, h, w), (top, left), side), side, side))
            }
            View::Scale(s) => Some((resize_rgb(rgb, (n, h, w), (s, s)), s, s)),
        })
    }
}

impl From<View> for String {
    fn from(v: View) -> String {
        v.name()
    }
}

impl TryFrom<String> for View {
    type Error = String;
    fn try_from(s: String) -> Result<View, String> {
        let known = "original, flip, crop-center, crop-tl, crop-tr, crop-bl, crop-br, scale-N (N pixels, 32 to 2048)";
        if s == ORIGINAL_VIEW {
            return Ok(View::Original);
        }
        if s == "flip" {
            return Ok(View::Flip);
        }
        if let Some(at) = s.strip_prefix("crop-") {
            if let Some((c, _)) = CropAt::ALL.iter().find(|(_, n)| *n == at) {
                return Ok(View::Crop(*c));
            }
        }
        if let Some(n) = s.strip_prefix("scale-") {
            return match n.parse::<usize>() {
                Ok(v) if (MIN_SIDE..=MAX_SIDE).contains(&v) => Ok(View::Scale(v)),
                _ => Err(format!(
                    "view \"{s}\": the side must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}"
                )),
            };
        }
        Err(format!("unknown view \"{s}\"; the views are {known}"))
    }
}

/// The side of a crop view of an `h x w` image: `crop` times the shorter side, rounded.
pub fn crop_side(h: usize, w: usize, crop: f64) -> crate::Result<usize> {
    let side = (crop * h.min(w) as f64).round() as usize;
    if side < MIN_SIDE {
        return Err(crate::Error::InvalidInput(format!(
            "a crop of {crop} of a {h}x{w} image is {side} pixels, below VGG16's {MIN_SIDE}"
        )));
    }
    Ok(side.min(h.min(w)))
}

/// Mirrors `n` RGB images of `h x w` (`[n, h, w, 3]`) left-right.
pub fn flip_rgb(rgb: &[u8], n: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len());
    for row in rgb.chunks_exact(w * 3).take(n * h) {
        for px in row.chunks_exact(3).rev() {
            out.extend_from_slice(px);
        }
    }
    out
}

/// The `side x side` squares at (`top`, `left`) of `n` RGB images of `h x w`.
pub fn crop_rgb(
    rgb: &[u8],
    (n, h, w): (usize, usize, usize),
    (top, left): (usize, usize),
    side: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * side * side * 3);
    for img in rgb.chunks_exact(h * w * 3).take(n) {
        for y in top..top + side {
            let row = &img[(y * w + left) * 3..(y * w + left + side) * 3];
            out.extend_from_slice(row);
        }
    }
    out
}

/// Per output position: the first input position and the weights of the inputs from there.
fn triangle_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    // Shrinking widens the filter to the input pixels one output pixel covers (antialias).
    let support = scale.max(1.0);
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(input);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 + 0.5 - center) / support).abs()).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            (lo, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// `n` RGB images of `h x w` resized to `oh x ow` with a separable triangle (bilinear) filter,
/// widened when shrinking so that every input pixel counts (antialiased, as Pillow's
/// `BILINEAR`); values rounded to the nearest integer.
pub fn resize_rgb(
    rgb: &[u8],
    (n, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<u8> {
    let (wx, wy) = (triangle_weights(w, ow), triangle_weights(h, oh));
    let mut out = Vec::with_capacity(n * oh * ow * 3);
    let mut rows = vec![0f32; h * ow * 3];
    for img in rgb.chunks_exact(h * w * 3).take(n) {
        for y in 0..h {
            let src = &img[y * w * 3..(y + 1) * w * 3];
            for (x, (lo, ws)) in wx.iter().enumerate() {
                let mut acc = [0f32; 3];
                for (k, &wt) in ws.iter().enumerate() {
                    let p = &src[(lo + k) * 3..(lo + k) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += wt * p[c] as f32;
                    }
                }
                rows[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(&acc);
            }
        }
        for (lo, ws) in &wy {
            for x in 0..ow * 3 {
                let v: f32 = ws
                    .iter()
                    .enumerate()
                    .map(|(k, &wt)| wt * rows[(lo + k) * ow * 3 + x])
                    .sum();
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for v in [
            View::Original,
            View::Flip,
            View::Crop(CropAt::Center),
            View::Crop(CropAt::TopLeft),
            View::Crop(CropAt::TopRight),
            View::Crop(CropAt::BottomLeft),
            View::Crop(CropAt::BottomRight),
            View::Scale(320),
        ] {
            assert_eq!(View::try_from(v.name()).unwrap(), v);
        }
        for bad in ["mirror", "crop-middle", "scale-16", "scale-x", "scale-4096"] {
            let e = View::try_from(bad.to_string()).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn crops_take_the_named_square() {
        // One 64 x 96 image whose pixel (y, x) is (y, x, 7); crops of half the shorter side.
        let (h, w) = (64, 96);
        let img: Vec<u8> = (0..h * w)
            .flat_map(|i| [(i / w) as u8, (i % w) as u8, 7])
            .collect();
        let at = |v: View| {
            let (px, ch, cw) = v.pixels(&img, (1, h, w), 0.5).unwrap().unwrap();
            assert_eq!((ch, cw), (32, 32));
            assert_eq!(px.len(), 32 * 32 * 3);
            (px[0], px[1])
        };
        assert_eq!(at(View::Crop(CropAt::TopLeft)), (0, 0));
        assert_eq!(at(View::Crop(CropAt::TopRight)), (0, 64));
        assert_eq!(at(View::Crop(CropAt::BottomLeft)), (32, 0));
        assert_eq!(at(View::Crop(CropAt::BottomRight)), (32, 64));
        assert_eq!(at(View::Crop(CropAt::Center)), (16, 32));
        // The square's pixels row by row: rows 2..4, columns 4..6 of a 4 x 6 image.
        let small: Vec<u8> = (0..24)
            .flat_map(|i| [(i / 6) as u8, (i % 6) as u8, 7])
            .collect();
        assert_eq!(
            crop_rgb(&small, (1, 4, 6), (2, 4), 2),
            [2, 4, 7, 2, 5, 7, 3, 4, 7, 3, 5, 7]
        );
        let e = crop_side(40, 40, 0.5).unwrap_err().to_string();
        assert!(e.contains("20 pixels"), "{e}");
        assert!(View::Original
            .pixels(&img, (1, h, w), 0.5)
            .unwrap()
            .is_none());
    }

    #[test]
    fn resizing_keeps_constants_and_ramps_and_averages_when_shrinking() {
        // A constant image stays constant at any size.
        let c = vec![93u8; 2 * 5 * 7 * 3];
        assert!(resize_rgb(&c, (2, 5, 7), (11, 3)).iter().all(|&v| v == 93));
        // The same size is the identity.
        let img: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_rgb(&img, (1, 5, 7), (5, 7)), img);
        // Doubling a horizontal ramp 0, 40, 80, 120: output pixel x samples input position
        // (x + 0.5) / 2 - 0.5, linearly between its neighbours; the edges clamp.
        let ramp: Vec<u8> = (0..4).flat_map(|x| [(x * 40) as u8; 3]).collect();
        let up = resize_rgb(&ramp, (1, 1, 4), (1, 8));
        let r: Vec<u8> = up.chunks(3).map(|p| p[0]).collect();
        assert_eq!(r, [0, 10, 30, 50, 70, 90, 110, 120]);
        // Halving widens the triangle to two input pixels: output 0 (centre 1.0) weighs inputs
        // 0, 1, 2 by 0.75, 0.75, 0.25; output 1 (centre 3.0) inputs 1, 2, 3 by 0.25, 0.75, 0.75.
        let down = resize_rgb(&ramp, (1, 1, 4), (1, 2));
        let d: Vec<u8> = down.chunks(3).map(|p| p[0]).collect();
        let want0 = (0.75 * 0.0 + 0.75 * 40.0 + 0.25 * 80.0) / 1.75f64;
        let want1 = (0.25 * 40.0 + 0.75 * 80.0 + 0.75 * 120.0) / 1.75f64;
        assert_eq!(d, [want0.round() as u8, want1.round() as u8]);
    }
}
