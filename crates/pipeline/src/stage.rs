//! The trait every stage implements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::artifact::Artifacts;
use crate::context::StageContext;
use crate::error::BoxError;
use crate::progress::Progress;
use crate::record::RunRecord;
use crate::resources::Resources;
use crate::store::Store;

/// What [`Stage::check_gathered`] returns.
pub type Checked = Result<(), BoxError>;

/// A missing external input that a stage may be able to obtain (see
/// [`Stage::provide_input`]).
pub struct MissingInput<'a> {
    /// The setting's name, e.g. `weights.path`.
    pub setting: &'a str,
    /// The missing path, resolved against `base`.
    pub path: &'a Path,
    /// The pipeline file's folder.
    pub base: &'a Path,
    /// The user asked to fetch missing inputs wherever they point (`run --fetch`).
    pub fetch: bool,
    pub progress: &'a Progress,
}

/// A stage's code identity for [`Stage::code_version`]: the build script's `CODE_HASH` (see
/// the `code-hash` crate) and the stage's hand-bumped cache version, as `<hash>-v<version>`.
/// Expands in the stage's crate, so the hash is that crate's.
#[macro_export]
macro_rules! code_version {
    ($version:expr) => {
        format!("{}-v{}", env!("CODE_HASH"), $version)
    };
}

/// A stage of the pipeline. Stages never call each other: they read upstream artifacts and
/// write their own through the [`StageContext`].
///
/// A stage is its id, its outputs, its params type and its `run`; everything else has a
/// default. The runner holds stages as [`AnyStage`] (every `Stage` is one).
pub trait Stage: Send + Sync {
    /// The `[stage.<id>.params]` table, typed: deserialised, validated, and stored in the key
    /// as JSON with every default filled in (see [`resolve_params`]).
    type Params: DeserializeOwned + Serialize + Validate;

    /// The stage id, as in `pipeline.toml` (kebab-case, equal to the crate name).
    fn id(&self) -> &'static str;

    /// Identity of the stage's code: the build-time source hash plus the stage's
    /// `CACHE_VERSION` (see [`code_version!`]). Changing it makes the stage rerun.
    fn code_version(&self) -> String;

    /// Names of the artifacts the stage writes.
    fn outputs(&self) -> &'static [&'static str];

    /// Validates the params table from `pipeline.toml` and returns them with defaults applied,
    /// as JSON (the canonical form that goes into the key): [`resolve_params`] of
    /// [`Stage::Params`] unless the stage says otherwise.
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String> {
        resolve_params::<Self::Params>(raw)
    }

    /// Whether the stage draws random numbers from the run's seed; only then is the seed part
    /// of its key (and available as `StageContext::seed`). `settings` are the stage's declared
    /// inputs, resolved (a loader may use the seed only for a generated dataset).
    fn uses_seed(&self, _settings: &BTreeMap<String, Option<PathBuf>>) -> bool {
        false
    }

    /// Whether the stage's results depend on the compute device; only then is the device part
    /// of its key.
    fn uses_device(&self) -> bool {
        false
    }

    /// A stage downstream of seed-using stages that reads every seed's results at once (a
    /// report of the spread) rather than running once per seed of a sweep (`run --seeds`).
    fn aggregates_seeds(&self) -> bool {
        false
    }

    /// Whether the stage can run in shards (`run STAGE --shard I/N`): its outputs are chunks
    /// of independent work units (images) in a fixed order, and it computes only the units of
    /// `StageContext::shard`'s range when one is set (see [`crate::Shard::range`]). The
    /// gather concatenates the shards' chunks in shard order and merges their metadata with
    /// [`Stage::merge_shard_meta`]: the result must equal an unsharded run's, byte for byte.
    fn shardable(&self) -> bool {
        false
    }

    /// The metadata of output `output` of an unsharded run, from its shards' (in shard
    /// order). The default requires every shard to carry the same metadata.
    fn merge_shard_meta(
        &self,
        output: &str,
        parts: &[BTreeMap<String, Value>],
    ) -> Result<BTreeMap<String, Value>, BoxError> {
        let first = parts.first().ok_or("no shards to gather")?;
        if let Some(i) = parts.iter().position(|p| p != first) {
            return Err(format!(
                "output `{output}`: shard {i} carries other metadata than shard 0; this stage's shards cannot be gathered"
            )
            .into());
        }
        Ok(first.clone())
    }

    /// What the stage needs by default (`resources` in `pipeline.toml` overrides it): every
    /// core unless the stage says otherwise.
    fn resources(&self) -> Resources {
        Resources::default()
    }

    /// Called before planning when an external input points at a missing path. A stage that
    /// can obtain it (e.g. by downloading) does so and returns `Ok(true)`; the default reports
    /// it missing.
    fn provide_input(&self, _missing: &MissingInput<'_>) -> Result<bool, BoxError> {
        Ok(false)
    }

    /// Checks what a gather of this stage's shards put together (`outputs`, the unsharded
    /// run's artifacts) against the stage's upstream artifacts (`inputs`, keyed
    /// `stage.output`), before it is recorded: a shard record that parses but dropped,
    /// repeated or reordered a unit of work must not become a result. The default checks
    /// nothing.
    fn check_gathered(&self, _outputs: &Artifacts, _inputs: &Artifacts, _store: &Store) -> Checked {
        Ok(())
    }

    /// How many input files a completed run `rec` of this stage skipped (unreadable or
    /// unusable ones it left out and listed in its outputs), for `status`. The stage knows
    /// where it lists them; the default is none.
    fn skipped_inputs(&self, _rec: &RunRecord) -> usize {
        0
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError>;
}

