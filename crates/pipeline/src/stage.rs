//! The trait every stage implements.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::context::StageContext;

/// Errors crossing the stage boundary: each stage crate has its own error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stage of the pipeline. Stages never call each other: they read upstream artifacts and
/// write their own through the [`StageContext`].
pub trait Stage: Send + Sync {
    /// The stage id, as in `pipeline.toml` (kebab-case, equal to the crate name).
    fn id(&self) -> &'static str;

    /// Identity of the stage's code: the build-time source hash plus the stage's
    /// `CACHE_VERSION`. Changing it makes the stage rerun.
    fn code_version(&self) -> String;

    /// Names of the artifacts the stage writes.
    fn outputs(&self) -> &'static [&'static str];

    /// Validates the params table from `pipeline.toml` and returns them with defaults applied,
    /// as JSON (the canonical form that goes into the key). See [`resolve_params`].
    fn resolve_params(&self, raw: &toml::Table) -> Result<Value, String>;

    /// A stage that uses every core (and much memory) runs alone, never beside another.
    fn exclusive(&self) -> bool {
        false
    }

    /// Called before planning when the external input `setting` points at a missing path.
    /// A stage that can obtain it (e.g. by downloading) does so and returns `Ok(true)`;
    /// the default reports it missing.
    fn provide_input(&self, _setting: &str, _path: &Path, _quiet: bool) -> Result<bool, BoxError> {
        Ok(false)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError>;
}

/// Checked params with a validation step beyond their types.
pub trait Validate {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Typed params -> canonical JSON, in one step: deserialise the table into `P` (which should
/// use `#[serde(deny_unknown_fields, default)]`), validate, and serialise back with every
/// default filled in.
pub fn resolve_params<P>(raw: &toml::Table) -> Result<Value, String>
where
    P: DeserializeOwned + Serialize + Validate,
{
    let p: P = toml::Value::Table(raw.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    p.validate()?;
    serde_json::to_value(&p).map_err(|e| e.to_string())
}
