//! Checks of the folded weights files and of what `fetch weights --from` accepts.

use std::path::PathBuf;

use lite0_weights::{expected_tensors, import_file, load, Error};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A weights file with every expected tensor (small deterministic values), `edit` applied.
fn weights_file(
    dir: &std::path::Path,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = expected_tensors()
        .into_iter()
        .map(|(n, s)| {
            let len = s.iter().product::<usize>();
            (n, s, (0..len).map(|i| (i % 7) as f32 * 0.01).collect())
        })
        .collect();
    edit(&mut t);
    let path = dir.join("w.safetensors");
    std::fs::write(&path, lite0_weights::serialize(&t, &[]).unwrap()).unwrap();
    path
}

#[test]
fn a_complete_file_loads_and_every_problem_is_listed_in_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let ok = weights_file(dir.path(), |_| {});
    let w = load(&ok).expect("complete weights load");
    assert_eq!(w.data_digest().len(), 64);

    let bad = weights_file(dir.path(), |t| {
        t.retain(|(n, _, _)| n != "head.bias");
        let stem = t.iter_mut().find(|(n, _, _)| n == "stem.weight").unwrap();
        stem.2[5] = f32::NAN;
        let fc = t.iter_mut().find(|(n, _, _)| n == "fc.bias").unwrap();
        fc.1 = vec![999];
        fc.2.truncate(999);
        t.push(("extra".into(), vec![1], vec![0.0]));
    });
    let msg = load(&bad).unwrap_err().to_string();
    for want in [
        "4 problems",
        "head.bias: missing (expected shape [1280])",
        "stem.weight: 1 NaN or infinite value(s), the first at flat index 5",
        "fc.bias: expected shape [1000], found [999]",
        "extra: unexpected tensor [1]",
    ] {
        assert!(msg.contains(want), "{want:?} not in:\n{msg}");
    }
}

#[test]
fn a_checkpoint_that_is_not_lite0_names_what_it_lacks() {
    // The small reader fixture is a valid legacy checkpoint of other tensors.
    let bytes = std::fs::read(fixture("small_legacy.pth")).unwrap();
    let e = lite0_weights::convert_pth(&bytes, "small_legacy.pth").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Layout { .. }), "{msg}");
    assert!(msg.contains("_conv_stem.weight: missing"), "{msg}");
    assert!(msg.contains("conv.weight: unexpected tensor"), "{msg}");
    // Batch norm's step counter is no problem.
    assert!(!msg.contains("num_batches_tracked"), "{msg}");
}

#[test]
fn imports_refuse_zip_checkpoints_and_unknown_files_with_every_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.safetensors");
    let msg = import_file(&fixture("small_zip.pth"), &dest)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("zip-format checkpoint"), "{msg}");
    assert!(
        msg.contains("fetch weights --backbone efficientnet-lite0"),
        "{msg}"
    );
    let other = dir.path().join("w.onnx");
    std::fs::write(&other, b"x").unwrap();
    let msg = import_file(&other, &dest).unwrap_err().to_string();
    assert!(
        msg.contains("expected a .pth, .whl or .safetensors file"),
        "{msg}"
    );
    // Truncated: an error naming where, not a panic.
    let bytes = std::fs::read(fixture("small_legacy.pth")).unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let msg = import_file(&cut, &dest).unwrap_err().to_string();
    assert!(
        msg.contains("truncated") || msg.contains("at byte"),
        "{msg}"
    );
    assert!(!dest.exists(), "nothing written on failure");
}
