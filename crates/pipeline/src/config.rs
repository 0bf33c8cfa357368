//! `pipeline.toml`: stages, their dependencies, params and resources, external inputs, and
//! settings.
//!
//! ```toml
//! cache = "data/cache"   # artifact store: a folder, or "s3://bucket/prefix"
//! local_cache = "..."    # an S3 cache's local tier (default data/s3-cache/<bucket>/<prefix>)
//! [s3]                   # optional S3 settings over the AWS environment: endpoint, region, ...
//! seed = 1
//! threads = 0            # the run's CPU budget; 0 = all cores
//! device = "cpu"
//! jobs = 2               # stages run at once (as far as their cpus fit the budget)
//! [dataset]              # any other table holds settings: `dataset.root` below
//! root = ""
//! [stage.loader]
//! needs = []
//! inputs = ["dataset.root"]          # settings naming files or folders the stage reads
//! params = { on_bad_file = "skip" }
//! resources = { cpus = 1 }
//! ```
//! The core knows settings only as a table of dotted names (`dataset.root`); what they mean
//! is up to the stages and tools that read them. `--set KEY=VALUE` edits the document before it
//! is read, exactly as editing the file would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use crate::error::ConfigError;
use crate::resources::Resources;

/// Top-level keys that are not settings tables.
const KNOWN_KEYS: [&str; 7] = [
    "cache",
    "seed",
    "threads",
    "device",
    "jobs",
    "local_cache",
    "stage",
];

/// Devices this build can run stages on.
pub const DEVICES: [&str; 1] = ["cpu"];

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default = "default_cache")]
    cache: String,
    #[serde(default)]
    local_cache: Option<String>,
    #[serde(default = "default_seed", deserialize_with = "seed_value")]
    seed: u64,
    #[serde(default)]
    threads: usize,
    #[serde(default = "default_device")]
    device: Spanned<String>,
    #[serde(default = "default_jobs")]
    jobs: usize,
    #[serde(default)]
    stage: BTreeMap<String, Spanned<RawStage>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    #[serde(default)]
    params: Option<Spanned<toml::Table>>,
    #[serde(default)]
    resources: Option<Spanned<toml::Table>>,
}

/// A seed: any u64. TOML integers stop at i64::MAX, so a larger seed is also accepted as a
/// string of digits (`--set seed=18446744073709551615` arrives as one), as `--seeds` accepts
/// it.
fn seed_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seed {
        Int(i64),
        Text(String),
    }
    let bad = || {
        serde::de::Error::custom(format!(
            "`seed` must be a whole number from 0 to {}",
            u64::MAX
        ))
    };
    match Seed::deserialize(d).map_err(|_: D::Error| bad())? {
        Seed::Int(i) => u64::try_from(i).map_err(|_| bad()),
        Seed::Text(t) => t.trim().parse::<u64>().map_err(|_| bad()),
    }
}

fn default_cache() -> String {
    "data/cache".into()
}
fn default_seed() -> u64 {
    1
}
fn default_device() -> Spanned<String> {
    Spanned::new(0..0, "cpu".into())
}
fn default_jobs() -> usize {
    2
}

/// One stage's entry.
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub id: String,
    pub needs: Vec<String>,
    /// Names of settings (`dataset.root`, `weights.path`) naming files or folders whose content
    /// is an input of the stage.
    pub inputs: Vec<String>,
    pub params: toml::Table,
    /// The `resources` table, if the file has one (applied over the stage's own defaults).
    pub resources: Option<toml::Table>,
    /// Where the stage and its params are declared, for error messages.
    pub(crate) stage_pos: Option<(usize, usize)>,
    pub(crate) params_pos: Option<(usize, usize)>,
    pub(crate) resources_pos: Option<(usize, usize)>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pipeline file as given (for messages).
    pub file: String,
    /// Folder that relative paths are resolved against: the pipeline file's.
    pub base: PathBuf,
    /// The cache folder; for an S3 cache, its local tier (read-through copies of blobs, temp
    /// files, the stat cache).
    pub cache: PathBuf,
    /// `s3://bucket/prefix` when the cache is in a bucket.
    pub remote: Option<String>,
    pub seed: u64,
    /// The run's CPU budget; 0 = all cores (see [`Config::cpu_budget`]).
    pub threads: usize,
    pub device: String,
    pub jobs: usize,
    /// Every value of every table other than `stage`, by dotted name (`dataset.root`).
    pub settings: BTreeMap<String, toml::Value>,
    /// In topological order (dependencies first, ties by name).
    pub stages: Vec<StageConfig>,
}

