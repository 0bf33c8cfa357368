//! Helpers for the end-to-end tests: a temporary project with its own `pipeline.toml` and
//! cache, and the shared real data (`../shared`), found or skipped with a printed reason.

use std::path::{Path, PathBuf};

use pipeline::{Config, Progress, RunOptions, RunSummary};

pub use fixtures::shared;

/// A temporary project folder.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// `pipeline` is the text of `pipeline.toml`; the cache goes to `<dir>/cache`.
    pub fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).expect("write pipeline.toml");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self, set: &[&str]) -> Config {
        let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        Config::load(&self.path().join("pipeline.toml"), &set).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `targets` (empty = all) of the study's registry, quietly.
    pub fn run(&self, targets: &[&str], set: &[&str]) -> RunSummary {
        let opts = RunOptions {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.run_opts(opts, set)
    }

    /// Runs with the given options (targets, shard, gather), quietly; panics on failure.
    pub fn run_opts(&self, opts: RunOptions, set: &[&str]) -> RunSummary {
        let s = pipeline::run(
            &self.config(set),
            &xtask::registry(),
            &opts,
            &Progress::silent(),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        s.check().unwrap_or_else(|e| panic!("{e:#}"));
        s
    }

    pub fn store(&self) -> pipeline::Store {
        pipeline::Store::open(&self.path().join("cache")).expect("store")
    }

    /// The latest artifact `stage.output`.
    pub fn artifact(&self, stage: &str, output: &str) -> pipeline::Artifact {
        let rec = self
            .store()
            .latest(stage)
            .expect("store readable")
            .unwrap_or_else(|| panic!("{stage} never ran"));
        rec.outputs
            .get(output)
            .unwrap_or_else(|| panic!("{stage} has no output {output}"))
            .clone()
    }

    pub fn chunk(&self, a: &pipeline::Artifact, i: usize) -> pipeline::Chunk {
        pipeline::Chunk::open(&self.store(), &a.chunks[i]).expect("verified chunk")
    }
}

/// A dataset folder of symbolic links to the first `per_class` images of each class of each
/// split of `../shared/datasets/food101-10` (nothing is copied).
pub fn food_slice(shared: &Path, dest: &Path, per_class: usize) {
    let src = shared.join("datasets/food101-10");
    std::fs::copy(src.join("classes.txt"), dest.join("classes.txt")).expect("classes.txt");
    for split in ["training", "validation", "evaluation"] {
        std::fs::create_dir_all(dest.join(split)).expect("split dir");
        for c in 0..10 {
            for i in 0..per_class {
                let name = format!("{c}_{i}.jpg");
                let from = src.join(split).join(&name);
                if from.exists() {
                    std::os::unix::fs::symlink(&from, dest.join(split).join(&name))
                        .expect("symlink");
                }
            }
        }
    }
}

/// Renders an HTML file with headless Chromium. Returns (screenshot PNG path, serialised DOM),
/// or `None` with a printed reason when Chromium is not installed.
pub fn render_html(html: &Path, width: u32, height: u32) -> Option<(PathBuf, String)> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("REQUIRE_BROWSER").is_none(),
            "REQUIRE_BROWSER is set but no Chromium was found"
        );
        eprintln!("SKIPPED: no Chromium found (Debian: apt-get install chromium); the browser check did not run");
        return None;
    };
    let profile = tempfile::tempdir().expect("temp dir");
    let shot = html.with_extension("png");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let url = format!("file://{}", html.display());
    let run = |extra: &[String]| {
        let out = std::process::Command::new(chromium)
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        format!("--screenshot={}", shot.display()),
        format!("--window-size={width},{height}"),
    ]);
    let dom = run(&["--dump-dom".to_string()]);
    Some((shot, dom))
}
