//! Decoding any supported image file into 8-bit RGB.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a known image format")]
    UnknownFormat,
    #[error(
        "image too large: {w}x{h} = {pixels} pixels > max_pixels {max} (decompression-bomb guard)"
    )]
    TooLarge {
        w: u32,
        h: u32,
        pixels: u64,
        max: u64,
    },
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

/// An RGB8 image.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Decodes `bytes` to RGB8. The header is checked against `max_pixels` before any pixel is
/// decoded. With `exif_orientation`, the EXIF orientation tag is applied (Keras does not).
pub fn decode_rgb(
    bytes: &[u8],
    max_pixels: u64,
    exif_orientation: bool,
) -> Result<Decoded, DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) && !exif_orientation {
        return libjpeg::decode(bytes, max_pixels);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DecodeError::UnknownFormat);
    }
    let mut limits = image::Limits::default();
    // Enough for the largest allowed image in 16-bit RGBA, plus decoder scratch.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    let mut dec = reader
        .into_decoder()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let (w, h) = dec.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge {
            w,
            h,
            pixels,
            max: max_pixels,
        });
    }
    dec.set_limits(limits)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let orientation = if exif_orientation {
        dec.orientation().ok()
    } else {
        None
    };
    let mut img =
        DynamicImage::from_decoder(dec).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = img.into_rgb8();
    Ok(Decoded {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        rgb: rgb.into_raw(),
    })
}

/// JPEG through libjpeg (libjpeg-turbo's code as built by `mozjpeg-sys`), as Pillow decodes
/// (see `src/jpeg.c`). Used unless EXIF orientation is asked for (the `image` crate reads the
/// tag).
mod libjpeg {
    use super::{DecodeError, Decoded};
    // The shim calls the static library that this crate brings in.
    use mozjpeg_sys as _;
    use std::os::raw::{c_char, c_int, c_uchar, c_ulong};

    extern "C" {
        fn tlfx_jpeg_info(
            data: *const c_uchar,
            len: c_ulong,
            w: *mut c_int,
            h: *mut c_int,
            err: *mut c_char,
            err_len: c_int,
        ) -> c_int;
        fn tlfx_jpeg_decode(
            data: *const c_uchar,
            len: c_ulong,
            out: *mut c_uchar,
            out_len: c_ulong,
            err: *mut c_char,
            err_len: c_int,
        ) -> c_int;
    }

    fn message(buf: &[c_char]) -> String {
        let bytes: Vec<u8> = buf
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded, DecodeError> {
        let mut err = [0 as c_char; 200];
        let (mut w, mut h) = (0 as c_int, 0 as c_int);
        // SAFETY: the shim reads `len` bytes from `data` (a live slice), writes two ints and at
        // most `err_len` bytes into `err`; libjpeg errors unwind by longjmp inside C only.
        let rc = unsafe {
            tlfx_jpeg_info(
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                &mut w,
                &mut h,
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if rc != 0 {
            return Err(DecodeError::Corrupt(message(&err)));
        }
        let (w, h) = (w as u32, h as u32);
        let pixels = w as u64 * h as u64;
        if pixels > max_pixels {
            return Err(DecodeError::TooLarge {
                w,
                h,
                pixels,
                max: max_pixels,
            });
        }
        if pixels == 0 {
            return Err(DecodeError::Corrupt("image has no pixels".into()));
        }
        let mut out = vec![0u8; pixels as usize * 3];
        // SAFETY: as above; `out` is exactly w*h*3 bytes, which the shim checks against the
        // decoder's output size before writing any row.
        let rc = unsafe {
            tlfx_jpeg_decode(
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                out.as_mut_ptr(),
                out.len() as c_ulong,
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if rc != 0 {
            return Err(DecodeError::Corrupt(message(&err)));
        }
        Ok(Decoded {
            width: w as usize,
            height: h as usize,
            rgb: out,
        })
    }
}
