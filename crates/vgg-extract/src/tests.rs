//! Every fast kernel against a plain, obviously-correct reference (direct convolution and
//! pooling loops accumulated in `f64`), on awkward sizes and for every instruction set this
//! CPU supports.

use crate::gemm::{gemm, pack_b, Isa};
use crate::im2col::{maxpool2x2, Im2col};
use crate::net::{ConvStack, ConvWeights, LayerSpec, VGG16};
use crate::winograd::{Plan, Variant, Winograd};
use crate::InputConvention;

/// splitmix64: a small deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[-1, 1)`.
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
    fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.f32() * scale).collect()
    }
}

/// Reference 3x3 pad-1 convolution + bias + ReLU, NHWC, `weight` `[k][c][3][3]`.
fn ref_conv(
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let k_out = bias.len();
    let mut out = vec![0.0f32; n * h * w * k_out];
    for img in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for k in 0..k_out {
                    let mut s = f64::from(bias[k]);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (sy, sx) =
                                (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                continue;
                            }
                            for ci in 0..c {
                                let xv = x[((img * h + sy as usize) * w + sx as usize) * c + ci];
                                let wv = weight[((k * c + ci) * 3 + ky) * 3 + kx];
                                s += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((img * h + y) * w + xx) * k_out + k] = s.max(0.0) as f32;
                }
            }
        }
    }
    out
}

/// Reference 2x2 stride-2 max-pool (floor), NHWC.
fn ref_pool(x: &[f32], n: usize, h: usize, w: usize, c: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![f32::NEG_INFINITY; n * oh * ow * c];
    for img in 0..n {
        for y in 0..2 * oh {
            for xx in 0..2 * ow {
                for ch in 0..c {
                    let o = &mut out[((img * oh + y / 2) * ow + xx / 2) * c + ch];
                    *o = o.max(x[((img * h + y) * w + xx) * c + ch]);
                }
            }
        }
    }
    out
}

/// Reference forward pass of a whole stack.
fn ref_stack(
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    specs: &[LayerSpec],
    ws: &[ConvWeights],
) -> Vec<f32> {
    let (mut a, mut h, mut w, mut c) = (x.to_vec(), h, w, c);
    let mut wi = ws.iter();
    for s in specs {
        match *s {
            LayerSpec::Conv(k) => {
                let cw = wi.next().unwrap();
                a = ref_conv(&a, n, h, w, c, &cw.weight, &cw.bias);
                c = k;
            }
            LayerSpec::MaxPool => {
                a = ref_pool(&a, n, h, w, c);
                (h, w) = (h / 2, w / 2);
            }
        }
    }
    a
}

/// Asserts `max|got - want| <= tol * max|want|` (and equal lengths), printing the worst
/// element.
#[track_caller]
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= tol * scale,
        "{what}: max |diff| {worst:e} at {at} (got {}, want {}) > {tol:e} * max|want| {scale:e}",
        got[at],
        want[at]
    );
}

fn random_weights(rng: &mut Rng, c: usize, k: usize) -> ConvWeights {
    // Roughly He-scaled so activations keep their magnitude through deep stacks.
    let s = (6.0 / (9.0 * c as f32)).sqrt();
    ConvWeights {
        weight: rng.vec(k * c * 9, s),
        bias: rng.vec(k, 0.1),
    }
}

#[test]
fn gemm_matches_naive_on_every_isa() {
    let mut rng = Rng(1);
    for isa in Isa::available() {
        for _ in 0..40 {
            let (m, n, k) = (1 + rng.below(40), 1 + rng.below(70), 1 + rng.below(300));
            let lda = k + rng.below(3);
            let a = rng.vec(m * lda, 1.0);
            let b = rng.vec(k * n, 1.0);
            let packed = pack_b(k, n, isa.nr(), |r, c| b[r * n + c]);
            let ldc = n + rng.below(3);
            let mut c = vec![f32::NAN; m * ldc];
            // SAFETY: buffers sized as `gemm` requires; `isa` comes from `available`.
            unsafe {
                gemm(
                    isa,
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    lda,
                    packed.as_ptr(),
                    c.as_mut_ptr(),
                    ldc,
                )
            };
            let mut want = vec![0.0f32; m * n];
            let mut got = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k)
                        .map(|p| f64::from(a[i * lda + p]) * f64::from(b[p * n + j]))
                        .sum::<f64>() as f32;
                    got[i * n + j] = c[i * ldc + j];
                }
            }
            assert_close(&got, &want, 1e-5, &format!("{isa:?} gemm {m}x{n}x{k}"));
        }
    }
}