fn flatten_settings(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in t {
        let name = format!("{prefix}.{k}");
        match v {
            toml::Value::Table(sub) => flatten_settings(&name, sub, out),
            other => {
                out.insert(name, other.clone());
            }
        }
    }
}

impl Config {
    /// Opens the configured cache: its folder, or its bucket (with the AWS environment) and
    /// local tier.
    /// The settings of an `[s3]` table (`endpoint`, `region`, ... as `object_store` names
    /// them) apply over the environment.
    pub fn open_store(&self) -> Result<crate::Store, crate::StoreError> {
        match &self.remote {
            Some(url) => {
                let options: Vec<(String, String)> = self
                    .settings
                    .iter()
                    .filter_map(|(k, v)| {
                        let key = k.strip_prefix("s3.")?;
                        let value = match v {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        Some((key.to_string(), value))
                    })
                    .collect();
                crate::Store::open_s3(&self.cache, url, &options)
            }
            None => crate::Store::open(&self.cache),
        }
    }

    /// The cache as the user configured it (a folder or an `s3://` URL), for messages.
    pub fn cache_label(&self) -> String {
        match &self.remote {
            Some(url) => url.clone(),
            None => self.cache.display().to_string(),
        }
    }

    /// Reads `file`, applies `overrides` (`KEY=VALUE`), and validates.
    pub fn load(file: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        Config::load_with_paths(file, overrides, &[])
    }

    /// [`Config::load`], where the caller names more settings that hold paths (beyond `cache`,
    /// `local_cache` and the stages' declared inputs), e.g. a folder it writes after a run:
    /// a relative `--set` of one of them is relative to the current directory.
    pub fn load_with_paths(
        file: &Path,
        overrides: &[String],
        path_settings: &[&str],
    ) -> Result<Config, ConfigError> {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: name.clone(),
            position: None,
            message: format!("cannot read the pipeline file: {e}"),
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let overrides = rebase_overrides(&text, &base, overrides, path_settings);
        Config::parse(&name, &text, &base, &overrides)
    }

    pub fn parse(
        file: &str,
        text: &str,
        base: &Path,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let err = |pos: Option<(usize, usize)>, message: String| ConfigError {
            file: file.to_string(),
            position: pos,
            message,
        };
        let (text, label) = if overrides.is_empty() {
            (text.to_string(), file.to_string())
        } else {
            let mut doc: toml_edit::DocumentMut =
                text.parse().map_err(|e: toml_edit::TomlError| {
                    err(
                        e.span().map(|s| line_col(text, s.start)),
                        e.message().to_string(),
                    )
                })?;
            for o in overrides {
                apply_override(&mut doc, o).map_err(|m| err(None, format!("--set {o}: {m}")))?;
            }
            (doc.to_string(), format!("{file} (with --set)"))
        };
        let err = |pos: Option<(usize, usize)>, message: String| ConfigError {
            file: label.clone(),
            position: pos,
            message,
        };
        let parse_err = |e: toml::de::Error| {
            err(
                e.span().map(|s| line_col(&text, s.start)),
                e.message().trim().to_string(),
            )
        };
        // Pass 1: the document as a table: every table but `stage` holds settings; any other
        // top-level value must be one of the known keys.
        let table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
        let mut settings = BTreeMap::new();
        for (k, v) in &table {
            match v {
                toml::Value::Table(t) if k != "stage" => flatten_settings(k, t, &mut settings),
                _ if KNOWN_KEYS.contains(&k.as_str()) => {}
                _ => {
                    return Err(err(
                        None,
                        format!(
                            "unknown setting `{k}` (known: {}; other settings belong in a table such as `[dataset]`)",
                            KNOWN_KEYS[..6].join(", ")
                        ),
                    ))
                }
            }
        }
        // Pass 2: the known keys and the stages, with positions for messages.
        let raw: RawConfig = toml::from_str(&text).map_err(parse_err)?;

        if raw.jobs == 0 {
            return Err(err(None, "`jobs` must be at least 1".into()));
        }
        if !DEVICES.contains(&raw.device.get_ref().as_str()) {
            let pos = (raw.device.span().end > 0).then(|| line_col(&text, raw.device.span().start));
            return Err(err(
                pos,
                format!(
                    "device `{}` is not supported: this build runs every stage on the CPU (device = \"cpu\")",
                    raw.device.get_ref()
                ),
            ));
        }
        let path_like: Vec<&String> = settings
            .iter()
            .filter(|(_, v)| v.is_str())
            .map(|(k, _)| k)
            .collect();

        let mut stages = stage_configs(&raw.stage, &text, &path_like, &err)?;
        let order = topo_order(&stages).map_err(|cycle| {
            let pos = stages.get(&cycle[0]).and_then(|s| s.stage_pos);
            err(pos, format!("dependency cycle: {}", cycle.join(" -> ")))
        })?;
        let stages = order
            .into_iter()
            .map(|id| stages.remove(&id).expect("ordered ids exist"))
            .collect();
        let (cache, remote) = cache_location(&raw.cache, raw.local_cache.as_deref(), base)
            .map_err(|m| err(None, m))?;
        Ok(Config {
            file: label,
            base: base.to_path_buf(),
            cache,
            remote,
            seed: raw.seed,
            threads: raw.threads,
            device: raw.device.into_inner(),
            jobs: raw.jobs,
            settings,
            stages,
        })
    }

    pub fn stage(&self, id: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// The run's CPU budget: `threads`, or every core when it is 0.
    pub fn cpu_budget(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.threads
        }
    }

    /// A setting's value as text (`None` when absent or not a string).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).and_then(|v| v.as_str())
    }

