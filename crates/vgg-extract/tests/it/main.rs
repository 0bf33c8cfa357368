//! Integration tests: PyTorch and Pillow references (fixtures made by
//! `tests/fixtures/make_fixtures.py`), weight-file errors, and the public API's edges.
//!
//! Accuracy is stated with two numbers, both against the reference `want`:
//! - `max_rel = max|got - want| / max|want|` (error relative to the output's scale), and
//! - element-wise `|got - want| <= RTOL * |want| + RTOL * max|want| / 10`.
//!
//! Both must hold with `RTOL = 1e-4`.

mod taps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fixtures::{f32s, f64s, SafeTensors};
use preprocess::resize_nearest_pillow;
use safetensors::Dtype;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vgg_extract::{ConvStack, Error, InputConvention, LayerSpec, VGG16};

const RTOL: f64 = 1e-4;

use LayerSpec::{Conv, MaxPool};

/// The narrow network of `narrow_weights.safetensors`: VGG16's topology, fewer channels.
pub(crate) const NARROW: &[LayerSpec] = &[
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
    Conv(16),
    MaxPool,
];

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The project's shared data folder: `$SHARED_DIR`, else `../../../shared` from this crate.
fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    dir.is_dir().then_some(dir)
}

/// Checks both accuracy criteria (module docs) and returns `max_rel`.
#[track_caller]
fn check_close(got: &[f64], want: &[f64], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    let mut max_abs = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        max_abs = max_abs.max(d);
        assert!(
            d <= RTOL * w.abs() + RTOL * scale / 10.0,
            "{what}: element {i}: got {g}, want {w} (|diff| {d:e})"
        );
    }
    let rel = max_abs / scale;
    eprintln!("{what}: max_rel {rel:.2e} (max |diff| {max_abs:.3e}, max |want| {scale:.4})");
    assert!(rel <= RTOL, "{what}: max_rel {rel:e} > {RTOL:e}");
    rel
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn narrow_network_matches_pytorch() {
    let net =
        ConvStack::from_safetensors(&fixture("narrow_weights.safetensors"), 3, NARROW).unwrap();
    let bytes = std::fs::read(fixture("narrow_io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&bytes).unwrap();
    for j in 0..3 {
        let (ishape, x) = f32s(&io, &format!("input.{j}"));
        let (oshape, want) = f32s(&io, &format!("output.{j}"));
        let [n, h, w, 3] = ishape[..] else {
            panic!("input.{j} shape {ishape:?}")
        };
        let (oh, ow, oc) = net.output_shape(h, w).unwrap();
        assert_eq!(vec![n, oh, ow, oc], oshape, "output.{j} shape");
        let got = net.forward(&x, n, h, w).unwrap();
        check_close(
            &widen(&got),
            &widen(&want),
            &format!("narrow input.{j} {n}x{h}x{w}"),
        );
    }
}

/// sha256 as lowercase hex.
fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn real_vgg16_matches_pytorch_on_real_photos() {
    let Some(shared) = shared_dir() else {
        eprintln!(
            "SKIPPED real_vgg16_matches_pytorch_on_real_photos: no shared data folder (set SHARED_DIR, \
             or place it at ../../../shared from {})",
            env!("CARGO_MANIFEST_DIR")
        );
        return;
    };
    let weights = shared.join("weights/vgg16_notop.safetensors");
    let images = shared.join("datasets/food101-10");
    if !weights.is_file() || !images.is_dir() {
        eprintln!(
            "SKIPPED real_vgg16_matches_pytorch_on_real_photos: {} or {} is missing",
            weights.display(),
            images.display()
        );
        return;
    }
    let doc: Value =
        serde_json::from_slice(&std::fs::read(fixture("vgg16_real.json")).unwrap()).unwrap();
    let entries = doc["images"].as_array().unwrap();
    let mut x = Vec::new();
    // The fixture holds PyTorch's output for two pixel sources (see make_fixtures.py): Pillow's
    // decode (the study's input) and the `image` crate's. Which one this decode reproduced is
    // told by the digest; anything else means a decoder changed and the fixture is stale.
    let mut sources = Vec::new();
    for e in entries {
        let file = e["file"].as_str().unwrap();
        let bytes = std::fs::read(images.join(file)).unwrap();
        assert_eq!(
            sha256(&bytes),
            e["file_sha256"].as_str().unwrap(),
            "{file}: not the photo the fixture used"
        );
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let rgb = resize_nearest_pillow(img.as_raw(), w, h, 224, 224);
        let digest = sha256(&rgb);
        let source = ["pillow", "image_crate"]
            .into_iter()
            .find(|s| e[s]["resized_rgb_sha256"].as_str() == Some(digest.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{file}: decoded + resized pixels (sha256 {digest}) match neither Pillow's nor the \
                     image crate's when the fixture was made; rerun tests/fixtures/make_fixtures.py"
                )
            });
        if source != "pillow" {
            eprintln!("{file}: the image crate's JPEG decode differs from Pillow's; using the fixture's image_crate reference");
        }
        let before = x.len();
        InputConvention::Caffe.extend_from_rgb(&rgb, &mut x);
        let sum: f64 = x[before..].iter().map(|&v| f64::from(v)).sum();
        let want_sum = e[source]["input_sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
            "{file}: input sum {sum} != {want_sum}"
        );
        sources.push(source);
    }
    let n = entries.len();
    let net = ConvStack::vgg16_from_safetensors(&weights).unwrap();
    assert_eq!(net.output_shape(224, 224).unwrap(), (7, 7, 512));
    let y = net.forward(&x, n, 224, 224).unwrap();
    let bytes = std::fs::read(fixture("vgg16_real.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let positions: Vec<(usize, usize)> = doc["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let (mut want_at, mut want_sums) = (Vec::new(), Vec::new());
    for (i, source) in sources.iter().enumerate() {
        let (shape, at) = f32s(&st, &format!("pool5_at.{source}"));
        assert_eq!(shape, vec![n, positions.len(), 512]);
        let per = positions.len() * 512;
        want_at.extend(widen(&at[i * per..(i + 1) * per]));
        want_sums.extend_from_slice(
            &f64s(&st, &format!("pool5_channel_sums.{source}"))[i * 512..(i + 1) * 512],
        );
    }
    let got_at: Vec<f64> = (0..n)
        .flat_map(|i| positions.iter().map(move |&(r, c)| (i, r, c)))
        .flat_map(|(i, r, c)| {
            y[((i * 7 + r) * 7 + c) * 512..][..512]
                .iter()
                .map(|&v| f64::from(v))
        })
        .collect();
    check_close(&got_at, &want_at, "real vgg16 pool5 at positions");
    let got_sums: Vec<f64> = (0..n)
        .flat_map(|i| {
            let img = &y[i * 49 * 512..(i + 1) * 49 * 512];
            (0..512).map(move |k| (0..49).map(|p| f64::from(img[p * 512 + k])).sum::<f64>())
        })
        .collect();
    check_close(&got_sums, &want_sums, "real vgg16 pool5 channel sums");
}

#[test]
fn resize_picks_the_columns_pillow_picks() {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(fixture("pillow_nearest.json")).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(
        cases
            .iter()
            .any(|c| c["differs_from_naive"].as_bool().unwrap()),
        "fixture lacks a hard case"
    );
    for c in cases {
        let (src, dst) = (
            c["src"].as_u64().unwrap() as usize,
            c["dst"].as_u64().unwrap() as usize,
        );
        let want: Vec<usize> = c["picked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        // A row whose pixels encode their x (R = x mod 256, G = x / 256), and the same as a
        // column for the vertical direction.
        let line: Vec<u8> = (0..src)
            .flat_map(|x| [(x % 256) as u8, (x / 256) as u8, 7])
            .collect();
        for (w, h, dw, dh) in [(src, 1, dst, 1), (1, src, 1, dst)] {
            let out = resize_nearest_pillow(&line, w, h, dw, dh);
            let got: Vec<usize> = out
                .chunks_exact(3)
                .map(|p| p[0] as usize + 256 * p[1] as usize)
                .collect();
            assert_eq!(got, want, "{w}x{h} -> {dw}x{dh}");
        }
    }
}

fn tensor_file(tensors: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dt, shape)| vec![0u8; shape.iter().product::<usize>() * dt.bitsize() / 8])
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, dt, shape), d)| {
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None::<std::collections::HashMap<String, String>>).unwrap()
}

