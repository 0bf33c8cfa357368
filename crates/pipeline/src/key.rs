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

    /// Why `self` differs from `old`, e.g. `params changed: lr 0.001 -> 0.01`.
    pub fn diff(&self, old: &KeyInputs) -> Vec<StaleReason> {
        let mut out = Vec::new();
        if self.code != old.code {
            out.push(StaleReason::CodeChanged);
        }
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &old.params, &mut a);
        flatten("", &self.params, &mut b);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (x, y) = (a.get(k), b.get(k));
            if x != y {
                out.push(StaleReason::ParamChanged {
                    name: k.clone(),
                    old: x.cloned(),
                    new: y.cloned(),
                });
            }
        }
        let (mut changed, mut added) = (Vec::new(), Vec::new());
        for (k, v) in &self.inputs {
            match old.inputs.get(k) {
                Some(o) if o == v => {}
                Some(_) => changed.push(k.clone()),
                None => added.push(k.clone()),
            }
        }
        let removed: Vec<String> = old
            .inputs
            .keys()
            .filter(|k| !self.inputs.contains_key(*k))
            .cloned()
            .collect();
        for (what, names) in [
            (InputChange::Changed, changed),
            (InputChange::Added, added),
            (InputChange::Removed, removed),
        ] {
            if !names.is_empty() {
                out.push(StaleReason::Inputs { what, names });
            }
        }
        for (k, v) in &self.externals {
            match old.externals.get(k) {
                Some(o) if o == v => {}
                _ => out.push(StaleReason::ExternalChanged(k.clone())),
            }
        }
        for k in old
            .externals
            .keys()
            .filter(|k| !self.externals.contains_key(*k))
        {
            out.push(StaleReason::ExternalRemoved(k.clone()));
        }
        if self.seed != old.seed {
            out.push(StaleReason::SeedChanged {
                old: old.seed,
                new: self.seed,
            });
        }
        if self.device != old.device {
            out.push(StaleReason::DeviceChanged {
                old: old.device.clone(),
                new: self.device.clone(),
            });
        }
        out
    }
}

/// How a stage's upstream artifacts differ from those of its latest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputChange {
    Changed,
    Added,
    Removed,
}

/// Why a stage must run (as cargo's dirty reasons): rendered for people by `Display`, and
/// serialised as that text (so `status --json` reads as before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// The cache holds no run of the stage.
    NeverRun,
    /// A run with this key is recorded, but a blob it names is gone.
    BlobsMissing,
    /// The inputs equal the latest run's, but no completed run has this key.
    NotCompleted,
    /// An upstream stage must run first.
    UpstreamStale(String),
    /// An external input (a file or folder setting) cannot be read.
    ExternalUnreadable(String),
    CodeChanged,
    /// A parameter changed; `None` where it was absent (old) or removed (new).
    ParamChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// Upstream artifacts (`stage.output`) that differ from the latest run's.
    Inputs {
        what: InputChange,
        names: Vec<String>,
    },
    ExternalChanged(String),
    ExternalRemoved(String),
    SeedChanged {
        old: Option<u64>,
        new: Option<u64>,
    },
    DeviceChanged {
        old: Option<String>,
        new: Option<String>,
    },
    /// Run although fresh (`--force`).
    Forced,
    /// A sharded stage's shards were gathered.
    Gathered(usize),
    /// One shard of a sharded stage.
    Shard(String),
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unused = |v: Option<String>| v.unwrap_or_else(|| "(not used)".into());
        match self {
            StaleReason::NeverRun => write!(f, "never run"),
            StaleReason::BlobsMissing => write!(f, "output blobs missing from the cache"),
            StaleReason::NotCompleted => write!(
                f,
                "no completed run with these inputs (interrupted, failed or invalidated)"
            ),
            StaleReason::UpstreamStale(n) => write!(f, "upstream `{n}` is stale"),
            StaleReason::ExternalUnreadable(m) => write!(f, "{m}"),
            StaleReason::CodeChanged => write!(f, "code changed"),
            StaleReason::ParamChanged { name, old, new } => match (old, new) {
                (Some(x), Some(y)) => write!(f, "params changed: {name} {x} -> {y}"),
                (None, Some(y)) => write!(f, "params changed: {name} (new) -> {y}"),
                (Some(x), None) => write!(f, "params changed: {name} {x} -> (removed)"),
                (None, None) => write!(f, "params changed: {name}"),
            },
            StaleReason::Inputs { what, names } => {
                let what = match what {
                    InputChange::Changed => "changed",
                    InputChange::Added => "added",
                    InputChange::Removed => "removed",
                };
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                write!(f, "input {what}: {}", name_list(&names))
            }
            StaleReason::ExternalChanged(k) => write!(f, "external input changed: {k}"),
            StaleReason::ExternalRemoved(k) => write!(f, "external input removed: {k}"),
            StaleReason::SeedChanged { old, new } => write!(
                f,
                "seed changed: {} -> {}",
                unused(old.map(|s| s.to_string())),
                unused(new.map(|s| s.to_string()))
            ),
            StaleReason::DeviceChanged { old, new } => write!(
                f,
                "device changed: {} -> {}",
                unused(old.clone()),
                unused(new.clone())
            ),
            StaleReason::Forced => write!(f, "forced"),
            StaleReason::Gathered(n) => write!(f, "gathered {n} shards"),
            StaleReason::Shard(s) => write!(f, "shard {s}"),
        }
    }
}

impl Serialize for StaleReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reasons as one line, `; `-separated, as every command prints them.
pub fn join_reasons(reasons: &[StaleReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
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
            new.diff(&old)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
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
            new.diff(&old)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "input changed: a.out",
                "input added: b0.out, b1.out, b2.out and 3 more"
            ]
        );
    }
}