    /// A path setting resolved against the pipeline file's folder; `None` when empty or absent.
    pub fn setting_path(&self, name: &str) -> Option<PathBuf> {
        self.setting(name)
            .filter(|v| !v.is_empty())
            .map(|v| self.base.join(v))
    }

    /// Error helper for a stage's params.
    pub fn params_error(&self, stage: &str, message: &str) -> ConfigError {
        let pos = self.stage(stage).and_then(|s| s.params_pos.or(s.stage_pos));
        ConfigError {
            file: self.file.clone(),
            position: pos,
            message: format!("stage `{stage}` params: {message}"),
        }
    }

    pub fn stage_error(&self, stage: &str, message: String) -> ConfigError {
        let pos = self.stage(stage).and_then(|s| s.stage_pos);
        ConfigError {
            file: self.file.clone(),
            position: pos,
            message,
        }
    }

    /// The resources of `stage`: the stage's own defaults with the file's table applied.
    pub fn resources(&self, stage: &str, defaults: Resources) -> Result<Resources, ConfigError> {
        let Some(sc) = self.stage(stage) else {
            return Ok(defaults);
        };
        match &sc.resources {
            None => Ok(defaults),
            Some(t) => defaults.with_table(t).map_err(|m| ConfigError {
                file: self.file.clone(),
                position: sc.resources_pos,
                message: format!("stage `{stage}`: {m}"),
            }),
        }
    }

    /// Ids of stages that (transitively) depend on `id`.
    pub fn downstream(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.stages {
            if s.needs.iter().any(|n| n == id || out.contains(n)) {
                out.push(s.id.clone());
            }
        }
        out
    }

    /// `id` and everything it (transitively) needs, in topological order.
    pub fn upstream_closure(&self, ids: &[String]) -> Vec<String> {
        let mut want: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
        for s in self.stages.iter().rev() {
            if want.contains(&s.id) {
                want.extend(s.needs.iter().cloned());
            }
        }
        self.stages
            .iter()
            .filter(|s| want.contains(&s.id))
            .map(|s| s.id.clone())
            .collect()
    }
}

