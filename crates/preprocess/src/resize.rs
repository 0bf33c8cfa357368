//! Resizing RGB8 images.

use fast_image_resize as fr;
use serde::{Deserialize, Serialize};

/// Nearest-neighbour resize with Pillow's exact source coordinates.
///
/// Pillow's `resize(size, NEAREST)` runs an affine "scale" transform: the source coordinate of
/// destination column `x` is `floor(xo)`, where `xo` starts at `scale / 2` and grows by
/// `scale = src_w / dst_w` per column, accumulated in double precision (and likewise for rows).
/// Reproducing the accumulation, rather than computing `(x + 0.5) * scale` directly, matters:
/// the two differ in the last bit for some sizes, which moves whole pixel columns.
pub fn resize_nearest_pillow(rgb: &[u8], w: usize, h: usize, dw: usize, dh: usize) -> Vec<u8> {
    assert_eq!(rgb.len(), w * h * 3, "buffer does not match {w}x{h} RGB");
    let xs = pillow_coords(w, dw);
    let ys = pillow_coords(h, dh);
    let mut out = vec![0u8; dw * dh * 3];
    for (y, &sy) in ys.iter().enumerate() {
        let src_row = &rgb[sy * w * 3..(sy + 1) * w * 3];
        let dst_row = &mut out[y * dw * 3..(y + 1) * dw * 3];
        for (x, &sx) in xs.iter().enumerate() {
            dst_row[x * 3..x * 3 + 3].copy_from_slice(&src_row[sx * 3..sx * 3 + 3]);
        }
    }
    out
}

fn pillow_coords(src: usize, dst: usize) -> Vec<usize> {
    let scale = src as f64 / dst as f64;
    let mut o = scale * 0.5;
    let mut v = Vec::with_capacity(dst);
    for _ in 0..dst {
        // COORD(v) in Pillow: truncation toward zero for non-negative values.
        v.push((o as usize).min(src - 1));
        o += scale;
    }
    v
}

/// How an image's aspect ratio is handled by the antialiased resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Stretch to the target size (what Keras does).
    Squash,
    /// Crop the largest centred region of the target's aspect ratio, then resize.
    CenterCrop,
}

/// `fr::Resizer::resize` for RGB8 only: the same computation (`resize` dispatches to
/// `resize_typed` by pixel type), but compiling one pixel type's kernels instead of thirteen
/// (it was 35 s of this crate's 42 s build on 2 cores).
fn resize_rgb8(
    src: &fr::images::ImageRef<'_>,
    dst: &mut fr::images::Image<'_>,
    opts: &fr::ResizeOptions,
) -> Result<(), String> {
    use fr::{IntoImageView as _, IntoImageViewMut as _};
    let not_rgb8 = || "the image is not RGB8".to_string();
    let src = src.image_view::<fr::pixels::U8x3>().ok_or_else(not_rgb8)?;
    let mut dst = dst
        .image_view_mut::<fr::pixels::U8x3>()
        .ok_or_else(not_rgb8)?;
    fr::Resizer::new()
        .resize_typed(&src, &mut dst, opts)
        .map_err(|e| e.to_string())
}

/// High-quality (Lanczos3) resize to `dw x dh`.
pub fn resize_antialias(
    rgb: &[u8],
    w: usize,
    h: usize,
    dw: usize,
    dh: usize,
    fit: Fit,
) -> Result<Vec<u8>, String> {
    let src = fr::images::ImageRef::new(w as u32, h as u32, rgb, fr::PixelType::U8x3)
        .map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(dw as u32, dh as u32, fr::PixelType::U8x3);
    let mut opts =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    if fit == Fit::CenterCrop {
        opts = opts.fit_into_destination(Some((0.5, 0.5)));
    }
    resize_rgb8(&src, &mut dst, &opts)?;
    Ok(dst.into_vec())
}

/// Lanczos3 resize as if the image's short side were first scaled to `short_side` and the
/// centred `size x size` square then cut out (`short_side = 256, size = 224`: the classic
/// ImageNet evaluation crop); in one resampling, from the centred square of side
/// `min(w, h) * size / short_side` of the original.
pub fn resize_center_crop(
    rgb: &[u8],
    w: usize,
    h: usize,
    size: usize,
    short_side: usize,
) -> Result<Vec<u8>, String> {
    if short_side < size {
        return Err(format!(
            "short_side {short_side} is smaller than the crop size {size}"
        ));
    }
    let src = fr::images::ImageRef::new(w as u32, h as u32, rgb, fr::PixelType::U8x3)
        .map_err(|e| e.to_string())?;
    let mut dst = fr::images::Image::new(size as u32, size as u32, fr::PixelType::U8x3);
    let side = w.min(h) as f64 * size as f64 / short_side as f64;
    let opts = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop((w as f64 - side) / 2.0, (h as f64 - side) / 2.0, side, side);
    resize_rgb8(&src, &mut dst, &opts)?;
    Ok(dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_crop_at_a_short_side_keeps_the_centre_only() {
        // 80 x 64: a green centre (16..64 x 12..52), red around it.
        let (w, h) = (80, 64);
        let mut px = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let inside = (16..64).contains(&x) && (12..52).contains(&y);
                px.extend_from_slice(if inside { &[0, 220, 0] } else { &[220, 0, 0] });
            }
        }
        // Short side 64 -> 32, centre 16 x 16: the source square 32 x 32 around the centre.
        let out = resize_center_crop(&px, w, h, 16, 32).unwrap();
        assert_eq!(out.len(), 16 * 16 * 3);
        assert!(out.chunks(3).all(|p| p[1] > p[0]), "red came in: {out:?}");
        // The plain centre crop (short side = size) keeps the red border.
        let plain = resize_antialias(&px, w, h, 16, 16, Fit::CenterCrop).unwrap();
        assert!(plain[..3][0] > plain[..3][1], "{:?}", &plain[..3]);
        assert!(resize_center_crop(&px, w, h, 16, 8).is_err());
    }

    #[test]
    fn identity_and_integer_factors() {
        let px: Vec<u8> = (0..4 * 2 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_nearest_pillow(&px, 4, 2, 4, 2), px);
        // Halving picks the second of each pair (centre 1.0 -> index 1).
        let half = resize_nearest_pillow(&px, 4, 2, 2, 1);
        assert_eq!(half, [15, 16, 17, 21, 22, 23]);
    }

    #[test]
    fn antialias_keeps_a_flat_colour_and_crops_to_centre() {
        let px = [[10u8, 200, 30]; 40 * 20].concat();
        let out = resize_antialias(&px, 40, 20, 7, 7, Fit::CenterCrop).unwrap();
        assert!(out.chunks(3).all(|p| p == [10, 200, 30]));
    }
}
