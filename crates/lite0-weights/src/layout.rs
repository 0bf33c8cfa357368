//! EfficientNet-Lite0's layers (`efficientnet_lite_builder.py`: width and depth 1.0, 224
//! pixels, ReLU6, no squeeze-excite, stem and head not scaled).

/// One MBConv block: an optional 1x1 expansion, a depthwise `k x k` convolution of stride
/// `stride`, a 1x1 projection, and a skip connection when the shape is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub c_in: usize,
    pub expand: usize,
    pub kernel: usize,
    pub stride: usize,
    pub c_out: usize,
}

impl Block {
    /// Channels after the expansion (`c_in` when there is none).
    pub fn c_mid(&self) -> usize {
        self.c_in * self.expand
    }
    /// Whether the block adds its input to its output.
    pub fn skip(&self) -> bool {
        self.stride == 1 && self.c_in == self.c_out
    }
}

/// The stages: (repeats, kernel, stride, expansion, input channels, output channels).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Stem output channels (a 3x3 stride-2 convolution of the RGB input).
pub const STEM_CHANNELS: usize = 32;
/// The head's 1x1 convolution's output channels.
pub const HEAD_CHANNELS: usize = 1280;
/// ImageNet classes of the classifier.
pub const CLASSES: usize = 1000;
/// Batch norm's epsilon in the reference (`batch_norm_epsilon=1e-3`).
pub const BN_EPS: f32 = 1e-3;

/// The 16 blocks in order.
pub fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for (repeats, kernel, stride, expand, c_in, c_out) in STAGES {
        for r in 0..repeats {
            out.push(Block {
                c_in: if r == 0 { c_in } else { c_out },
                expand,
                kernel,
                stride: if r == 0 { stride } else { 1 },
                c_out,
            });
        }
    }
    out
}

/// The folded weights file's tensors and shapes: `stem.{weight,bias}` (`[32, 3, 3, 3]`,
/// PyTorch's `[out, in, kh, kw]`), per block `blocks.{i}.expand.*` (`[mid, in]`, absent when
/// the expansion is 1), `blocks.{i}.depthwise.*` (`[mid, k, k]`), `blocks.{i}.project.*`
/// (`[out, mid]`), `head.*` (`[1280, 320]`) and the classifier `fc.*` (`[1000, 1280]`).
pub fn expected_tensors() -> Vec<(String, Vec<usize>)> {
    let mut out = vec![
        ("stem.weight".to_string(), vec![STEM_CHANNELS, 3, 3, 3]),
        ("stem.bias".to_string(), vec![STEM_CHANNELS]),
    ];
    for (i, b) in blocks().iter().enumerate() {
        if b.expand != 1 {
            out.push((format!("blocks.{i}.expand.weight"), vec![b.c_mid(), b.c_in]));
            out.push((format!("blocks.{i}.expand.bias"), vec![b.c_mid()]));
        }
        out.push((
            format!("blocks.{i}.depthwise.weight"),
            vec![b.c_mid(), b.kernel, b.kernel],
        ));
        out.push((format!("blocks.{i}.depthwise.bias"), vec![b.c_mid()]));
        out.push((
            format!("blocks.{i}.project.weight"),
            vec![b.c_out, b.c_mid()],
        ));
        out.push((format!("blocks.{i}.project.bias"), vec![b.c_out]));
    }
    let last = blocks().last().map_or(0, |b| b.c_out);
    out.push(("head.weight".to_string(), vec![HEAD_CHANNELS, last]));
    out.push(("head.bias".to_string(), vec![HEAD_CHANNELS]));
    out.push(("fc.weight".to_string(), vec![CLASSES, HEAD_CHANNELS]));
    out.push(("fc.bias".to_string(), vec![CLASSES]));
    out
}

/// The reference checkpoint's convolutions and their batch norms, as
/// (checkpoint conv name, checkpoint bn prefix, folded name, folded shape).
pub(crate) fn checkpoint_convs() -> Vec<(String, String, String, Vec<usize>)> {
    let mut out = vec![(
        "_conv_stem.weight".to_string(),
        "_bn0".to_string(),
        "stem".to_string(),
        vec![STEM_CHANNELS, 3, 3, 3],
    )];
    for (i, b) in blocks().iter().enumerate() {
        let p = format!("_blocks.{i}");
        if b.expand != 1 {
            out.push((
                format!("{p}._expand_conv.weight"),
                format!("{p}._bn0"),
                format!("blocks.{i}.expand"),
                vec![b.c_mid(), b.c_in, 1, 1],
            ));
        }
        out.push((
            format!("{p}._depthwise_conv.weight"),
            format!("{p}._bn1"),
            format!("blocks.{i}.depthwise"),
            vec![b.c_mid(), 1, b.kernel, b.kernel],
        ));
        out.push((
            format!("{p}._project_conv.weight"),
            format!("{p}._bn2"),
            format!("blocks.{i}.project"),
            vec![b.c_out, b.c_mid(), 1, 1],
        ));
    }
    let last = blocks().last().map_or(0, |b| b.c_out);
    out.push((
        "_conv_head.weight".to_string(),
        "_bn1".to_string(),
        "head".to_string(),
        vec![HEAD_CHANNELS, last, 1, 1],
    ));
    out
}