fn topo_order(stages: &BTreeMap<String, StageConfig>) -> Result<Vec<String>, Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        id: &str,
        stages: &BTreeMap<String, StageConfig>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Vec<String>> {
        match marks[id] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = stack
                    .iter()
                    .position(|s| s == id)
                    .expect("active ids are on the stack");
                let mut cycle = stack[start..].to_vec();
                cycle.push(id.to_string());
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks.insert(id.to_string(), Mark::Active);
        stack.push(id.to_string());
        for n in &stages[id].needs {
            visit(n, stages, marks, stack, out)?;
        }
        stack.pop();
        marks.insert(id.to_string(), Mark::Done);
        out.push(id.to_string());
        Ok(())
    }
    let mut marks: BTreeMap<String, Mark> = stages.keys().map(|k| (k.clone(), Mark::New)).collect();
    let mut out = Vec::new();
    for id in stages.keys() {
        visit(id, stages, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before[i + 1..].chars().count() + 1)
        .unwrap_or(before.chars().count() + 1);
    (line, col)
}

/// Dotted names of every value outside `stage` tables.
fn setting_names(item: &toml_edit::Item, prefix: &str, out: &mut Vec<String>) {
    if let Some(t) = item.as_table_like() {
        for (k, v) in t.iter() {
            let name = if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            };
            if name == "stage" {
                continue;
            }
            if v.is_table_like() {
                setting_names(v, &name, out);
            } else {
                out.push(name);
            }
        }
    }
}

/// Where the cache lives: a folder (relative to `base`), or an `s3://bucket/prefix` URL with
/// its local tier (`local_cache`, default `data/s3-cache/<bucket>/<prefix>` under `base`).
/// Anything that looks like a URL but is not an `s3://` one is refused, never taken for a
/// folder (`s3:/x` would otherwise create `./s3:/x`).
fn cache_location(
    cache: &str,
    local_cache: Option<&str>,
    base: &Path,
) -> Result<(PathBuf, Option<String>), String> {
    const FORMS: &str = "a cache is a folder or s3://bucket/prefix";
    if cache.contains("://") {
        let (bucket, prefix) =
            crate::remote::parse_url(cache).map_err(|m| format!("cache: {m} ({FORMS})"))?;
        let local = match local_cache {
            Some(l) => base.join(l),
            None => base.join("data/s3-cache").join(&bucket).join(&prefix),
        };
        return Ok((local, Some(cache.to_string())));
    }
    if let Some(scheme) = url_scheme(cache) {
        return Err(format!(
            "cache: `{cache}` looks like a URL (`{scheme}:`) but is not one that is supported ({FORMS}; a folder whose name has a colon: write it as ./{cache})"
        ));
    }
    if local_cache.is_some() {
        return Err("local_cache is the local tier of an S3 cache, but cache is a folder".into());
    }
    Ok((base.join(cache), None))
}

/// The scheme of a value that starts like a URL (`s3:/x`, `s3:bucket`, `https:x`): letters,
/// digits, `+`, `-` or `.` after a letter, at least two characters, then a colon.
fn url_scheme(value: &str) -> Option<&str> {
    let (scheme, _) = value.split_once(':')?;
    let mut chars = scheme.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (starts && rest && scheme.len() >= 2).then_some(scheme)
}