#[test]
fn weight_file_problems_are_all_listed_in_one_error() {
    let specs = [Conv(4), MaxPool, Conv(5)];
    let expected = ConvStack::tensor_specs(3, &specs);
    let names: Vec<&str> = expected.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "features.0.weight",
            "features.0.bias",
            "features.3.weight",
            "features.3.bias"
        ]
    );
    let good = tensor_file(&[
        ("features.0.weight", Dtype::F32, vec![4, 3, 3, 3]),
        ("features.0.bias", Dtype::F32, vec![4]),
        ("features.3.weight", Dtype::F32, vec![5, 4, 3, 3]),
        ("features.3.bias", Dtype::F32, vec![5]),
    ]);
    let net = ConvStack::from_safetensors_bytes(&good, "good", 3, &specs).unwrap();
    assert_eq!(net.output_shape(9, 8).unwrap(), (4, 4, 5));

    let bad = tensor_file(&[
        ("features.0.weight", Dtype::F32, vec![4, 3, 3, 3]),
        ("features.0.bias", Dtype::F16, vec![4]),
        ("features.3.weight", Dtype::F32, vec![5, 3, 3, 3]),
        ("classifier.0.weight", Dtype::F32, vec![2]),
        ("features.2.weight", Dtype::F32, vec![1]),
    ]);
    let err = ConvStack::from_safetensors_bytes(&bad, "bad.safetensors", 3, &specs).unwrap_err();
    let Error::WeightsMismatch { problems, .. } = &err else {
        panic!("wrong error: {err}")
    };
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert_eq!(
        err.to_string(),
        "weights in bad.safetensors do not match the network: \
         tensor features.0.bias has dtype F16, expected F32; \
         tensor features.3.weight has shape [5, 3, 3, 3], expected [5, 4, 3, 3]; \
         missing tensor features.3.bias [5]; \
         unexpected tensor classifier.0.weight; \
         unexpected tensor features.2.weight"
    );

    let err =
        ConvStack::from_safetensors_bytes(b"not a tensor file", "junk", 3, &specs).unwrap_err();
    assert!(matches!(err, Error::Safetensors { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("junk is not a valid safetensors file: "),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let err = ConvStack::from_safetensors(&missing, 3, &specs).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope.safetensors"), "{err}");

    // The real file's layout is what VGG16 expects.
    let vgg: BTreeMap<String, Vec<usize>> = ConvStack::tensor_specs(3, VGG16)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    assert_eq!(vgg.len(), 26);
    assert_eq!(vgg["features.28.weight"], [512, 512, 3, 3]);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let specs = [Conv(4), MaxPool, Conv(5), MaxPool];
    let w = |k: usize, c: usize| vgg_extract::ConvWeights {
        weight: vec![0.1; k * c * 9],
        bias: vec![0.0; k],
    };
    let net = ConvStack::from_weights(3, &specs, &[w(4, 3), w(5, 4)]).unwrap();
    assert!(matches!(
        net.forward(&[0.0; 10], 1, 4, 4),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        net.forward(&[0.0; 3 * 3 * 3], 1, 3, 3),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        net.forward(&[], 1, 0, 0),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(net.forward(&[], 0, 8, 8).unwrap(), Vec::<f32>::new());
    let mut small = vec![0.0; 3];
    assert!(matches!(
        net.forward_into(&[0.0; 4 * 4 * 3], 1, 4, 4, &mut small),
        Err(Error::InvalidInput(_))
    ));
    let mut out = vec![0.0; 5];
    net.forward_into(&[1.0; 4 * 4 * 3], 1, 4, 4, &mut out)
        .unwrap();
    assert!(out.iter().all(|v| *v > 0.0));

    let err = ConvStack::from_weights(3, &specs, &[w(4, 3)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid network configuration: 1 convolution weights given for 2 convolutions"
    );
    let err = ConvStack::from_weights(3, &specs, &[w(4, 3), w(5, 3)]).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(matches!(
        ConvStack::from_weights(3, &[], &[]),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        ConvStack::from_weights(0, &specs, &[]),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        ConvStack::from_weights(3, &[Conv(0)], &[w(0, 3)]),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn input_convention_serde_is_lowercase() {
    assert_eq!(
        serde_json::to_string(&InputConvention::Caffe).unwrap(),
        "\"caffe\""
    );
    assert_eq!(
        serde_json::from_str::<InputConvention>("\"torch\"").unwrap(),
        InputConvention::Torch
    );
    assert!(serde_json::from_str::<InputConvention>("\"Caffe\"").is_err());
}
