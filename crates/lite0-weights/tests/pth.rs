//! The legacy `.pth` reader against PyTorch's own files (tests/fixtures, made by
//! crates/lite0-extract/tests/fixtures/make_fixtures.py).

use lite0_weights::pth::{read_state_dict, Dtype, PthError};

fn fixture(name: &str) -> Vec<u8> {
    fixtures::read(
        env!("CARGO_MANIFEST_DIR"),
        &format!("tests/fixtures/{name}"),
    )
}

#[test]
fn a_legacy_state_dict_reads_as_pytorch_wrote_it() {
    let expected: serde_json::Value =
        serde_json::from_slice(&fixture("small.json")).expect("small.json");
    let sd = read_state_dict(&fixture("small_legacy.pth")).expect("legacy file reads");
    let order: Vec<&str> = expected["order"]
        .as_array()
        .expect("order")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    assert_eq!(
        sd.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        order
    );
    for (name, t) in &sd {
        let e = &expected["tensors"][name];
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|v| v.as_u64().expect("dim") as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        let dtype = match e["dtype"].as_str().expect("dtype") {
            "float32" => Dtype::F32,
            "float16" => Dtype::F16,
            "int64" => Dtype::I64,
            d => panic!("{name}: dtype {d} not in the fixture's list"),
        };
        assert_eq!(t.dtype, dtype, "{name}");
        let values: Vec<f32> = e["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("value") as f32)
            .collect();
        // Exact: the reader converts the same stored bits as `tensor.float()` does.
        assert_eq!(t.values, values, "{name}");
    }
}

#[test]
fn a_zip_format_checkpoint_is_refused_with_the_way_out() {
    let err = read_state_dict(&fixture("small_zip.pth")).unwrap_err();
    assert_eq!(err, PthError::ZipFormat);
    let msg = err.to_string();
    assert!(
        msg.contains("_use_new_zipfile_serialization=False"),
        "{msg}"
    );
}

#[test]
fn every_truncation_is_an_error_never_a_panic_or_a_short_tensor() {
    let full = fixture("small_legacy.pth");
    for cut in 0..full.len() {
        match read_state_dict(&full[..cut]) {
            Err(PthError::Truncated { .. } | PthError::Malformed { .. }) => {}
            other => panic!("cut at {cut} of {}: {other:?}", full.len()),
        }
    }
    // The storages' tail: cutting one byte names the storage.
    let err = read_state_dict(&full[..full.len() - 1]).unwrap_err();
    assert!(
        matches!(&err, PthError::Truncated { what, .. } if what.contains("storage")),
        "{err}"
    );
}

#[test]
fn flipped_bytes_give_errors_or_values_never_panics() {
    let full = fixture("small_legacy.pth");
    for i in 0..full.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = full.clone();
            b[i] ^= bit;
            // Any outcome but a panic (a flipped data byte is just another value).
            let _ = read_state_dict(&b);
        }
    }
}

#[test]
fn a_pickle_that_calls_other_code_is_refused() {
    // protocol 2: GLOBAL os.system, ('echo',), REDUCE, STOP, after a valid magic header.
    let mut b = fixture("small_legacy.pth");
    let obj = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.";
    // Find the start of the fourth pickle (after magic, protocol and sys_info): each ends
    // with STOP ('.'), and the first three are short.
    let mut stops = 0;
    let mut at = 0;
    for (i, &x) in b.iter().enumerate() {
        if x == b'.' {
            stops += 1;
            if stops == 3 {
                at = i + 1;
                break;
            }
        }
    }
    b.truncate(at);
    b.extend_from_slice(obj);
    let err = read_state_dict(&b).unwrap_err();
    assert!(err.to_string().contains("os.system"), "{err}");
}