/// The `[stage.*]` tables checked (known upstreams, declared inputs that are path settings of
/// the file, valid resources), with their positions in `text` for messages.
fn stage_configs(
    raw: &BTreeMap<String, Spanned<RawStage>>,
    text: &str,
    path_like: &[&String],
    err: &dyn Fn(Option<(usize, usize)>, String) -> ConfigError,
) -> Result<BTreeMap<String, StageConfig>, ConfigError> {
    let mut stages = BTreeMap::new();
    for (id, st) in raw {
        let pos = Some(line_col(text, st.span().start));
        let s = st.get_ref();
        let mut needs = Vec::new();
        for n in &s.needs {
            if !raw.contains_key(n.get_ref()) {
                return Err(err(
                    Some(line_col(text, n.span().start)),
                    format!("stage `{id}` needs unknown stage `{}`", n.get_ref()),
                ));
            }
            needs.push(n.get_ref().clone());
        }
        let mut inputs = Vec::new();
        for i in &s.inputs {
            if !path_like.contains(&i.get_ref()) {
                return Err(err(
                    Some(line_col(text, i.span().start)),
                    format!(
                        "stage `{id}` has input `{}`, which is not a setting of this file (path settings: {})",
                        i.get_ref(),
                        path_like.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            inputs.push(i.get_ref().clone());
        }
        if let Some(r) = &s.resources {
            Resources::default().with_table(r.get_ref()).map_err(|m| {
                err(
                    Some(line_col(text, r.span().start)),
                    format!("stage `{id}`: {m}"),
                )
            })?;
        }
        stages.insert(
            id.clone(),
            StageConfig {
                id: id.clone(),
                needs,
                inputs,
                params: s
                    .params
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_default(),
                resources: s.resources.as_ref().map(|r| r.get_ref().clone()),
                stage_pos: pos,
                params_pos: s.params.as_ref().map(|p| line_col(text, p.span().start)),
                resources_pos: s.resources.as_ref().map(|p| line_col(text, p.span().start)),
            },
        );
    }
    Ok(stages)
}

/// Paths typed on the command line are relative to the current directory, as in any command:
/// for a pipeline file in another folder (`--config other/p.toml`), a relative path given by
/// `--set` to a path setting (`cache`, `local_cache`, every setting a stage declares in
/// `inputs`, and the caller's `path_settings`) is made relative to the current directory; paths
/// in the file stay relative to the file's folder. With the file in the current directory
/// nothing changes.
fn rebase_overrides(
    text: &str,
    base: &Path,
    overrides: &[String],
    path_settings: &[&str],
) -> Vec<String> {
    let cwd = std::env::current_dir().ok();
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let Some(cwd) = cwd.filter(|c| !same(c, base)) else {
        return overrides.to_vec();
    };
    let mut paths: Vec<String> = ["cache", "local_cache"]
        .iter()
        .chain(path_settings)
        .map(|s| s.to_string())
        .collect();
    if let Ok(t) = toml::from_str::<toml::Table>(text) {
        if let Some(stages) = t.get("stage").and_then(toml::Value::as_table) {
            for st in stages.values() {
                let inputs = st.get("inputs").and_then(toml::Value::as_array);
                paths.extend(
                    inputs
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned)),
                );
            }
        }
    }
    overrides
        .iter()
        .map(|o| {
            let Some((k, v)) = o.split_once('=') else {
                return o.clone();
            };
            let raw = v.trim();
            let unquoted = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(raw);
            let relative = !unquoted.is_empty()
                && !unquoted.contains("://")
                && Path::new(unquoted).is_relative();
            if paths.iter().any(|p| p == k.trim()) && relative {
                let abs = cwd.join(unquoted);
                format!("{k}={}", toml_edit::Value::from(abs.display().to_string()))
            } else {
                o.clone()
            }
        })
        .collect()
}

fn apply_override(doc: &mut toml_edit::DocumentMut, spec: &str) -> Result<(), String> {
    let (key, value) = spec.split_once('=').ok_or("expected KEY=VALUE")?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("malformed key `{key}`"));
    }
    // Outside the stage tables, an override must name a setting the file has (or a known
    // top-level key): a mistyped `--set` is an error, never a setting nobody reads.
    if path[0] != "stage" && !(path.len() == 1 && KNOWN_KEYS.contains(&path[0])) {
        let mut names = Vec::new();
        setting_names(doc.as_item(), "", &mut names);
        if !names.iter().any(|n| n == key.trim()) {
            let known: Vec<String> = KNOWN_KEYS[..6]
                .iter()
                .map(|k| k.to_string())
                .chain(names.into_iter().filter(|n| n.contains('.')))
                .collect();
            return Err(format!(
                "the pipeline file has no setting `{}` (settings: {})",
                key.trim(),
                known.join(", ")
            ));
        }
    }
    let value = value.trim();
    // A TOML value if it parses as one (numbers, booleans, arrays, quoted strings), else a
    // bare string: `--set dataset.root=../x` needs no quotes.
    let v: toml_edit::Value = value
        .parse()
        .unwrap_or_else(|_| toml_edit::Value::from(value));
    set_path(doc.as_item_mut(), &path, v)
}

