//! EfficientNet-Lite0 feature extraction: the network ([`Lite0`]) on the CPU and the
//! `lite0-extract` stage, which writes the same features contract as `vgg-extract` (per-view
//! maps of the last layer, `head`, 7x7x1280 at 224 pixels, and per-image summaries of tapped
//! layers), so every stage that reads features reads either.

mod net;
mod stage;

pub use net::{layer_names, same_padding, Lite0, FEATURE_LAYER};
pub use stage::{Lite0Extract, Params, CACHE_VERSION, LAYOUT};