/// A [`Stage`] with its params type erased, as the runner holds it (a registry mixes stages
/// of every params type). Implemented for every `Stage`; see there for each method.
pub trait AnyStage: Send + Sync {
    fn id(&self) -> &'static str;
    fn code_version(&self) -> String;
    fn outputs(&self) -> &'static [&'static str];
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String>;
    fn uses_seed(&self, settings: &BTreeMap<String, Option<PathBuf>>) -> bool;
    fn uses_device(&self) -> bool;
    fn aggregates_seeds(&self) -> bool;
    fn shardable(&self) -> bool;
    fn merge_shard_meta(
        &self,
        output: &str,
        parts: &[BTreeMap<String, Value>],
    ) -> Result<BTreeMap<String, Value>, BoxError>;
    fn resources(&self) -> Resources;
    fn provide_input(&self, missing: &MissingInput<'_>) -> Result<bool, BoxError>;
    fn check_gathered(&self, outputs: &Artifacts, inputs: &Artifacts, store: &Store) -> Checked;
    fn skipped_inputs(&self, rec: &RunRecord) -> usize;
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError>;
}

impl<S: Stage> AnyStage for S {
    fn id(&self) -> &'static str {
        Stage::id(self)
    }
    fn code_version(&self) -> String {
        Stage::code_version(self)
    }
    fn outputs(&self) -> &'static [&'static str] {
        Stage::outputs(self)
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String> {
        Stage::resolve_params(self, raw)
    }
    fn uses_seed(&self, settings: &BTreeMap<String, Option<PathBuf>>) -> bool {
        Stage::uses_seed(self, settings)
    }
    fn uses_device(&self) -> bool {
        Stage::uses_device(self)
    }
    fn aggregates_seeds(&self) -> bool {
        Stage::aggregates_seeds(self)
    }
    fn shardable(&self) -> bool {
        Stage::shardable(self)
    }
    fn merge_shard_meta(
        &self,
        output: &str,
        parts: &[BTreeMap<String, Value>],
    ) -> Result<BTreeMap<String, Value>, BoxError> {
        Stage::merge_shard_meta(self, output, parts)
    }
    fn resources(&self) -> Resources {
        Stage::resources(self)
    }
    fn provide_input(&self, missing: &MissingInput<'_>) -> Result<bool, BoxError> {
        Stage::provide_input(self, missing)
    }
    fn check_gathered(&self, outputs: &Artifacts, inputs: &Artifacts, store: &Store) -> Checked {
        Stage::check_gathered(self, outputs, inputs, store)
    }
    fn skipped_inputs(&self, rec: &RunRecord) -> usize {
        Stage::skipped_inputs(self, rec)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        Stage::run(self, ctx)
    }
}

/// Checked params with a validation step beyond their types.
pub trait Validate {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Typed params -> canonical JSON, in one step: deserialise the table into `P`, validate, and
/// serialise back with every default filled in. A key of the table that `P` does not
/// serialise back is refused as unknown, so params may use `#[serde(flatten)]` (which
/// `deny_unknown_fields` does not support) and still reject typos.
pub fn resolve_params<P>(raw: &toml::Table) -> Result<Value, String>
where
    P: DeserializeOwned + Serialize + Validate,
{
    let p: P = toml::Value::Table(raw.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    p.validate()?;
    let v = serde_json::to_value(&p).map_err(|e| e.to_string())?;
    if let Value::Object(m) = &v {
        if let Some(k) = raw.keys().find(|k| !m.contains_key(k.as_str())) {
            return Err(format!(
                "unknown field `{k}`, expected one of {}",
                m.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(v)
}
