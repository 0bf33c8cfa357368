//! `preprocess` against independent references (Pillow fixtures) and on real photos.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `../shared` beside the repository (or `$SHARED_DIR`); `None`, with a printed reason, when
/// absent.
fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if p.join("datasets/food101-10").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set SHARED_DIR); real-data checks not run",
            p.display()
        );
        None
    }
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn fixture() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("pillow_nearest.json")).unwrap()).unwrap()
}

#[test]
fn nearest_resize_equals_pillow_on_noise_images() {
    let fx = fixture();
    for n in fx["noise"].as_array().unwrap() {
        let bytes = std::fs::read(fixtures().join(n["file"].as_str().unwrap())).unwrap();
        let d = preprocess::decode_rgb(&bytes, 1 << 30, false).unwrap();
        let out = preprocess::resize_nearest_pillow(&d.rgb, d.width, d.height, 224, 224);
        assert_eq!(
            sha(&out),
            n["resized_sha256"].as_str().unwrap(),
            "{}",
            n["file"]
        );
    }
}

#[test]
fn keras_preprocessing_equals_pillow_on_real_photos() {
    let Some(shared) = shared() else { return };
    let fx = fixture();
    for r in fx["real"].as_array().unwrap() {
        let file = r["file"].as_str().unwrap();
        let bytes = std::fs::read(shared.join("datasets/food101-10").join(file)).unwrap();
        let d = preprocess::decode_rgb(&bytes, 1 << 30, false).unwrap();
        assert_eq!(
            [d.width as u64, d.height as u64],
            [
                r["size"][0].as_u64().unwrap(),
                r["size"][1].as_u64().unwrap()
            ]
        );
        assert_eq!(
            sha(&d.rgb),
            r["decoded_sha256"].as_str().unwrap(),
            "{file}: decoded pixels differ from Pillow's"
        );
        let out = preprocess::preprocess_one(&bytes, &preprocess::Params::default()).unwrap();
        assert_eq!(
            sha(&out),
            r["resized_sha256"].as_str().unwrap(),
            "{file}: resized pixels differ from Pillow's"
        );
        let crop = &r["crop_100_100_4x4"];
        for y in 0..4 {
            for x in 0..4 {
                for c in 0..3 {
                    assert_eq!(
                        out[((100 + y) * 224 + 100 + x) * 3 + c] as u64,
                        crop[y][x][c].as_u64().unwrap()
                    );
                }
            }
        }
    }
}

#[test]
fn every_format_decodes_to_pillows_rgb() {
    let fx = fixture();
    for f in fx["formats"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let d = preprocess::decode_rgb(&bytes, 1 << 30, false)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((d.width, d.height), (64, 48), "{file}");
        assert_eq!(
            sha(&d.rgb),
            f["rgb_sha256"].as_str().unwrap(),
            "{file} ({})",
            f["mode"]
        );
    }
}

#[test]
fn bad_images_get_reasons_not_panics() {
    let jpg = std::fs::read(fixtures().join("formats/baseline.jpg")).unwrap();
    let p = preprocess::Params::default();
    let check = |bytes: &[u8], p: &preprocess::Params, want: &str| {
        let e = preprocess::preprocess_one(bytes, p).unwrap_err();
        assert!(e.contains(want), "expected `{want}` in `{e}`");
    };
    check(&jpg[..jpg.len() / 2], &p, "truncated");
    check(&[], &p, "not a known image format");
    check(b"hello, not an image", &p, "not a known image format");
    let mut garbage = jpg[..4].to_vec();
    garbage.extend_from_slice(&[0x13; 64]);
    check(&garbage, &p, "");
    let small = preprocess::Params {
        max_pixels: 1000,
        ..Default::default()
    };
    check(
        &jpg,
        &small,
        "image too large: 64x48 = 3072 pixels > max_pixels 1000 (decompression-bomb guard)",
    );
    let png = std::fs::read(fixtures().join("formats/rgba.png")).unwrap();
    check(&png, &small, "decompression-bomb guard");
    check(&png[..png.len() - 40], &p, "corrupt or truncated image");
}

#[test]
fn antialias_modes_give_the_requested_size() {
    let bytes = std::fs::read(fixtures().join("noise/97x61.png")).unwrap();
    for fit in [preprocess::Fit::Squash, preprocess::Fit::CenterCrop] {
        let p = preprocess::Params {
            resize: preprocess::ResizeMode::Antialias,
            fit,
            size: 32,
            ..Default::default()
        };
        assert_eq!(
            preprocess::preprocess_one(&bytes, &p).unwrap().len(),
            32 * 32 * 3
        );
    }
}
