//! From RGB pixels to the network's input: the two pixel conventions VGG16 weights are
//! published for, and TensorFlow's EfficientNet-Lite one (the `lite0-extract` stage's).

use serde::{Deserialize, Serialize};

/// How `u8` RGB pixels are turned into the network's `f32` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputConvention {
    /// Keras / original Caffe VGG16: BGR channel order, 0..255 scale minus the per-channel
    /// mean (B 103.939, G 116.779, R 123.68), no division by a standard deviation. What the
    /// shared `vgg16_notop.safetensors` weights expect.
    Caffe,
    /// torchvision: RGB order, scaled to 0..1, minus the ImageNet mean (0.485, 0.456, 0.406),
    /// divided by the ImageNet standard deviation (0.229, 0.224, 0.225).
    Torch,
    /// TensorFlow's EfficientNet-Lite (`efficientnet_lite_builder.py`): RGB order, minus 127,
    /// divided by 128 (about -1..1), the same for every channel.
    Lite,
}

/// Caffe mean, in the output (BGR) order.
const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];
const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl InputConvention {
    /// Converts interleaved `u8` RGB pixels (`HWC`, any number of pixels) into interleaved
    /// `f32` network input (`HWC`, channels as the convention orders them), appending to `out`.
    /// `rgb.len()` should be a multiple of 3: a trailing partial pixel is ignored.
    ///
    /// Each value is computed with the same single-precision operations, in the same order, as
    /// NumPy / PyTorch do for these conventions, so the results are bit-identical to theirs.
    pub fn extend_from_rgb(self, rgb: &[u8], out: &mut Vec<f32>) {
        out.reserve(rgb.len() - rgb.len() % 3);
        match self {
            InputConvention::Caffe => {
                for px in rgb.chunks_exact(3) {
                    out.push(f32::from(px[2]) - CAFFE_MEAN_BGR[0]);
                    out.push(f32::from(px[1]) - CAFFE_MEAN_BGR[1]);
                    out.push(f32::from(px[0]) - CAFFE_MEAN_BGR[2]);
                }
            }
            InputConvention::Torch => {
                for px in rgb.chunks_exact(3) {
                    for c in 0..3 {
                        out.push((f32::from(px[c]) / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c]);
                    }
                }
            }
            InputConvention::Lite => {
                out.extend(
                    rgb[..rgb.len() - rgb.len() % 3]
                        .iter()
                        .map(|&v| (f32::from(v) - 127.0) / 128.0),
                );
            }
        }
    }

    /// [`extend_from_rgb`](Self::extend_from_rgb) into a new vector.
    pub fn from_rgb(self, rgb: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        self.extend_from_rgb(rgb, &mut out);
        out
    }
}