#[test]
fn winograd_conv_matches_direct_on_every_isa() {
    let mut rng = Rng(2);
    for (isa, variant) in Isa::available()
        .into_iter()
        .flat_map(|i| [(i, Variant::F2), (i, Variant::F4)])
    {
        for case in 0..30 {
            let n = 1 + rng.below(3);
            let (h, w) = (1 + rng.below(19), 1 + rng.below(19));
            let c = rng.pick(&[1, 4, 5, 7, 8, 16, 17, 33, 64]);
            let k = rng.pick(&[1, 3, 8, 16, 17, 33, 40, 64]);
            let cw = random_weights(&mut rng, c, k);
            let x = rng.vec(n * h * w * c, 1.0);
            let conv = Winograd::new(isa, variant, c, k, &cw.weight, &cw.bias);
            let want = ref_conv(&x, n, h, w, c, &cw.weight, &cw.bias);
            // Default plan and a random one (small depth exercises accumulation across
            // input-channel chunks; small blocks exercise many units).
            let tiles = n * h.div_ceil(4) * w.div_ceil(4);
            let plans = [
                conv.plan(tiles),
                Plan {
                    tiles: isa.mr() * (1 + rng.below(3)),
                    channels: isa.nr() * (1 + rng.below(2)),
                    depth: 1 + rng.below(20),
                },
            ];
            for plan in plans {
                let mut got = vec![f32::NAN; n * h * w * k];
                conv.forward_with(&x, n, h, w, false, &mut got, plan);
                assert_close(
                    &got,
                    &want,
                    1e-5,
                    &format!("{isa:?} {variant:?} case {case} conv n{n} {h}x{w} {c}->{k} {plan:?}"),
                );
                let mut pooled = vec![f32::NAN; n * (h / 2) * (w / 2) * k];
                conv.forward_with(&x, n, h, w, true, &mut pooled, plan);
                let want_pool = ref_pool(&want, n, h, w, k);
                assert_close(
                    &pooled,
                    &want_pool,
                    1e-5,
                    &format!(
                        "{isa:?} {variant:?} case {case} conv+pool n{n} {h}x{w} {c}->{k} {plan:?}"
                    ),
                );
            }
        }
    }
}

#[test]
fn im2col_conv_matches_direct_on_every_isa() {
    let mut rng = Rng(3);
    for isa in Isa::available() {
        for case in 0..20 {
            let n = 1 + rng.below(3);
            let (h, w) = (1 + rng.below(40), 1 + rng.below(40));
            let c = 1 + rng.below(5);
            let k = rng.pick(&[1, 5, 16, 33, 64]);
            let cw = random_weights(&mut rng, c, k);
            let x = rng.vec(n * h * w * c, 1.0);
            let conv = Im2col::new(isa, c, k, &cw.weight, &cw.bias);
            let mut got = vec![f32::NAN; n * h * w * k];
            conv.forward(&x, n, h, w, &mut got);
            let want = ref_conv(&x, n, h, w, c, &cw.weight, &cw.bias);
            assert_close(
                &got,
                &want,
                1e-5,
                &format!("{isa:?} case {case} im2col n{n} {h}x{w} {c}->{k}"),
            );
        }
    }
}

