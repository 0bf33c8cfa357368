//! Freshness: which stages are up to date, and why the others are not.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::artifact::Artifact;
use crate::config::Config;
use crate::error::{ConfigError, Error, StoreError};
use crate::key::{KeyInputs, StaleReason};
use crate::record::RunRecord;
use crate::resources::Resources;
use crate::stage::{AnyStage, Stage};
use crate::statcache::StatCache;
use crate::store::Store;

/// The stages a binary knows, by id.
#[derive(Default)]
pub struct Registry {
    stages: Vec<Box<dyn AnyStage>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn with(mut self, s: impl Stage + 'static) -> Registry {
        self.stages.push(Box::new(s));
        self
    }

    pub fn get(&self, id: &str) -> Option<&dyn AnyStage> {
        self.stages
            .iter()
            .find(|s| s.id() == id)
            .map(|s| s.as_ref())
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.id()).collect()
    }
}

/// Everything checked before anything runs: every stage is known, its params are valid.
pub(crate) struct Resolved<'r> {
    /// Per stage of the config (same order): the stage, its resolved params, its resources.
    pub stages: Vec<(&'r dyn AnyStage, Value, Resources)>,
}

/// Checks `config` against `registry` without running or planning anything: every stage is
/// known, its params are valid and its resources can be met.
pub fn check(config: &Config, registry: &Registry) -> Result<(), ConfigError> {
    resolve(config, registry).map(|_| ())
}

pub(crate) fn resolve<'r>(
    config: &Config,
    registry: &'r Registry,
) -> Result<Resolved<'r>, ConfigError> {
    let mut stages = Vec::new();
    for sc in &config.stages {
        let stage = registry.get(&sc.id).ok_or_else(|| {
            config.stage_error(
                &sc.id,
                format!(
                    "unknown stage `{}` (this build knows: {})",
                    sc.id,
                    registry.ids().join(", ")
                ),
            )
        })?;
        let params = stage
            .resolve_params(&sc.params)
            .map_err(|m| config.params_error(&sc.id, &m))?;
        let resources = config.resources(&sc.id, stage.resources())?;
        if resources.gpus > 0 {
            return Err(config.stage_error(
                &sc.id,
                format!(
                    "stage `{}` asks for {} GPU(s), but the local executor has none (set resources.gpus = 0)",
                    sc.id, resources.gpus
                ),
            ));
        }
        stages.push((stage, params, resources));
    }
    Ok(Resolved { stages })
}

/// State of one stage.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum StageState {
    /// A completed run with the current key exists and its blobs are present.
    Fresh {
        key: String,
        finished_ms: u64,
        seconds: f64,
        /// Input files the stage skipped (its outputs' `skipped` metadata lists them).
        skipped: usize,
    },
    /// Must run; `key` is unknown while an upstream stage is stale.
    Stale {
        key: Option<String>,
        reasons: Vec<StaleReason>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub stage: String,
    #[serde(flatten)]
    pub state: StageState,
    pub needs: Vec<String>,
}

/// The freshness of every stage in the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub entries: Vec<PlanEntry>,
    pub cache: String,
    pub cache_bytes: u64,
    pub cache_blobs: usize,
    /// What the store had to say while planning (e.g. a damaged record moved aside).
    #[serde(skip)]
    pub notices: Vec<String>,
}

impl Plan {
    pub fn get(&self, id: &str) -> Option<&PlanEntry> {
        self.entries.iter().find(|e| e.stage == id)
    }
}

/// Digests of the external inputs a stage declares. A missing path is an error naming it.
pub(crate) fn external_digests(
    config: &Config,
    stage: &str,
    inputs: &[String],
    stat: &mut StatCache,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for name in inputs {
        let digest = match config.setting_path(name) {
            None => "unset".to_string(),
            Some(p) => stat.path_digest(&p).map_err(|e| {
                config.stage_error(
                    stage,
                    format!("stage `{stage}` input `{name}`: {}: {e}", p.display()),
                )
            })?,
        };
        out.insert(name.clone(), digest);
    }
    Ok(out)
}

/// The stage's declared inputs, resolved against the pipeline file's folder.
pub(crate) fn stage_settings(
    config: &Config,
    inputs: &[String],
) -> BTreeMap<String, Option<std::path::PathBuf>> {
    inputs
        .iter()
        .map(|n| (n.clone(), config.setting_path(n)))
        .collect()
}

