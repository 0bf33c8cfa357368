//! Core of the build-graph runner.
//!
//! This crate owns everything that is not machine learning: the [`Stage`] trait that every
//! stage crate implements, the content-addressed artifact [`Store`] (safetensors blobs named by
//! blake3 digests, run records written last), cache keys and dirty reasons, the planner and
//! scheduler ([`run`]), the `pipeline.toml` [`Config`] with command-line overrides, and the CLI
//! ([`cli::main`]) that `xtask` wraps around the registry of real stages.
//!
//! Design decisions:
//! - A stage's key is a blake3 hash over the stage id, its code identity (a build-time source
//!   hash), its resolved params (canonical JSON), the digests of its input artifacts and
//!   external inputs, the seed and the device. Never mtimes or absolute paths.
//! - An artifact's digest covers tensor contents and artifact metadata, not the run that made
//!   it: a rerun that reproduces the same bytes leaves its downstream fresh (early cutoff).
//! - Blobs are immutable once stored; readers memory-map them ([`store::map_blob`] holds the
//!   only `unsafe`). Every blob is verified against its digest before a stage reads it.
//! - A run record is written after all outputs are durable; a stage that dies leaves no record,
//!   so the next run redoes it and nothing after the last completed stage is trusted.

mod artifact;
pub mod cli;
mod config;
mod context;
mod hash;
mod plan;
mod progress;
mod run;
mod stage;
pub mod store;
mod tensor;

pub use artifact::{Artifact, Chunk, ChunkRef, InputArtifact, ReadError, TensorInfo};
pub use config::{Config, ConfigError, StageConfig};
pub use context::{OutputWriter, StageContext};
pub use hash::{canonical_json, KeyInputs};
pub use plan::{plan, skipped_count, Plan, PlanEntry, Registry, StageState};
pub use progress::Progress;
pub use run::{run, RunOptions, RunSummary, StageOutcome};
pub use stage::{resolve_params, BoxError, Stage, Validate};
pub use store::{RunRecord, Store, StoreError};
pub use tensor::{Dtype, Tensor};