#[test]
fn maxpool_matches_reference() {
    let mut rng = Rng(4);
    for _ in 0..20 {
        let (n, h, w, c) = (
            1 + rng.below(3),
            1 + rng.below(9),
            1 + rng.below(9),
            1 + rng.below(20),
        );
        let x = rng.vec(n * h * w * c, 1.0);
        let mut got = vec![f32::NAN; n * (h / 2) * (w / 2) * c];
        maxpool2x2(&x, n, h, w, c, &mut got);
        assert_eq!(got, ref_pool(&x, n, h, w, c));
    }
}

#[test]
fn narrow_vgg_topology_matches_reference_on_every_isa() {
    use LayerSpec::{Conv, MaxPool};
    let specs = [
        Conv(4),
        Conv(4),
        MaxPool,
        Conv(8),
        Conv(8),
        MaxPool,
        Conv(8),
        Conv(8),
        Conv(8),
        MaxPool,
        Conv(16),
        Conv(16),
        Conv(16),
        MaxPool,
        Conv(16),
        Conv(16),
        Conv(17),
        MaxPool,
    ];
    let mut rng = Rng(5);
    let mut c = 3;
    let ws: Vec<ConvWeights> = specs
        .iter()
        .filter_map(|s| match *s {
            Conv(k) => {
                let w = random_weights(&mut rng, c, k);
                c = k;
                Some(w)
            }
            MaxPool => None,
        })
        .collect();
    for isa in Isa::available() {
        let net = ConvStack::build(isa, 3, &specs, &ws).unwrap();
        // Odd and even sizes, and more images than one group.
        for (n, h, w) in [(1, 32, 32), (3, 37, 45), (9, 33, 32)] {
            let x = rng.vec(n * h * w * 3, 1.0);
            let got = net.forward(&x, n, h, w).unwrap();
            let want = ref_stack(&x, n, h, w, 3, &specs, &ws);
            assert_close(
                &got,
                &want,
                1e-5,
                &format!("{isa:?} narrow stack n{n} {h}x{w}"),
            );
        }
    }
    // Pools that cannot be fused (after the im2col layer, and after another pool), and a
    // stack that ends in a convolution.
    let specs = [Conv(5), MaxPool, MaxPool, Conv(6), Conv(7)];
    let ws = [
        random_weights(&mut rng, 2, 5),
        random_weights(&mut rng, 5, 6),
        random_weights(&mut rng, 6, 7),
    ];
    for isa in Isa::available() {
        let net = ConvStack::build(isa, 2, &specs, &ws).unwrap();
        let x = rng.vec(2 * 19 * 23 * 2, 1.0);
        let got = net.forward(&x, 2, 19, 23).unwrap();
        assert_close(
            &got,
            &ref_stack(&x, 2, 19, 23, 2, &specs, &ws),
            1e-5,
            &format!("{isa:?} unfused"),
        );
    }
}

#[test]
fn vgg16_shapes_and_names() {
    let names = ConvStack::tensor_specs(3, VGG16);
    let idx: Vec<String> = names.iter().step_by(2).map(|t| t.name.clone()).collect();
    let want: Vec<String> = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        .iter()
        .map(|i| format!("features.{i}.weight"))
        .collect();
    assert_eq!(idx, want);
    assert_eq!(names[0].shape, vec![64, 3, 3, 3]);
    assert_eq!(names[25].shape, vec![512]);
    let params: usize = names
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    assert_eq!(params, 14_714_688);
}

#[test]
fn conventions() {
    let px = [0u8, 128, 255, 10, 20, 30];
    let caffe = InputConvention::Caffe.from_rgb(&px);
    assert_eq!(caffe[..3], [255.0 - 103.939, 128.0 - 116.779, 0.0 - 123.68]);
    let torch = InputConvention::Torch.from_rgb(&px);
    assert_eq!(torch[0], (0.0f32 / 255.0 - 0.485) / 0.229);
    assert_eq!(torch[5], (30.0f32 / 255.0 - 0.406) / 0.225);
}

