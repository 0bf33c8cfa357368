//! `pipeline.toml`: stages, their dependencies and params, external inputs, global settings.
//!
//! ```toml
//! cache = "data/cache"   # artifact store
//! seed = 1
//! threads = 0            # 0 = all cores
//! device = "cpu"
//! jobs = 2               # stages run at once (exclusive stages always alone)
//! [dataset]
//! root = ""              # empty: the embedded synthetic dataset
//! [weights]
//! path = "data/weights/vgg16_notop.safetensors"
//! [report]
//! out = "data/report"
//! [stage.loader]
//! needs = []
//! inputs = ["dataset.root"]
//! params = { on_bad_file = "skip" }
//! ```
//! `--set KEY=VALUE` edits the document before it is read, exactly as editing the file would.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// A configuration error, with the place in the file where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_cache")]
    cache: String,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default)]
    threads: usize,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_jobs")]
    jobs: usize,
    #[serde(default)]
    dataset: DatasetSection,
    #[serde(default)]
    weights: WeightsSection,
    #[serde(default)]
    report: ReportSection,
    #[serde(default)]
    stage: BTreeMap<String, Spanned<RawStage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetSection {
    #[serde(default)]
    root: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsSection {
    #[serde(default = "default_weights")]
    path: String,
}

impl Default for WeightsSection {
    fn default() -> Self {
        WeightsSection {
            path: default_weights(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportSection {
    #[serde(default = "default_report")]
    out: String,
}

impl Default for ReportSection {
    fn default() -> Self {
        ReportSection {
            out: default_report(),
        }
    }
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
}

fn default_cache() -> String {
    "data/cache".into()
}
fn default_seed() -> u64 {
    1
}
fn default_device() -> String {
    "cpu".into()
}
fn default_jobs() -> usize {
    2
}
fn default_weights() -> String {
    "data/weights/vgg16_notop.safetensors".into()
}
fn default_report() -> String {
    "data/report".into()
}

/// One stage's entry.
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub id: String,
    pub needs: Vec<String>,
    /// Names of path settings (`dataset.root`, `weights.path`) whose content is an input.
    pub inputs: Vec<String>,
    pub params: toml::Table,
    /// Where the stage and its params are declared, for error messages.
    pub(crate) stage_pos: Option<(usize, usize)>,
    pub(crate) params_pos: Option<(usize, usize)>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pipeline file as given (for messages).
    pub file: String,
    /// Folder that relative paths are resolved against: the pipeline file's.
    pub base: PathBuf,
    pub cache: PathBuf,
    pub seed: u64,
    pub threads: usize,
    pub device: String,
    pub jobs: usize,
    /// Path settings by name; empty string = unset.
    pub settings: BTreeMap<String, String>,
    /// In topological order (dependencies first, ties by name).
    pub stages: Vec<StageConfig>,
}

/// Settings that name files or folders.
pub const PATH_SETTINGS: &[&str] = &["dataset.root", "weights.path", "report.out"];

impl Config {
    /// Reads `file`, applies `overrides` (`KEY=VALUE`), and validates.
    pub fn load(file: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
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
        Config::parse(&name, &text, &base, overrides)
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
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            err(
                e.span().map(|s| line_col(&text, s.start)),
                e.message().trim().to_string(),
            )
        })?;

        if raw.jobs == 0 {
            return Err(err(None, "`jobs` must be at least 1".into()));
        }
        let mut settings = BTreeMap::new();
        settings.insert("dataset.root".to_string(), raw.dataset.root);
        settings.insert("weights.path".to_string(), raw.weights.path);
        settings.insert("report.out".to_string(), raw.report.out);

        let mut stages = BTreeMap::new();
        for (id, st) in &raw.stage {
            let pos = Some(line_col(&text, st.span().start));
            let s = st.get_ref();
            let mut needs = Vec::new();
            for n in &s.needs {
                if !raw.stage.contains_key(n.get_ref()) {
                    return Err(err(
                        Some(line_col(&text, n.span().start)),
                        format!("stage `{id}` needs unknown stage `{}`", n.get_ref()),
                    ));
                }
                needs.push(n.get_ref().clone());
            }
            let mut inputs = Vec::new();
            for i in &s.inputs {
                if !PATH_SETTINGS.contains(&i.get_ref().as_str()) {
                    return Err(err(
                        Some(line_col(&text, i.span().start)),
                        format!(
                            "stage `{id}` has unknown input `{}` (known: {})",
                            i.get_ref(),
                            PATH_SETTINGS.join(", ")
                        ),
                    ));
                }
                inputs.push(i.get_ref().clone());
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
                    stage_pos: pos,
                    params_pos: s.params.as_ref().map(|p| line_col(&text, p.span().start)),
                },
            );
        }
        let order = topo_order(&stages).map_err(|cycle| {
            let pos = stages.get(&cycle[0]).and_then(|s| s.stage_pos);
            err(pos, format!("dependency cycle: {}", cycle.join(" -> ")))
        })?;
        let stages = order
            .into_iter()
            .map(|id| stages.remove(&id).expect("ordered ids exist"))
            .collect();
        let cache = base.join(&raw.cache);
        Ok(Config {
            file: label,
            base: base.to_path_buf(),
            cache,
            seed: raw.seed,
            threads: raw.threads,
            device: raw.device,
            jobs: raw.jobs,
            settings,
            stages,
        })
    }

    pub fn stage(&self, id: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// A path setting resolved against the pipeline file's folder; `None` when empty.
    pub fn setting_path(&self, name: &str) -> Option<PathBuf> {
        self.settings
            .get(name)
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

fn apply_override(doc: &mut toml_edit::DocumentMut, spec: &str) -> Result<(), String> {
    let (key, value) = spec.split_once('=').ok_or("expected KEY=VALUE")?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(format!("malformed key `{key}`"));
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
