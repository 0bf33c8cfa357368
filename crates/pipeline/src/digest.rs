//! Canonical encodings and content digests (a leaf module).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::artifact::ChunkRef;

/// Canonical JSON: object keys sorted at every level, no whitespace. Used for params in keys.
pub fn canonical_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).expect("json values always serialise")
}

/// Header metadata that describes the run, not the content: a rerun with other params (or
/// code) that reproduces the same tensors must get the same digest, for early cutoff.
pub(crate) const VOLATILE_META: &[&str] = &["key", "created", "producer", "params"];

/// Content digest of a chunk, from its parsed safetensors. Volatile header fields (the key of
/// the run that wrote it, its creation time) are excluded so that equal results have equal
/// digests; everything else in the header metadata is included.
pub(crate) fn chunk_digest(
    st: &safetensors::SafeTensors<'_>,
    meta: Option<&HashMap<String, String>>,
) -> String {
    let tensors = st.tensors();
    let parts: Vec<(&str, safetensors::Dtype, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data()))
        .collect();
    parts_digest(parts, meta)
}

/// [`chunk_digest`] of a chunk's tensors before they are written: (name, dtype, shape, data).
pub(crate) fn parts_digest(
    mut parts: Vec<(&str, safetensors::Dtype, &[usize], &[u8])>,
    meta: Option<&HashMap<String, String>>,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"chunk-v1\0");
    parts.sort_by(|a, b| a.0.cmp(b.0));
    for (n, dtype, shape, data) in parts {
        h.update(n.as_bytes());
        h.update(b"\0");
        h.update(format!("{dtype:?}").as_bytes());
        h.update(format!("{shape:?}").as_bytes());
        h.update(&(data.len() as u64).to_le_bytes());
        h.update(data);
    }
    if let Some(m) = meta {
        let sorted: BTreeMap<&String, &String> = m
            .iter()
            .filter(|(k, _)| !VOLATILE_META.contains(&k.as_str()))
            .collect();
        for (k, v) in sorted {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
    }
    h.finalize().to_hex().to_string()
}

/// blake3 of a safetensors file's header: the 8-byte length and the JSON it counts (`None`
/// when `bytes` are too short to hold them).
pub(crate) fn header_digest(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let end = n.checked_add(8)?;
    Some(blake3::hash(bytes.get(..end)?).to_hex().to_string())
}

/// Digest of an artifact: its chunk digests in order and its metadata.
pub(crate) fn artifact_digest(chunks: &[ChunkRef], meta: &BTreeMap<String, Value>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"artifact-v1\0");
    for c in chunks {
        h.update(c.digest.as_bytes());
        h.update(b"\n");
    }
    h.update(canonical_json(&serde_json::to_value(meta).expect("meta is json")).as_bytes());
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            super::canonical_json(&json!({"b": 1, "a": {"d": 2, "c": 3}})),
            r#"{"a":{"c":3,"d":2},"b":1}"#
        );
    }
}
