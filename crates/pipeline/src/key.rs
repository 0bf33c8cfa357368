//! Cache keys: what goes into a stage's key, and why a key changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::canonical_json;

/// Everything that goes into a stage's key, kept in its run record so that a later run can say
/// exactly what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub stage: String,
    pub code: String,
    pub params: Value,
    /// `upstream.output` -> artifact digest.
    pub inputs: BTreeMap<String, String>,
    /// Setting name (e.g. `dataset.root`) -> content digest of the file or folder.
    pub externals: BTreeMap<String, String>,
    /// The run's seed, for stages that draw random numbers (see `Stage::uses_seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The compute device, for stages whose results depend on it (see `Stage::uses_device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl KeyInputs {
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        let mut field = |name: &str, v: &str| {
            h.update(name.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
        };
        field("stage", &self.stage);
        field("code", &self.code);
        field("params", &canonical_json(&self.params));
        for (k, v) in &self.inputs {
            field("input", k);
            field("digest", v);
        }
        for (k, v) in &self.externals {
            field("external", k);
            field("digest", v);
        }
        if let Some(seed) = self.seed {
            field("seed", &seed.to_string());
        }
        if let Some(device) = &self.device {
            field("device", device);
        }
        h.finalize().to_hex().to_string()
    }

    /// Human-readable reasons why `self` differs from `old`, e.g.
    /// `params changed: lr 0.001 -> 0.01`.
    pub fn diff(&self, old: &KeyInputs) -> Vec<String> {
        let mut out = Vec::new();
        if self.code != old.code {
            out.push("code changed".to_string());
        }
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &old.params, &mut a);
        flatten("", &self.params, &mut b);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            match (a.get(k), b.get(k)) {
                (Some(x), Some(y)) if x != y => out.push(format!("params changed: {k} {x} -> {y}")),
                (None, Some(y)) => out.push(format!("params changed: {k} (new) -> {y}")),
                (Some(x), None) => out.push(format!("params changed: {k} {x} -> (removed)")),
                _ => {}
            }
        }
        let (mut changed, mut added) = (Vec::new(), Vec::new());
        for (k, v) in &self.inputs {
            match old.inputs.get(k) {
                Some(o) if o == v => {}
                Some(_) => changed.push(k.as_str()),
                None => added.push(k.as_str()),
            }
        }
        let removed: Vec<&str> = old
            .inputs
            .keys()
            .filter(|k| !self.inputs.contains_key(*k))
            .map(String::as_str)
            .collect();
        for (what, names) in [("changed", changed), ("added", added), ("removed", removed)] {
            if !names.is_empty() {
                out.push(format!("input {what}: {}", name_list(&names)));
            }
        }
        for (k, v) in &self.externals {
            match old.externals.get(k) {
                Some(o) if o == v => {}
                _ => out.push(format!("external input changed: {k}")),
            }
        }
        for k in old
            .externals
            .keys()
            .filter(|k| !self.externals.contains_key(*k))
        {
            out.push(format!("external input removed: {k}"));
        }
        let show = |v: Option<String>| v.unwrap_or_else(|| "(not used)".into());
        if self.seed != old.seed {
            out.push(format!(
                "seed changed: {} -> {}",
                show(old.seed.map(|s| s.to_string())),
                show(self.seed.map(|s| s.to_string()))
            ));
        }
        if self.device != old.device {
            out.push(format!(
                "device changed: {} -> {}",
                show(old.device.clone()),
                show(self.device.clone())
            ));
        }
        out
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `a, b, c`, or with many names the first three and how many more (a seed sweep's report
/// has dozens of inputs).
fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 3;
    if names.len() <= SHOWN + 1 {
        return names.join(", ");
    }
    format!(
        "{} and {} more",
        names[..SHOWN].join(", "),
        names.len() - SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ki() -> KeyInputs {
        KeyInputs {
            stage: "s".into(),
            code: "c1".into(),
            params: json!({"lr": 0.001, "opt": {"beta": 0.9}}),
            inputs: [("a.out".to_string(), "d1".to_string())].into(),
            externals: BTreeMap::new(),
            seed: Some(1),
            device: Some("cpu".into()),
        }
    }

    #[test]
    fn key_depends_on_each_field() {
        let base = ki();
        let k = base.key();
        let mut v = ki();
        v.params = json!({"opt": {"beta": 0.9}, "lr": 0.001});
        assert_eq!(v.key(), k, "param order does not matter");
        let variants: [fn(&mut KeyInputs); 8] = [
            |k| k.code = "c2".into(),
            |k| k.params = json!({"lr": 0.01, "opt": {"beta": 0.9}}),
            |k| {
                k.inputs.insert("a.out".into(), "d2".into());
            },
            |k| k.seed = Some(2),
            |k| k.device = Some("cuda".into()),
            |k| {
                k.externals.insert("dataset.root".into(), "x".into());
            },
            |k| k.seed = None,
            |k| k.device = None,
        ];
        for f in variants {
            let mut v = ki();
            f(&mut v);
            assert_ne!(v.key(), k);
        }
    }

    #[test]
    fn diff_names_what_changed() {
        let old = ki();
        let mut new = ki();
        new.params = json!({"lr": 0.01, "opt": {"beta": 0.9}});
        new.code = "c2".into();
        new.inputs.insert("a.out".into(), "d9".into());
        assert_eq!(
            new.diff(&old),
            [
                "code changed",
                "params changed: lr 0.001 -> 0.01",
                "input changed: a.out"
            ]
        );
    }

    #[test]
    fn many_input_changes_read_as_one_line() {
        let old = ki();
        let mut new = ki();
        for i in 0..6 {
            new.inputs.insert(format!("b{i}.out"), "d".into());
        }
        new.inputs.insert("a.out".into(), "d9".into());
        assert_eq!(
            new.diff(&old),
            [
                "input changed: a.out",
                "input added: b0.out, b1.out, b2.out and 3 more"
            ]
        );
    }
}