/// Everything that goes into a stage's key. `seed` is the seed this execution runs with (a
/// sweep gives one per variant); it enters the key only if the stage uses it.
pub(crate) fn key_inputs(
    config: &Config,
    stage: &dyn AnyStage,
    params: &Value,
    inputs: BTreeMap<String, String>,
    externals: BTreeMap<String, String>,
    seed: u64,
) -> KeyInputs {
    let sc = config.stage(stage.id());
    let settings = stage_settings(config, sc.map(|s| s.inputs.as_slice()).unwrap_or(&[]));
    KeyInputs {
        stage: stage.id().to_string(),
        code: stage.code_version(),
        params: params.clone(),
        inputs,
        externals,
        seed: stage.uses_seed(&settings).then_some(seed),
        device: stage.uses_device().then(|| config.device.clone()),
    }
}

/// The record for `key` if it exists and every blob it names is present with its size.
pub(crate) fn fresh_record(
    store: &Store,
    stage: &str,
    key: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let Some(rec) = store.read_record(stage, key)? else {
        return Ok(None);
    };
    Ok(store.blobs_present(&rec)?.then_some(rec))
}

/// Why a stage with these key inputs has no usable record.
pub(crate) fn stale_reasons(store: &Store, ki: &KeyInputs) -> Result<Vec<StaleReason>, StoreError> {
    let Some(latest) = store.latest(&ki.stage)? else {
        return Ok(vec![StaleReason::NeverRun]);
    };
    let d = ki.diff(&latest.key_inputs);
    if d.is_empty() {
        if store.read_record(&ki.stage, &ki.key())?.is_some() {
            Ok(vec![StaleReason::BlobsMissing])
        } else {
            Ok(vec![StaleReason::NotCompleted])
        }
    } else {
        Ok(d)
    }
}

pub(crate) fn upstream_inputs(
    needs: &[String],
    done: &BTreeMap<String, BTreeMap<String, Artifact>>,
) -> Option<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for n in needs {
        for (name, a) in done.get(n)? {
            m.insert(format!("{n}.{name}"), a.digest.clone());
        }
    }
    Some(m)
}

/// Computes every stage's freshness without running anything.
pub fn plan(config: &Config, registry: &Registry) -> Result<Plan, Error> {
    let resolved = resolve(config, registry)?;
    let store = config.open_store()?;
    let mut stat = StatCache::open(store.stat_cache_dir());
    let mut done: BTreeMap<String, BTreeMap<String, Artifact>> = BTreeMap::new();
    let mut entries = Vec::new();
    for (sc, (stage, params, _)) in config.stages.iter().zip(&resolved.stages) {
        let state = match upstream_inputs(&sc.needs, &done) {
            None => {
                let stale: Vec<&String> =
                    sc.needs.iter().filter(|n| !done.contains_key(*n)).collect();
                StageState::Stale {
                    key: None,
                    reasons: stale
                        .iter()
                        .map(|n| StaleReason::UpstreamStale(n.to_string()))
                        .collect(),
                }
            }
            Some(inputs) => match external_digests(config, &sc.id, &sc.inputs, &mut stat) {
                // A missing input (say, weights not fetched yet) makes the stage stale, not
                // the plan impossible: `status` and `predict` still work for the others.
                Err(e) => StageState::Stale {
                    key: None,
                    reasons: vec![StaleReason::ExternalUnreadable(e.message)],
                },
                Ok(externals) => {
                    let ki = key_inputs(config, *stage, params, inputs, externals, config.seed);
                    let key = ki.key();
                    match fresh_record(&store, &sc.id, &key)? {
                        Some(rec) => {
                            done.insert(sc.id.clone(), rec.outputs.clone());
                            StageState::Fresh {
                                key,
                                finished_ms: rec.finished_ms,
                                seconds: rec.seconds,
                                skipped: stage.skipped_inputs(&rec),
                            }
                        }
                        None => StageState::Stale {
                            reasons: stale_reasons(&store, &ki)?,
                            key: Some(key),
                        },
                    }
                }
            },
        };
        entries.push(PlanEntry {
            stage: sc.id.clone(),
            state,
            needs: sc.needs.clone(),
        });
    }
    let (cache_bytes, cache_blobs) = store.blob_usage();
    Ok(Plan {
        entries,
        cache: config.cache_label(),
        cache_bytes,
        cache_blobs,
        notices: store.take_notices(),
    })
}
