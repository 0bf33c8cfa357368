//! Stage `preprocess`: every image of the manifest becomes a u8 `224x224x3` RGB tensor.
//!
//! - Decoding uses the `image` crate (JPEG incl. CMYK and progressive, PNG incl. 16-bit and
//!   alpha, WebP, greyscale, ...) and always yields 8-bit RGB, as Pillow's `convert("RGB")`
//!   does (alpha is dropped, not composited).
//! - `resize = "keras"` reproduces Keras' `load_img(path, target_size=(224, 224))`: a direct
//!   nearest-neighbour resize, aspect not kept, equal to Pillow's `resize(size, NEAREST)` pixel
//!   for pixel ([`resize_nearest_pillow`] mirrors Pillow's own coordinate arithmetic).
//!   `resize = "antialias"` uses a Lanczos3 filter (`fast_image_resize`) with
//!   `fit = "squash" | "center-crop"`.
//! - The VGG-specific transform (BGR, mean subtraction) is not done here: it belongs to the
//!   consumer and is recorded there.
//! - Streaming: images are processed in chunks of `chunk_size` (in parallel within a chunk)
//!   and each chunk is written before the next is decoded, so memory stays flat whatever the
//!   dataset size. Files that cannot be decoded are skipped with their reason (or stop the
//!   stage with `on_bad_file = "error"`); a decompression-bomb guard (`max_pixels`) checks the
//!   header before decoding.

mod decode;
mod resize;
mod stage;

pub use decode::{decode_rgb, DecodeError, Decoded};
pub use resize::{resize_antialias, resize_center_crop, resize_nearest_pillow, Fit};
pub use stage::{preprocess_one, Params, Preprocess, ResizeMode, CACHE_VERSION};
