//! Core of the build-graph runner.
//!
//! This crate owns everything that is not machine learning and not terminal UI: the [`Stage`]
//! trait that every stage crate implements, the content-addressed artifact [`Store`]
//! (safetensors blobs named by blake3 digests, run records written last), cache keys and dirty
//! reasons, the planner and the scheduler ([`run`]), [`verify`], and the `pipeline.toml`
//! [`Config`] with command-line overrides. It returns typed errors and reports progress only
//! through a [`Reporter`] that the caller supplies; the command line lives in the `cli` crate.
//!
//! Design decisions:
//! - A stage's key is a blake3 hash over the stage id, its code identity (a build-time source
//!   hash), its resolved params (canonical JSON), the digests of its input artifacts and
//!   external inputs, the seed and the device. Never mtimes or absolute paths.
//! - An artifact's digest covers tensor contents and artifact metadata, not the run that made
//!   it: a rerun that reproduces the same bytes leaves its downstream fresh (early cutoff).
//! - Blobs are immutable once stored; readers memory-map them (the store's `map_blob` holds
//!   the only `unsafe` of the store). Every blob is verified against its digest before a stage
//!   reads it, and float outputs are checked to be finite before they are stored.
//! - A run record is written after all outputs are durable; a stage that dies leaves no record,
//!   so the next run redoes it and nothing after the last completed stage is trusted.
//! - Each stage runs on a thread pool of its own, sized by its [`Resources`]; stages run side
//!   by side only while their threads fit the run's CPU budget.
//!
//! Modules depend on each other in one direction only: `error`, `tensor`, `clock`, `fsutil`,
//! `resources` and `artifact` are leaves; `digest`, `key`, `statcache`, `record`, `remote`,
//! `backend`, `lease`, `shard`, `store`, `chunk`, `progress`, `context`, `stage`, `config`,
//! `plan`, `run`, `verify` build on them in that order.

mod artifact;
mod backend;
mod chunk;
mod clock;
mod config;
mod context;
mod digest;
mod error;
mod fsutil;
mod key;
mod lease;
mod plan;
mod progress;
mod record;
mod remote;
mod resources;
mod rng;
mod run;
mod shard;
mod stage;
mod statcache;
mod store;
mod tensor;
mod usage;
pub use usage::release_freed_memory;
mod verify;

pub use artifact::{Artifact, Artifacts, ChunkRef, TensorInfo};
pub use chunk::{Chunk, InputArtifact, ReadError};
pub use clock::{format_unix, now_ms};
pub use config::{Config, StageConfig, DEVICES};
pub use context::{OutputWriter, StageContext};
pub use digest::canonical_json;
pub use error::{BoxError, ConfigError, Error, StoreError};
pub use fsutil::write_atomic;
pub use key::{join_reasons, InputChange, KeyInputs, StaleReason};
pub use lease::{Lease, LeaseInfo, HEARTBEAT, LEASE_TTL};
pub use plan::{check, plan, Plan, PlanEntry, Registry, StageState};
pub use progress::{Bar, BarSink, Progress, Reporter, Silent};
pub use record::{RunRecord, Usage};
pub use resources::{parse_bytes, Cpus, Resources};
pub use rng::SplitMix64;
pub use run::{run, RunOptions, RunSummary, StageOutcome};
pub use shard::{Shard, MAX_SHARDS};
pub use stage::{resolve_params, AnyStage, Checked, MissingInput, Stage, Validate};
pub use store::{LastRun, ShardFailure, Store, StoreLock, TimelineEntry};
pub use tensor::{Dtype, Tensor};
pub use verify::{verify, BlobProblem, VerifyReport};