fn set_path(item: &mut toml_edit::Item, path: &[&str], v: toml_edit::Value) -> Result<(), String> {
    let t = item
        .as_table_like_mut()
        .ok_or_else(|| format!("`{}` is not a table", path[0]))?;
    if path.len() == 1 {
        t.insert(path[0], toml_edit::Item::Value(v));
        return Ok(());
    }
    if t.get(path[0]).is_none() {
        let mut nt = toml_edit::Table::new();
        nt.set_implicit(true);
        t.insert(path[0], toml_edit::Item::Table(nt));
    }
    let child = t.get_mut(path[0]).expect("just inserted");
    if let toml_edit::Item::Value(toml_edit::Value::InlineTable(it)) = child {
        // Inline tables: edit through a regular table view and write back.
        let mut table = it.clone().into_table();
        let mut item = toml_edit::Item::Table(table.clone());
        set_path(&mut item, &path[1..], v)?;
        table = item.into_table().map_err(|_| "internal: not a table")?;
        *child = toml_edit::Item::Value(toml_edit::Value::InlineTable(table.into_inline_table()));
        return Ok(());
    }
    set_path(child, &path[1..], v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_paths_are_relative_to_the_current_directory_for_a_file_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[dataset]\nroot = \"\"\n[stage.a]\ninputs = [\"dataset.root\"]\n";
        let set: Vec<String> = [
            "dataset.root=photos",
            "cache=\"c\"",
            "cache=s3://bucket/p",
            "report.out=/abs/out",
            "executor.kind=slurm",
            "report.out=out",
            "report.reference=r.json",
            "stage.a.params.k=v",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = rebase_overrides(text, dir.path(), &set, &["report.out"]);
        let cwd = std::env::current_dir().unwrap();
        let quoted =
            |p: &str| toml_edit::Value::from(cwd.join(p).display().to_string()).to_string();
        assert_eq!(got[0], format!("dataset.root={}", quoted("photos")));
        assert_eq!(got[1], format!("cache={}", quoted("c")));
        assert_eq!(got[2..5], set[2..5]);
        // A path setting the caller names is rebased; other settings are not.
        assert_eq!(got[5], format!("report.out={}", quoted("out")));
        assert_eq!(got[6..], set[6..]);
        // With the file in the current directory, nothing changes.
        assert_eq!(rebase_overrides(text, &cwd, &set, &["report.out"]), set);
    }

    #[test]
    fn a_cache_that_looks_like_an_unsupported_url_is_refused() {
        let base = Path::new("/p");
        for bad in ["s3:/x", "s3:bucket/p", "https:/host/c", "gs:/b"] {
            let text = format!("cache = \"{bad}\"\n");
            let e = Config::parse("pipeline.toml", &text, base, &[]).unwrap_err();
            assert!(
                e.message.contains("is not one that is supported")
                    && e.message.contains("s3://bucket/prefix"),
                "{bad}: {}",
                e.message
            );
        }
        for good in ["data/cache", "./my:cache", "/abs/c", "c"] {
            let text = format!("cache = \"{good}\"\n");
            let c = Config::parse("pipeline.toml", &text, base, &[]).unwrap();
            assert_eq!(c.cache, base.join(good), "{good}");
            assert!(c.remote.is_none());
        }
        let e = Config::parse(
            "pipeline.toml",
            "cache = \"s3://Bad_Bucket/p\"\n",
            base,
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("is not a bucket name"), "{}", e.message);
    }

    #[test]
    fn a_seed_takes_every_u64_from_the_file_and_from_set() {
        let base = Path::new("/p");
        let set = |v: &str| vec![format!("seed={v}")];
        let c = Config::parse("p.toml", "seed = 1\n", base, &set("18446744073709551615")).unwrap();
        assert_eq!(c.seed, u64::MAX);
        let c = Config::parse("p.toml", "seed = 1\n", base, &set("7")).unwrap();
        assert_eq!(c.seed, 7);
        for bad in ["-1", "18446744073709551616", "1.5", "abc"] {
            let e = Config::parse("p.toml", "seed = 1\n", base, &set(bad)).unwrap_err();
            assert!(
                e.message
                    .contains("`seed` must be a whole number from 0 to 18446744073709551615"),
                "{bad}: {}",
                e.message
            );
        }
    }
}