#[test]
fn results_are_bitwise_independent_of_batching_threads_and_x86_isa() {
    use LayerSpec::{Conv, MaxPool};
    // Wide enough that both Winograd variants (the last layer takes F2) and channel-split
    // units occur.
    let specs = [Conv(16), Conv(32), MaxPool, Conv(600), MaxPool, Conv(520)];
    let mut rng = Rng(6);
    let ws = [
        random_weights(&mut rng, 3, 16),
        random_weights(&mut rng, 16, 32),
        random_weights(&mut rng, 32, 600),
        random_weights(&mut rng, 600, 520),
    ];
    let (n, h, w) = (10, 20, 24);
    let x = rng.vec(n * h * w * 3, 1.0);
    let per_in = h * w * 3;
    let simd: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|i| *i != Isa::Portable)
        .collect();
    let mut reference: Option<Vec<f32>> = None;
    for isa in simd {
        let net = ConvStack::build(isa, 3, &specs, &ws).unwrap();
        let batched = net.forward(&x, n, h, w).unwrap();
        let single: Vec<f32> = x
            .chunks(per_in)
            .flat_map(|img| net.forward(img, 1, h, w).unwrap())
            .collect();
        assert!(
            batched == single,
            "{isa:?}: batch composition changed the result"
        );
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let serial = one_thread.install(|| net.forward(&x, n, h, w).unwrap());
        assert!(
            batched == serial,
            "{isa:?}: thread count changed the result"
        );
        match &reference {
            None => reference = Some(batched),
            Some(r) => assert!(
                *r == batched,
                "{isa:?} differs from the other instruction set"
            ),
        }
    }
}

#[test]
fn conv_stack_is_shareable_and_rejects_absurd_sizes() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ConvStack>();
    let net = ConvStack::build(
        Isa::detect(),
        3,
        &[LayerSpec::Conv(4)],
        &[random_weights(&mut Rng(7), 3, 4)],
    )
    .unwrap();
    assert!(net.forward(&[], usize::MAX, 4, 4).is_err());
    assert!(net.forward(&[], 1, usize::MAX / 2, 3).is_err());
}

#[test]
fn an_overflow_inside_the_network_is_an_error_naming_the_layer_and_the_image() {
    use LayerSpec::{Conv, MaxPool};
    // A finite but huge bias (3e38) in the first layer: its output is still finite, the next
    // layer's sums overflow (and, in Winograd's transforms, inf - inf gives NaN). Plain
    // `max`-based ReLU and pooling would turn those NaNs into zeros and collapse the features
    // silently.
    let specs = [Conv(8), Conv(8), MaxPool, Conv(8)];
    let mut rng = Rng(9);
    let three = |rng: &mut Rng| -> Vec<ConvWeights> {
        [(3, 8), (8, 8), (8, 8)]
            .iter()
            .map(|&(c, k)| random_weights(rng, c, k))
            .collect()
    };
    let mut ws = three(&mut rng);
    for isa in Isa::available() {
        let net = ConvStack::build(isa, 3, &specs, &ws).unwrap();
        let x = rng.vec(3 * 16 * 16 * 3, 1.0);
        assert!(net.forward(&x, 3, 16, 16).is_ok(), "{isa:?}: sane weights");
    }
    ws[0].bias[3] = 3e38;
    for isa in Isa::available() {
        let net = ConvStack::build(isa, 3, &specs, &ws).unwrap();
        // The bias reaches every image: the first one is named.
        let x = rng.vec(3 * 16 * 16 * 3, 1.0);
        let e = net.forward(&x, 3, 16, 16).unwrap_err().to_string();
        assert!(
            e.contains("layer conv1_2+pool1 produced") && e.contains("image 0 of the batch"),
            "{isa:?}: {e}"
        );
    }
    // An infinity in the middle of a batch names its image.
    let ws = three(&mut rng);
    let net = ConvStack::build(Isa::available()[0], 3, &specs, &ws).unwrap();
    let mut x = rng.vec(3 * 16 * 16 * 3, 1.0);
    x[2 * 16 * 16 * 3 + 5] = f32::INFINITY;
    let e = net.forward(&x, 3, 16, 16).unwrap_err().to_string();
    assert!(
        e.contains("layer conv1_1 produced") && e.contains("image 2 of the batch"),
        "{e}"
    );
}
