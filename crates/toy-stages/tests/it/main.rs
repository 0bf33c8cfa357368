//! The runner's guarantees, each checked with toy stages through the real CLI binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use expect_test::expect;

const BASE: &str = r#"
cache = "cache"
jobs = 2

[stage.gen]
params = { n = 10, scale = 1.0 }

[stage.square]
needs = ["gen"]

[stage.sum]
needs = ["square"]

[stage.gen2]
params = { n = 4 }
"#;

struct Env {
    dir: tempfile::TempDir,
    /// Set for every command (the AWS settings of an S3 cache).
    vars: Vec<(&'static str, String)>,
}

impl Env {
    fn new(toml: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pipeline.toml"), toml).unwrap();
        Env {
            dir,
            vars: Vec::new(),
        }
    }
    /// A project whose cache is `url` (an S3 prefix), with its local tier in `local/`.
    fn s3(toml: &str, url: &str, vars: Vec<(&'static str, String)>) -> Env {
        let toml = toml.replace(
            "cache = \"cache\"",
            &format!("cache = \"{url}\"\nlocal_cache = \"local\""),
        );
        assert!(toml.contains("s3://"), "the template names its cache");
        let mut e = Env::new(&toml);
        e.vars = vars;
        e
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_toy-runner"));
        c.current_dir(self.path()).args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
    fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Out(c.output().unwrap())
    }
    fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert!(
            o.0.status.success(),
            "{args:?} failed:\n{}\n{}",
            o.stdout(),
            o.stderr()
        );
        o
    }
    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
    fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }
    fn record(&self, stage: &str) -> Option<serde_json::Value> {
        fs::read(self.cache().join("latest").join(format!("{stage}.json")))
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }
    fn total(&self) -> f64 {
        let o = self.ok(&["artifacts", "show", "sum.total"]);
        let line = o
            .stdout()
            .lines()
            .find(|l| l.trim_start().starts_with("total"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(4).unwrap().parse().unwrap()
    }
}

struct Out(Output);

impl Out {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Outcome column of the run summary for `stage`.
    fn outcome(&self, stage: &str) -> String {
        self.stdout()
            .lines()
            .find(|l| l.split_whitespace().next() == Some(stage))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_else(|| "absent".into())
    }
    fn ran(&self) -> Vec<String> {
        let s = self.stdout();
        let mut v: Vec<String> = s
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("ran"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        v.sort();
        v
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// 1 + 2: keys and the no-op run.
#[test]
fn second_run_executes_nothing() {
    let e = Env::new(BASE);
    let first = e.ok(&["run", "all"]);
    assert_eq!(first.ran(), ["gen", "gen2", "square", "sum"]);
    assert_eq!(e.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
    let second = e.ok(&["run", "all"]);
    assert_eq!(second.ran(), Vec::<String>::new());
    for s in ["gen", "gen2", "square", "sum"] {
        assert_eq!(second.outcome(s), "cached", "{s}");
    }
    let status = e.ok(&["status"]).stdout();
    assert!(
        status
            .lines()
            .all(|l| l.starts_with("cache ") || l.contains(" fresh ")),
        "{status}"
    );
}

#[test]
fn moving_the_project_keeps_the_cache_valid() {
    // Keys hold no absolute paths or mtimes: a copied folder is still fresh.
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let moved = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", e.path().display()))
        .arg(moved.path())
        .status()
        .unwrap();
    assert!(status.success());
    let e2 = Env {
        dir: moved,
        vars: Vec::new(),
    };
    assert_eq!(e2.ok(&["run", "all"]).ran(), Vec::<String>::new());
}

// 3: a param change reruns the stage and its downstream, nothing else.
#[test]
fn param_change_reruns_stage_and_downstream_only() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let set = ["--set", "stage.gen.params.scale=2.0"];
    let why = e.ok(&["why", "gen", set[0], set[1]]).stdout();
    expect![[r#"
        `gen` is stale:
          params changed: scale 1.0 -> 2.0
    "#]]
    .assert_eq(&why);
    let why_sq = e.ok(&["why", "square", set[0], set[1]]).stdout();
    assert!(why_sq.contains("upstream `gen` is stale"), "{why_sq}");
    let o = e.ok(&["run", "all", set[0], set[1]]);
    assert_eq!(o.ran(), ["gen", "square", "sum"]);
    assert_eq!(o.outcome("gen2"), "cached");
    assert_eq!(
        e.total(),
        (0..10).map(|i| (2 * i * 2 * i) as f64).sum::<f64>()
    );
    // Going back to the old value finds the old results.
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
}

#[test]
fn set_acts_like_editing_the_file() {
    let e = Env::new(BASE);
    e.ok(&["run", "all", "--set", "stage.gen.params.scale=3.0"]);
    fs::write(
        e.path().join("pipeline.toml"),
        BASE.replace("scale = 1.0", "scale = 3.0"),
    )
    .unwrap();
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
}

// 3: early cutoff.
#[test]
fn identical_output_keeps_downstream_fresh() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let o = e.ok(&["run", "all", "--set", "stage.square.params.mode=pow"]);
    assert_eq!(o.ran(), ["square"], "{}", o.stdout());
    assert_eq!(o.outcome("sum"), "cached");
}

// 4: a code change reruns the stage.
#[test]
fn code_change_reruns_stage() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let why = e
        .run_env(&["why", "square"], &[("TOY_CODE_SALT_SQUARE", "edit")])
        .stdout();
    assert!(why.contains("code changed"), "{why}");
    let o = e.run_env(&["run", "all"], &[("TOY_CODE_SALT_SQUARE", "edit")]);
    assert_eq!(
        o.ran(),
        ["square"],
        "same output: sum is cut off\n{}",
        o.stdout()
    );
    let o = e.run_env(&["run", "all"], &[("TOY_CODE_SALT_GEN", "edit")]);
    assert_eq!(o.ran(), ["gen"]);
}

// 5: targets, --force, --downstream, --dry-run.
#[test]
fn run_targets_force_downstream_and_dry_run() {
    let e = Env::new(BASE);
    let o = e.ok(&["run", "square"]);
    assert_eq!(o.ran(), ["gen", "square"]);
    assert_eq!(o.outcome("sum"), "absent");
    let o = e.ok(&["run", "square", "--force"]);
    assert_eq!(o.ran(), ["square"]);
    assert_eq!(o.outcome("gen"), "cached");
    let o = e.ok(&["run", "gen", "--force", "--downstream"]);
    assert_eq!(
        o.ran(),
        ["gen", "sum"],
        "sum never ran before; square is cut off\n{}",
        o.stdout()
    );
    let o = e.ok(&["run", "all", "--dry-run", "--set", "stage.gen.params.n=3"]);
    assert!(
        o.stderr()
            .contains("would run gen: params changed: n 10 -> 3"),
        "{}",
        o.stderr()
    );
    assert_eq!(o.ran(), Vec::<String>::new());
    assert!(e
        .ok(&["why", "gen", "--set", "stage.gen.params.n=3"])
        .stdout()
        .contains("params changed"));
    let o = e.run(&["run", "nope"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains("unknown stage `nope`"),
        "{}",
        o.stderr()
    );
}

const MEET: &str = r#"
cache = "cache"
[stage.meet-a]
params = { meet_dir = "rdv", meet_peer = "meet-b", meet_timeout_ms = 1500 }
[stage.meet-b]
params = { meet_dir = "rdv", meet_peer = "meet-a", meet_timeout_ms = 1500 }
[stage.hog]
params = { sleep_ms = 200, chunks = 2 }
[stage.gen]
params = { sleep_ms = 100 }
"#;

fn interval(e: &Env, s: &str) -> (u64, u64) {
    let r = e.record(s).unwrap();
    (
        r["started_ms"].as_u64().unwrap(),
        r["finished_ms"].as_u64().unwrap(),
    )
}

// 6: independent stages run concurrently; an exclusive stage runs alone.
#[test]
fn independent_stages_run_concurrently_and_exclusive_alone() {
    let e = Env::new(MEET);
    let o = e.ok(&["run", "all", "--jobs", "2"]);
    assert_eq!(o.ran(), ["gen", "hog", "meet-a", "meet-b"]);
    let hog = interval(&e, "hog");
    for s in ["gen", "meet-a", "meet-b"] {
        let (a, b) = interval(&e, s);
        assert!(
            b <= hog.0 || a >= hog.1,
            "{s} {a}..{b} overlaps exclusive hog {hog:?}"
        );
    }
    // With one job at a time the rendezvous cannot happen.
    let e = Env::new(MEET);
    let o = e.run(&["run", "meet-a", "meet-b", "--jobs", "1"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains("did not run concurrently"),
        "{}",
        o.stderr()
    );
}

// 7: a failing, panicking or killed stage leaves nothing that looks like a result.
#[test]
fn failure_and_panic_leave_no_record() {
    let e = Env::new(BASE);
    let o = e.run(&["run", "all", "--set", "stage.square.params.fail=true"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr()
            .contains("stage `square` failed: toy stage asked to fail"),
        "{}",
        o.stderr()
    );
    assert!(e.record("square").is_none());
    assert_eq!(o.outcome("sum"), "skipped");
    let o = e.run(&["run", "all", "--set", "stage.square.params.panic=true"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr()
            .contains("stage `square` failed: panicked: toy stage asked to panic"),
        "{}",
        o.stderr()
    );
    assert!(e.record("square").is_none());
    // The completed stages are reused.
    let o = e.ok(&["run", "all"]);
    assert_eq!(o.ran(), ["square", "sum"]);
}

#[test]
fn killed_run_resumes_from_completed_stages() {
    let e = Env::new(&BASE.replace(
        "[stage.square]\n",
        "[stage.square]\nparams = { sleep_ms = 400 }\n",
    ));
    let mut child = e.spawn(&["run", "all", "--jobs", "1"]);
    wait_for("gen to complete", || e.record("gen").is_some());
    // Square is now writing its chunks (400 ms apart): kill it mid-stage.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        e.record("square").is_none(),
        "no record for the killed stage"
    );
    let status = e.ok(&["status"]).stdout();
    assert!(status.contains("gen            fresh"), "{status}");
    assert!(status.contains("square         stale"), "{status}");
    let o = e.ok(&["run", "all"]);
    assert_eq!(o.outcome("gen"), "cached");
    assert!(o.ran().contains(&"square".to_string()));
    assert_eq!(e.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
    assert_eq!(
        fs::read_dir(e.cache().join("tmp")).unwrap().count(),
        0,
        "temp files cleaned"
    );
}

fn blobs_of(e: &Env, stage: &str) -> Vec<PathBuf> {
    let r = e.record(stage).unwrap();
    let mut out = Vec::new();
    for a in r["outputs"].as_object().unwrap().values() {
        for c in a["chunks"].as_array().unwrap() {
            let d = c["digest"].as_str().unwrap();
            out.push(
                e.cache()
                    .join("blobs")
                    .join(&d[..2])
                    .join(format!("{d}.safetensors")),
            );
        }
    }
    out
}

// 8: a corrupted blob is reported, never used, and rebuilt.
#[test]
fn corrupted_blob_is_detected_and_rebuilt() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let blob = &blobs_of(&e, "gen")[0];
    let mut bytes = fs::read(blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40; // a flipped bit in the tensor data
    fs::write(blob, &bytes).unwrap();
    let show = e.run(&["artifacts", "show", "gen.values"]);
    assert!(!show.0.status.success());
    assert!(show.stderr().contains("is corrupt"), "{}", show.stderr());
    // Square must read gen's output again: the corruption is found, gen is rebuilt.
    fs::write(blob, &bytes).unwrap();
    let o = e.ok(&["run", "all", "--set", "stage.square.params.sleep_ms=1"]);
    assert!(o.stderr().contains("is corrupt"), "{}", o.stderr());
    assert!(
        o.ran().contains(&"gen".to_string()) && o.ran().contains(&"square".to_string()),
        "{}",
        o.stdout()
    );
    assert_eq!(e.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
    assert_ne!(
        fs::read(blob).unwrap(),
        bytes,
        "the blob was rewritten from a fresh run"
    );
}

// 9: two runs on one cache.
#[test]
fn second_run_waits_for_the_lock_or_fails_with_no_wait() {
    let e = Env::new(&BASE.replace(
        "[stage.square]\n",
        "[stage.square]\nparams = { sleep_ms = 700 }\n",
    ));
    let mut first = e.spawn(&["run", "all"]);
    wait_for("the first run to hold the lock", || {
        fs::read_to_string(e.cache().join("lock")).is_ok_and(|s| s.starts_with("pid"))
    });
    let o = e.run(&["run", "all", "--no-wait"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains("is locked by another run (pid "),
        "{}",
        o.stderr()
    );
    let o = e.ok(&["run", "all"]);
    assert!(
        o.stderr().contains("waiting for the cache lock"),
        "{}",
        o.stderr()
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(o.ran(), Vec::<String>::new(), "the first run did the work");
}

#[test]
fn lock_of_a_killed_process_is_recovered() {
    let e = Env::new(&BASE.replace(
        "[stage.square]\n",
        "[stage.square]\nparams = { sleep_ms = 2000 }\n",
    ));
    let mut first = e.spawn(&["run", "all"]);
    wait_for("the first run to hold the lock", || {
        fs::read_to_string(e.cache().join("lock")).is_ok_and(|s| s.starts_with("pid"))
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let o = e.run(&[
        "run",
        "all",
        "--no-wait",
        "--set",
        "stage.square.params.sleep_ms=0",
    ]);
    assert!(o.0.status.success(), "{}", o.stderr());
}

// 10: gc and status.
#[test]
fn gc_keeps_live_runs_and_frees_the_rest() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    e.ok(&["run", "all", "--set", "stage.gen.params.scale=5.0"]);
    let before = e.ok(&["status"]).stdout();
    assert!(
        before.lines().last().unwrap().starts_with("cache "),
        "{before}"
    );
    let o = e.ok(&["gc", "--keep", "1", "--grace", "0"]);
    assert!(
        o.stdout().starts_with("removed 0 run records and 0 blobs"),
        "{}",
        o.stdout()
    );
    // Within the grace period nothing unreferenced is deleted (a writer elsewhere may have
    // just stored it); with none, the old runs' blobs go.
    let o = e.ok(&["gc", "--keep", "0"]);
    assert!(
        o.stdout().starts_with("removed 3 run records and 0 blobs"),
        "{}",
        o.stdout()
    );
    let o = e.ok(&["gc", "--grace", "0"]);
    assert!(
        o.stdout().starts_with("removed 0 run records and 5 blobs"),
        "{}",
        o.stdout()
    );
    // The latest runs are intact and fresh.
    assert_eq!(
        e.ok(&["run", "all", "--set", "stage.gen.params.scale=5.0"])
            .ran(),
        Vec::<String>::new()
    );
    // The old results are gone: going back recomputes them.
    assert_eq!(e.ok(&["run", "all"]).ran(), ["gen", "square", "sum"]);
}

#[test]
fn artifacts_ls_show_and_dag() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let ls = e.ok(&["artifacts", "ls", "gen"]).stdout();
    assert!(
        ls.starts_with("gen.values  ")
            && ls.contains("2 chunk(s)")
            && ls.contains("values F32 [10]"),
        "{ls}"
    );
    let show = e.ok(&["artifacts", "show", "gen.values"]).stdout();
    let line = show
        .lines()
        .find(|l| l.trim_start().starts_with("values"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["values", "F32", "[10]", "min", "0", "max", "9", "mean", "4.5000", "NaN", "0"]
    );
    let digest = ls.split_whitespace().nth(1).unwrap();
    assert!(e
        .ok(&["artifacts", "show", &digest[..8]])
        .stdout()
        .contains("artifact gen.values"));
    expect![[r#"
        gen
        gen2
        square <- gen
        sum <- square
    "#]]
    .assert_eq(&e.ok(&["dag"]).stdout());
    assert!(e
        .ok(&["dag", "--mermaid"])
        .stdout()
        .contains("square --> sum"));
    assert!(e
        .ok(&["dag", "--dot"])
        .stdout()
        .contains("\"gen\" -> \"square\";"));
    let json: serde_json::Value =
        serde_json::from_str(&e.ok(&["status", "--json"]).stdout()).unwrap();
    assert_eq!(json["entries"][0]["state"], "fresh");
}

#[test]
fn folder_inputs_hash_content_not_mtime() {
    let e = Env::new(
        "cache = \"cache\"\n[dataset]\nroot = \"ds\"\n[stage.gen]\ninputs = [\"dataset.root\"]\n",
    );
    fs::create_dir_all(e.path().join("ds/training")).unwrap();
    for i in 0..50 {
        fs::write(
            e.path().join(format!("ds/training/0_{i}.jpg")),
            format!("img{i}"),
        )
        .unwrap();
    }
    assert_eq!(e.ok(&["run", "all"]).ran(), ["gen"]);
    // Touching a file (same content) changes nothing.
    let f = e.path().join("ds/training/0_3.jpg");
    fs::write(&f, "img3").unwrap();
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
    fs::write(&f, "changed").unwrap();
    let why = e.ok(&["why", "gen"]).stdout();
    assert!(
        why.contains("external input changed: dataset.root"),
        "{why}"
    );
    assert_eq!(e.ok(&["run", "all"]).ran(), ["gen"]);
}

/// The stat cache's file for the project's dataset folder (one per input path).
fn stat_cache_file(e: &Env) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(e.cache().join("stat-cache"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_large_tree_no_op_plans_as_a_full_rescan_and_every_change_is_found() {
    let e = Env::new(
        "cache = \"cache\"\n[dataset]\nroot = \"ds\"\n[stage.gen]\ninputs = [\"dataset.root\"]\n",
    );
    for d in ["training", "validation", "evaluation"] {
        fs::create_dir_all(e.path().join("ds").join(d)).unwrap();
    }
    for i in 0..20_000 {
        let split = ["training", "validation", "evaluation"][i % 3];
        fs::write(
            e.path().join(format!("ds/{split}/{}_{i}.jpg", i % 11)),
            format!("img{i:06}"),
        )
        .unwrap();
    }
    // Older than the stat cache's racy window, as a user's files are: the no-op below takes
    // the fast path (cached listing, one stat per file).
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(e.ok(&["run", "all"]).ran(), ["gen"]);
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
    let cached = e.ok(&["status", "--json"]).stdout();
    // The same plan from a full rescan (no stat cache at all).
    fs::remove_dir_all(e.cache().join("stat-cache")).unwrap();
    assert_eq!(e.ok(&["status", "--json"]).stdout(), cached);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
    let changed = |what: &str| {
        let why = e.ok(&["why", "gen"]).stdout();
        assert!(
            why.contains("external input changed: dataset.root"),
            "{what}: {why}"
        );
        assert_eq!(e.ok(&["run", "all"]).ran(), ["gen"], "{what}");
        assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new(), "{what}");
    };
    // Same size, new content.
    let touched = e.path().join("ds/validation/4_12346.jpg");
    assert_eq!(fs::read_to_string(&touched).unwrap(), "img012346");
    fs::write(&touched, "IMG012346").unwrap();
    changed("a touched file");
    fs::write(e.path().join("ds/training/3_20000.jpg"), "new").unwrap();
    changed("an added file");
    fs::remove_file(e.path().join("ds/evaluation/5_5.jpg")).unwrap();
    changed("a removed file");
    // A damaged or truncated stat cache is rebuilt, never trusted: flipping the stored folder
    // digest would change the key if it were believed.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
    let file = stat_cache_file(&e);
    let good = fs::read(&file).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 0xff;
    fs::write(&file, &bad).unwrap();
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
    assert_eq!(fs::read(&file).unwrap().len(), good.len(), "rebuilt");
    fs::write(&file, &good[..good.len() / 2]).unwrap();
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
    assert_eq!(fs::read(&file).unwrap().len(), good.len(), "rebuilt");
}

fn error_of(toml: &str, args: &[&str]) -> String {
    let e = Env::new(toml);
    let mut a = vec!["status"];
    a.extend_from_slice(args);
    let o = e.run(&a);
    assert!(!o.0.status.success(), "expected failure for {toml}");
    o.stderr()
}

#[test]
fn malformed_pipelines_get_clear_messages() {
    expect![[r#"
        error: pipeline.toml:3:8: key with no value, expected `=`
    "#]]
    .assert_eq(&error_of("cache = \"c\"\n[stage.gen]\nparams \n", &[]));
    expect![[r#"
        error: pipeline.toml:2:1: unknown stage `nope` (this build knows: gen, gen2, square, sum, meet-a, meet-b, hog)
    "#]]
    .assert_eq(&error_of("cache = \"c\"\n[stage.nope]\n", &[]));
    expect![[r#"
        error: pipeline.toml:2:10: stage `gen` needs unknown stage `sum`
    "#]]
    .assert_eq(&error_of(
        "[stage.gen]\nneeds = [\"sum\", \"missing\"]\n",
        &[],
    ));
    expect![[r#"
        error: pipeline.toml:1:1: dependency cycle: gen -> sum -> square -> gen
    "#]]
    .assert_eq(&error_of("[stage.gen]\nneeds = [\"sum\"]\n[stage.square]\nneeds = [\"gen\"]\n[stage.sum]\nneeds = [\"square\"]\n", &[]));
    expect![[r#"
        error: pipeline.toml: unknown setting `cahce` (known: cache, seed, threads, device, jobs, local_cache; other settings belong in a table such as `[dataset]`)
    "#]]
    .assert_eq(&error_of("cahce = \"c\"\n", &[]));
    expect![[r#"
        error: pipeline.toml:2:10: stage `gen` params: unknown field `sclae`, expected one of `n`, `scale`, `chunks`, `sleep_ms`, `fail`, `panic`, `nan`, `mode`, `meet_dir`, `meet_peer`, `meet_timeout_ms`, `fail_marker`
    "#]]
    .assert_eq(&error_of("[stage.gen]\nparams = { sclae = 2 }\n", &[]));
    expect![[r#"
        error: pipeline.toml:2:10: stage `square` params: mode must be "mul" or "pow", not "div"
    "#]]
    .assert_eq(&error_of(
        "[stage.square]\nparams = { mode = \"div\" }\n",
        &[],
    ));
    // A missing input folder: `run` stops before any stage; `status` says the stage is stale.
    let e =
        Env::new("[dataset]\nroot = \"no/such/dir\"\n[stage.gen]\ninputs = [\"dataset.root\"]\n");
    expect![[r#"
        error: stage `gen` input `dataset.root`: ./no/such/dir does not exist
    "#]]
    .assert_eq(&e.run(&["run", "all"]).stderr());
    let status = e.ok(&["status"]).stdout();
    assert!(
        status.contains("gen            stale  stage `gen` input `dataset.root`: ./no/such/dir: No such file or directory"),
        "{status}"
    );
    expect![[r#"
        error: pipeline.toml: --set bogus.key=1: the pipeline file has no setting `bogus.key` (settings: cache, seed, threads, device, jobs, local_cache)
    "#]]
    .assert_eq(&error_of("[stage.gen]\n", &["--set", "bogus.key=1"]));
    expect![[r#"
        error: pipeline.toml: cannot read the pipeline file: No such file or directory (os error 2)
    "#]]
    .assert_eq(&{
        let e = Env::new("");
        fs::remove_file(e.path().join("pipeline.toml")).unwrap();
        e.run(&["status"]).stderr()
    });
}

// Global options act the same wherever they stand (before or after the subcommand).
#[test]
fn global_options_act_wherever_they_stand() {
    let e = Env::new(BASE);
    e.ok(&[
        "--config",
        "pipeline.toml",
        "--set",
        "cache=cacheA",
        "run",
        "gen",
        "--set",
        "stage.gen.params.n=5",
        "-q",
    ]);
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(e.path().join("cacheA/latest/gen.json")).unwrap())
            .unwrap();
    assert_eq!(rec["key_inputs"]["params"]["n"], 5);
    assert!(!e.cache().exists(), "the default cache was not used");
    // A mistyped setting is refused, not ignored.
    let o = e.run(&["--set", "cahce=x", "status"]);
    assert!(!o.0.status.success());
    assert!(o.stderr().contains("no setting `cahce`"), "{}", o.stderr());
}

// A NaN in an output is an error: nothing is recorded, downstream does not run.
#[test]
fn non_finite_output_is_refused_and_nothing_recorded() {
    let e = Env::new(BASE);
    let o = e.run(&["run", "all", "--set", "stage.gen.params.nan=true"]);
    assert!(!o.0.status.success());
    let err = o.stderr();
    assert!(
        err.contains(
            "stage `gen` failed: output `values` tensor `values` has a non-finite value (NaN"
        ),
        "{err}"
    );
    assert!(e.record("gen").is_none());
    assert_eq!(o.outcome("square"), "skipped");
    let status = e.ok(&["status"]).stdout();
    assert!(status.contains("gen            stale"), "{status}");
}

fn record_file(e: &Env, stage: &str) -> PathBuf {
    let key = e.record(stage).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    e.cache()
        .join("runs")
        .join(stage)
        .join(format!("{key}.json"))
}

// A damaged run record counts as absent: said once, moved aside, the stage reruns.
#[test]
fn damaged_record_is_moved_aside_and_the_stage_reruns() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let rec = record_file(&e, "square");
    let bytes = fs::read(&rec).unwrap();
    fs::write(&rec, &bytes[..bytes.len() / 2]).unwrap();
    let status = e.ok(&["status"]);
    assert!(
        status.stdout().contains("square         stale"),
        "{}",
        status.stdout()
    );
    assert_eq!(
        status.stderr().matches("is damaged").count(),
        1,
        "{}",
        status.stderr()
    );
    assert!(rec.with_extension("json.damaged").exists());
    let o = e.ok(&["run", "all"]);
    assert_eq!(o.ran(), ["square"], "same output: sum stays cached");
    assert!(
        !o.stderr().contains("is damaged"),
        "said once: {}",
        o.stderr()
    );
    // A damaged `latest` pointer is no obstacle either.
    fs::write(e.cache().join("latest/gen.json"), "{\"stage\": ").unwrap();
    e.ok(&["gc"]);
    assert_eq!(e.ok(&["run", "all"]).ran(), Vec::<String>::new());
}

/// Flips one bit of the tensor data (after the safetensors header, part of which describes
/// the run and is not content).
fn flip_data_byte(blob: &Path, at: u64) {
    let mut bytes = fs::read(blob).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let start = 8 + header;
    let i = start + (at as usize % (bytes.len() - start));
    bytes[i] ^= 0x10;
    fs::write(blob, &bytes).unwrap();
}

/// Changes one character of a field's value in a blob's header (`key`, `created`, `params`,
/// `producer`: what the content digest leaves out) to another of the same kind, so that the
/// header still parses.
fn flip_header_value(bytes: &mut [u8], field: &str, at: u64) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let open = format!("\"{field}\":\"");
    let start = header
        .find(&open)
        .unwrap_or_else(|| panic!("no {field} in {header}"))
        + open.len();
    let len = header[start..].find('"').unwrap();
    assert!(len > 0, "empty {field}");
    let i = 8 + start + (at as usize % len);
    bytes[i] = match bytes[i] {
        b'0'..=b'8' | b'a'..=b'e' | b'A'..=b'Y' => bytes[i] + 1,
        b'9' => b'0',
        b'f' => b'a',
        b'Z' => b'A',
        c => {
            if c == b'-' {
                b'+'
            } else {
                b'-'
            }
        }
    };
}

fn flip_header_file(blob: &Path, field: &str, at: u64) {
    let mut bytes = fs::read(blob).unwrap();
    flip_header_value(&mut bytes, field, at);
    fs::write(blob, &bytes).unwrap();
}

// A byte of a blob's header that the content digest leaves out (the run's key, creation
// time) is found by `verify` and by a stage that reads the blob.
#[test]
fn a_changed_header_byte_is_found() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    for (i, field) in ["key", "created", "producer", "params"].iter().enumerate() {
        let blob = blobs_of(&e, "square")[0].clone();
        flip_header_file(&blob, field, 7 + i as u64);
        let o = e.run(&["verify"]);
        assert!(!o.0.status.success(), "{field}: {}", o.stdout());
        assert!(
            o.stdout().contains("header is not the one stored"),
            "{field}: {}",
            o.stdout()
        );
        e.ok(&["verify", "--repair"]);
        // The rebuilt blob is the same content: `sum` stays cached.
        assert_eq!(e.ok(&["run", "all"]).ran(), ["square"], "{field}");
        assert!(e.ok(&["verify"]).stdout().contains(": 0 bad"));
    }
    // A stage reading a blob with a changed header takes it for corrupt and rebuilds it.
    let blob = blobs_of(&e, "square")[0].clone();
    flip_header_file(&blob, "key", 3);
    let o = e.ok(&["run", "sum", "--force"]);
    assert!(o.ran().contains(&"square".to_string()), "{}", o.stdout());
    assert_eq!(e.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
}

// `verify` re-hashes every blob a record names; `--repair` forgets what they invalidate.
#[test]
fn verify_reports_corrupt_blobs_and_repair_rebuilds_them() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let clean = e.ok(&["verify"]).stdout();
    assert!(clean.contains(": 0 bad"), "{clean}");
    let blob = blobs_of(&e, "square")[1].clone();
    flip_data_byte(&blob, 7);
    let o = e.run(&["verify"]);
    assert!(!o.0.status.success());
    let digest = blob.file_stem().unwrap().to_string_lossy().to_string();
    assert!(o.stdout().contains(&digest[..16]), "{}", o.stdout());
    assert!(o.stdout().contains("named by square"), "{}", o.stdout());
    assert!(o.stderr().contains("verify --repair"), "{}", o.stderr());
    let r = e.ok(&["verify", "--repair"]).stdout();
    assert!(r.contains("removed 1 run record(s)"), "{r}");
    assert_eq!(e.ok(&["run", "all"]).ran(), ["square"]);
    assert!(e.ok(&["verify"]).stdout().contains(": 0 bad"));
    assert_eq!(e.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
}

/// BASE with these params for `gen` and `square` (the fault campaigns' slow pipelines).
fn with_params(gen: &str, square: &str) -> String {
    BASE.replace(
        "[stage.gen]\n",
        &format!("[stage.gen]\nparams = {{ {gen} }}\n#"),
    )
    .replace(
        "[stage.square]\n",
        &format!("[stage.square]\nparams = {{ {square} }}\n"),
    )
}

/// The sum of squares `gen` and `square` give (n = 10).
const EXPECTED_TOTAL: f64 = 285.0;

// A small fault campaign from a fixed seed: kill -9 at random moments of a run, then flip
// random data bytes of random blobs; every time, the next `run` gives the clean result.
#[test]
fn fault_campaign_kills_and_flipped_bytes() {
    let mut rng = pipeline::SplitMix64::new(2026);
    let slow = with_params(
        "n = 10, scale = 1.0, sleep_ms = 100, chunks = 4",
        "sleep_ms = 100",
    );
    let expected = EXPECTED_TOTAL;
    let e = Env::new(&slow);
    let (mut killed, trials) = (0, 8);
    for _ in 0..trials {
        // From an empty cache half of the time, else rerunning every stage over a full one.
        let args: &[&str] = if rng.next_u64().is_multiple_of(2) {
            let _ = fs::remove_dir_all(e.cache());
            &["run", "all", "--jobs", "1"]
        } else {
            &["run", "gen", "--force", "--downstream", "--jobs", "1"]
        };
        let mut child = e.spawn(args);
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 600));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        e.ok(&["run", "all"]);
        assert_eq!(e.total(), expected);
    }
    assert!(
        killed >= trials / 2,
        "most trials must hit a running process ({killed})"
    );
    for _ in 0..4 {
        let mut blobs = Vec::new();
        for s in ["gen", "square"] {
            blobs.extend(blobs_of(&e, s));
        }
        let blob = &blobs[(rng.next_u64() % blobs.len() as u64) as usize];
        // Tensor data, or the header fields the content digest leaves out.
        match rng.next_u64() % 3 {
            0 => flip_data_byte(blob, rng.next_u64()),
            1 => flip_header_file(blob, "key", rng.next_u64()),
            _ => flip_header_file(blob, "created", rng.next_u64()),
        }
        let o = e.run(&["verify"]);
        assert!(!o.0.status.success(), "a flipped byte must be found");
        e.ok(&["verify", "--repair"]);
        e.ok(&["run", "all"]);
        assert_eq!(e.total(), expected);
        assert!(e.ok(&["verify"]).stdout().contains(": 0 bad"));
    }
}

#[test]
fn an_unsupported_device_is_a_config_error() {
    let err = error_of("device = \"cuda\"\n[stage.gen]\n", &[]);
    assert!(
        err.contains("pipeline.toml:1:10: device `cuda` is not supported: this build runs every stage on the CPU"),
        "{err}"
    );
    let err = error_of("[stage.gen]\n", &["--set", "device=cuda"]);
    assert!(err.contains("device `cuda` is not supported"), "{err}");
}

// Resources: stages run side by side only while their cpus fit the budget, and each runs
// on as many threads as it was given.
#[test]
fn stages_overlap_only_while_their_cpus_fit_the_budget() {
    let two = |budget: usize, cpus: usize| {
        format!(
            "cache = \"cache\"\nthreads = {budget}\njobs = 2\n\
             [stage.gen]\nparams = {{ sleep_ms = 150, chunks = 3 }}\nresources = {{ cpus = {cpus} }}\n\
             [stage.gen2]\nparams = {{ sleep_ms = 150, chunks = 3 }}\nresources = {{ cpus = {cpus} }}\n"
        )
    };
    let overlap = |e: &Env| {
        let (a, b) = (interval(e, "gen"), interval(e, "gen2"));
        a.0 < b.1 && b.0 < a.1
    };
    // 2 + 2 cpus > a budget of 3: one after the other.
    let e = Env::new(&two(3, 2));
    e.ok(&["run", "all"]);
    assert!(
        !overlap(&e),
        "{:?} {:?}",
        interval(&e, "gen"),
        interval(&e, "gen2")
    );
    for s in ["gen", "gen2"] {
        let r = e.record(s).unwrap();
        assert_eq!(r["threads"], 2, "{s}");
        let v = &r["outputs"]["values"]["volatile"];
        assert_eq!(
            (v["threads"].as_u64(), v["pool_threads"].as_u64()),
            (Some(2), Some(2))
        );
    }
    let timeline = e.ok(&["status", "--timeline"]).stdout();
    assert!(
        timeline.contains("gen2") && timeline.contains('#'),
        "{timeline}"
    );
    // 2 + 2 within a budget of 4: side by side (the budget never oversubscribes: 4 threads).
    let e = Env::new(&two(4, 2));
    e.ok(&["run", "all"]);
    assert!(
        overlap(&e),
        "{:?} {:?}",
        interval(&e, "gen"),
        interval(&e, "gen2")
    );
    // `cpus = "all"` takes the whole budget; a stage asking for more than the budget gets it.
    let e = Env::new(&two(3, 5));
    e.ok(&["run", "all"]);
    assert_eq!(e.record("gen").unwrap()["threads"], 3);
    assert!(!overlap(&e));
    let err = error_of("[stage.gen]\nresources = { gpus = 1 }\n", &[]);
    assert!(err.contains("asks for 1 GPU(s)"), "{err}");
}

// A params change that leaves the output unchanged keeps the earlier run's blob (same content
// digest, a header of another length: the params are in it); the next run still finds every
// stage fresh instead of rerunning it for "output blobs missing".
#[test]
fn equal_output_under_new_params_stays_fresh() {
    let e = Env::new(&BASE.replace(
        "params = { n = 10, scale = 1.0 }",
        "params = { n = 10, scale = 1.0, meet_dir = \"\" }",
    ));
    e.ok(&["run", "all"]);
    // gen ignores `meet_dir`; the header grows by more than safetensors' 8-byte padding.
    let set = [
        "--set",
        "stage.gen.params.meet_dir=an/unused/folder/of/some/length",
    ];
    assert_eq!(e.ok(&["run", "all", set[0], set[1]]).ran(), ["gen"]);
    let again = e.ok(&["run", "all", set[0], set[1]]);
    assert!(again.ran().is_empty(), "{}", again.stdout());
    assert!(e.ok(&["verify"]).stdout().contains(": 0 bad"));
}

// 12: shards, many writers, leases; the SLURM executor on a real cluster.

/// Digest of every output of every stage's latest record.
fn digests(e: &Env, stages: &[&str]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for st in stages {
        let r = e.record(st).unwrap_or_else(|| panic!("{st} has no record"));
        for (name, a) in r["outputs"].as_object().unwrap() {
            v.push((
                format!("{st}.{name}"),
                a["digest"].as_str().unwrap().to_string(),
            ));
        }
    }
    v
}

const SHARDED: &str = r#"
cache = "cache"
jobs = 2

[stage.gen]
params = { n = 20, chunks = 5, scale = 0.5 }

[stage.square]
needs = ["gen"]

[stage.sum]
needs = ["square"]
"#;

#[test]
fn sharded_runs_give_an_unsharded_runs_artifacts_and_gather_checks_every_shard() {
    let local = Env::new(SHARDED);
    local.ok(&["run", "all"]);
    let want = digests(&local, &["square", "sum"]);
    for n in ["2", "3", "7"] {
        let e = Env::new(SHARDED);
        e.ok(&["run", "gen"]);
        let count: usize = n.parse().unwrap();
        for i in 0..count {
            let o = e.ok(&["run", "square", "--shard", &format!("{i}/{n}")]);
            assert_eq!(o.ran(), vec!["square".to_string()], "{}", o.stdout());
        }
        // A shard already done is not run again.
        let o = e.ok(&["run", "square", "--shard", &format!("0/{n}")]);
        assert_eq!(o.ran(), Vec::<String>::new());
        assert!(e.record("square").is_none(), "no record before the gather");
        e.ok(&["run", "square", "--gather", n]);
        let o = e.ok(&["run", "all"]);
        assert_eq!(o.ran(), vec!["sum".to_string()], "{}", o.stdout());
        assert_eq!(digests(&e, &["square", "sum"]), want, "{n} shards");
    }
    // A missing shard: the gather names it and records nothing.
    let e = Env::new(SHARDED);
    e.ok(&["run", "gen"]);
    e.ok(&["run", "square", "--shard", "0/3"]);
    e.ok(&["run", "square", "--shard", "2/3"]);
    let o = e.run(&["run", "square", "--gather", "3"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr()
            .contains("1 of 3 shards have no record (shard 1)"),
        "{}",
        o.stderr()
    );
    assert!(e.record("square").is_none());
    let st = e.ok(&["status"]).stdout();
    assert!(
        st.contains("shards of 3: 2 done, 0 running, 0 failed, 1 not started"),
        "{st}"
    );
    // Bad uses are one-line errors.
    let o = e.run(&["run", "gen", "--shard", "0/2"]);
    assert!(
        o.stderr()
            .contains("stage `gen` cannot run in shards (shardable: square)"),
        "{}",
        o.stderr()
    );
    let o = e.run(&["run", "square", "--shard", "3/3"]);
    assert!(o.stderr().contains("numbered 0 to 2"), "{}", o.stderr());
    let o = e.run(&[
        "run",
        "sum",
        "--set",
        "stage.square.params.scale=2.0",
        "--shard",
        "0/1",
    ]);
    assert!(!o.0.status.success());
}

#[test]
fn a_shard_needs_a_complete_upstream() {
    let e = Env::new(SHARDED);
    let o = e.run(&["run", "square", "--shard", "0/2"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr()
            .contains("`gen` is not complete, and a sharded run of `square` runs only that stage"),
        "{}",
        o.stderr()
    );
}

#[test]
fn shards_writing_the_same_blob_at_once_both_succeed() {
    // scale 0: every chunk of `square` is the same blob, written by both shards at once.
    let e = Env::new(&SHARDED.replace("scale = 0.5", "scale = 0.0"));
    e.ok(&["run", "gen"]);
    let slow = ["--set", "stage.square.params.sleep_ms=150"];
    let spawn = |i: &str| {
        let mut a = vec!["run", "square", "--shard", i];
        a.extend(slow);
        e.spawn(&a)
    };
    let (a, b) = (spawn("0/2"), spawn("1/2"));
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut g = vec!["run", "square", "--gather", "2"];
    g.extend(slow);
    e.ok(&g);
    let r = e.record("square").unwrap();
    let chunks = r["outputs"]["values"]["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c["digest"] == chunks[0]["digest"]));
    e.ok(&["verify"]);
}

#[test]
fn gc_is_refused_while_a_run_lease_is_live() {
    let e = Env::new(BASE);
    e.ok(&["run", "all"]);
    let mut child = e.spawn(&[
        "run",
        "gen",
        "--set",
        "stage.gen.params.scale=9.0",
        "--set",
        "stage.gen.params.sleep_ms=20000",
    ]);
    let leases = e.cache().join("leases");
    // The lease itself, not the temporary file it is linked from (a `.` name, which a slow
    // machine can show for a while and which no run counts as a lease).
    wait_for("the run's lease", || {
        fs::read_dir(&leases)
            .map(|d| {
                d.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    !name.starts_with('.') && name.ends_with(".json")
                })
            })
            .unwrap_or(false)
    });
    let o = e.run(&["gc", "--grace", "0"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains("refused: 1 run(s) hold a live lease")
            && o.stderr().contains("`run gen`"),
        "{}",
        o.stderr()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The killed run's lease names a dead process of this host: no longer live.
    let o = e.ok(&["gc", "--grace", "0"]);
    assert!(o.stdout().starts_with("removed"), "{}", o.stdout());
}

fn slurm(e: &Env, extra: &[&str]) -> Out {
    let mut a = vec![
        "run",
        "all",
        "--executor",
        "slurm",
        "--shards",
        "3",
        "--wait",
    ];
    a.extend(extra);
    e.run(&a)
}

#[test]
fn slurm_job_arrays_give_a_local_runs_artifacts_and_a_rerun_submits_nothing() {
    if !fixtures::slurm_up() {
        return;
    }
    let local = Env::new(SHARDED);
    local.ok(&["run", "all"]);
    let e = Env::new(SHARDED);
    let o = slurm(&e, &[]);
    assert!(o.0.status.success(), "{}\n{}", o.stdout(), o.stderr());
    let out = o.stdout();
    assert!(out.contains("submitted 4 job(s)"), "{out}");
    assert!(out.contains("3 of 3 shards (array 0-2)"), "{out}");
    assert_eq!(
        digests(&e, &["gen", "square", "sum"]),
        digests(&local, &["gen", "square", "sum"])
    );
    let o = slurm(&e, &[]);
    assert!(o.0.status.success(), "{}", o.stderr());
    assert!(o.stdout().contains("nothing submitted"), "{}", o.stdout());
}

#[test]
fn slurm_a_failed_shard_cancels_the_gather_and_the_rerun_submits_only_it() {
    if !fixtures::slurm_up() {
        return;
    }
    let e = Env::new(SHARDED);
    let marker = e.path().join("fail");
    fs::write(e.path().join("fail-1"), "").unwrap();
    let set = format!(
        "stage.square.params.fail_marker={:?}",
        marker.display().to_string()
    );
    let o = slurm(&e, &["--set", &set]);
    assert!(!o.0.status.success(), "{}", o.stdout());
    let out = o.stdout();
    assert!(
        out.contains("shards of 3: 2 done, 0 running, 1 failed, 0 not started")
            && out.contains("failed: shard 1 (job "),
        "{out}\n{}",
        o.stderr()
    );
    assert!(e.record("square").is_none(), "the gather must not have run");
    assert!(e.record("sum").is_none());
    fs::remove_file(e.path().join("fail-1")).unwrap();
    let o = slurm(&e, &["--set", &set]);
    assert!(o.0.status.success(), "{}\n{}", o.stdout(), o.stderr());
    assert!(
        o.stdout().contains("1 of 3 shards (array 1)"),
        "{}",
        o.stdout()
    );
    assert!(
        !o.stdout().contains("  gen "),
        "gen was fresh: {}",
        o.stdout()
    );
    let local = Env::new(SHARDED);
    local.ok(&["run", "all", "--set", &set]);
    assert_eq!(
        digests(&e, &["square", "sum"]),
        digests(&local, &["square", "sum"])
    );
}

#[test]
fn slurm_gc_is_refused_while_a_job_holds_a_lease() {
    if !fixtures::slurm_up() {
        return;
    }
    let e = Env::new(SHARDED);
    let o = e.ok(&[
        "run",
        "all",
        "--executor",
        "slurm",
        "--shards",
        "2",
        "--set",
        "stage.square.params.sleep_ms=2000",
    ]);
    assert!(o.stdout().contains("submitted 4 job(s)"), "{}", o.stdout());
    let leases = e.cache().join("leases");
    let shard_lease = || {
        fs::read_dir(&leases)
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| {
                fs::read_to_string(f.path())
                    .is_ok_and(|t| t.contains("--shard") && t.contains("\"job\""))
            })
    };
    let t0 = Instant::now();
    while !shard_lease() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no shard job started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = e.run(&["gc", "--grace", "0"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains("hold a live lease") && o.stderr().contains("--shard"),
        "{}",
        o.stderr()
    );
    let t0 = Instant::now();
    while e.record("sum").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the jobs did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last job may still be removing its lease.
    let t0 = Instant::now();
    while !e.run(&["gc", "--grace", "0"]).0.status.success() {
        assert!(t0.elapsed() < Duration::from_secs(30), "gc still refused");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// The cache on S3 (against the test server; skipped without one, required in CI).

/// Artifact digests as `artifacts ls` prints them (works on any cache).
fn listed(e: &Env) -> Vec<String> {
    let mut v: Vec<String> = e
        .ok(&["artifacts", "ls"])
        .stdout()
        .lines()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

#[test]
fn s3_cache_gives_a_local_caches_artifacts_and_a_rerun_executes_nothing() {
    let Some(s3) = fixtures::s3::s3_up("toy-equal") else {
        return;
    };
    let local = Env::new(BASE);
    local.ok(&["run", "all"]);
    let e = Env::s3(BASE, &s3.url(""), s3.env());
    let o = e.ok(&["run", "all"]);
    assert_eq!(o.ran(), ["gen", "gen2", "square", "sum"], "{}", o.stdout());
    assert_eq!(listed(&e), listed(&local));
    let o = e.ok(&["run", "all"]);
    assert!(o.ran().is_empty(), "{}", o.stdout());
    // The bucket holds the records and blobs; the local tier only copies of blobs.
    let keys = s3.list("");
    assert!(
        keys.iter().any(|k| k.starts_with("runs/square/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("latest/sum.json")),
        "{keys:?}"
    );
    assert!(keys.iter().filter(|k| k.starts_with("blobs/")).count() >= 7);
    assert!(!e.path().join("local/runs").exists());
    // Another machine: an empty local tier on the same prefix runs nothing, and reading an
    // artifact downloads its blobs.
    let other = Env::s3(BASE, &s3.url(""), s3.env());
    let o = other.ok(&["run", "all"]);
    assert!(o.ran().is_empty(), "{}", o.stdout());
    assert_eq!(other.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
    assert!(other.path().join("local/blobs").read_dir().unwrap().count() > 0);
    let status = other.ok(&["status"]).stdout();
    assert!(status.contains("sum            fresh"), "{status}");
    assert!(
        status.contains(&format!("cache {}", s3.url(""))),
        "{status}"
    );
    let v = other.ok(&["verify"]).stdout();
    assert!(v.contains("checked 7 blobs") && v.contains("0 bad"), "{v}");
    let t = other.ok(&["status", "--timeline"]).stdout();
    assert!(t.contains("sum"), "{t}");
}

#[test]
fn s3_cache_errors_are_one_clear_line() {
    let Some(s3) = fixtures::s3::s3_up("toy-errors") else {
        return;
    };
    let mut vars = s3.env();
    vars[0].1 = "http://127.0.0.1:9".into(); // nothing listens there
    let e = Env::s3(BASE, &s3.url(""), vars);
    let o = e.run(&["status"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains(&format!(
            "S3 cache {}: the bucket `{}` at http://127.0.0.1:9 does not answer",
            s3.url(""),
            s3.bucket
        )) && o.stderr().contains("AWS_ENDPOINT_URL"),
        "{}",
        o.stderr()
    );
    // A mistyped bucket is not an empty cache: every command stops at the start, naming the
    // bucket and the endpoint.
    let url = s3.url("").replacen(&s3.bucket, "no-such-bucket-here", 1);
    let e = Env::s3(BASE, &url, s3.env());
    for cmd in [
        &["status"][..],
        &["artifacts", "ls"],
        &["why", "sum"],
        &["run", "all", "--dry-run"],
        &["run", "all"],
        &["verify"],
        &["gc"],
    ] {
        let o = e.run(cmd);
        assert!(!o.0.status.success(), "{cmd:?}");
        assert!(
            o.stderr().contains(&format!(
                "the bucket `no-such-bucket-here` at {} does not answer",
                s3.endpoint
            )) && o.stderr().contains("NoSuchBucket"),
            "{cmd:?}: {}",
            o.stderr()
        );
        assert_eq!(o.stderr().lines().count(), 1, "{cmd:?}: {}", o.stderr());
    }
    let bad = Env::new(&BASE.replace("cache = \"cache\"", "cache = \"s3://Bad_Bucket/x\""));
    let o = bad.run(&["status"]);
    assert!(
        o.stderr().contains("`Bad_Bucket` is not a bucket name"),
        "{}",
        o.stderr()
    );
    let gs = Env::new(&BASE.replace("cache = \"cache\"", "cache = \"gs://bucket/x\""));
    assert!(gs.run(&["status"]).stderr().contains("is not an s3:// URL"));
}

#[test]
fn s3_killed_run_leaves_nothing_taken_for_a_result() {
    let Some(s3) = fixtures::s3::s3_up("toy-killed") else {
        return;
    };
    let e = Env::s3(
        &BASE.replace(
            "[stage.square]\n",
            "[stage.square]\nparams = { sleep_ms = 400 }\n",
        ),
        &s3.url(""),
        s3.env(),
    );
    let mut child = e.spawn(&["run", "all", "--jobs", "1"]);
    wait_for("gen to complete", || {
        s3.list("runs/gen").iter().any(|k| k.ends_with(".json"))
    });
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !s3.list("runs/square").iter().any(|k| k.ends_with(".json")),
        "no record for the killed stage"
    );
    let status = e.ok(&["status"]).stdout();
    assert!(status.contains("gen            fresh"), "{status}");
    assert!(status.contains("square         stale"), "{status}");
    let o = e.ok(&["run", "all"]);
    assert_eq!(o.outcome("gen"), "cached");
    assert!(o.ran().contains(&"square".to_string()));
    assert_eq!(e.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
}

#[test]
fn s3_corrupted_object_is_detected_and_rebuilt() {
    let Some(s3) = fixtures::s3::s3_up("toy-corrupt") else {
        return;
    };
    let e = Env::s3(BASE, &s3.url(""), s3.env());
    e.ok(&["run", "all"]);
    let rec: serde_json::Value = serde_json::from_slice(&s3.get("latest/gen.json")).unwrap();
    let d = rec["outputs"]["values"]["chunks"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("blobs/{}/{d}.safetensors", &d[..2]);
    let mut bytes = s3.get(&key);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40; // a flipped bit in the tensor data, same size
    s3.put(&key, bytes.clone());
    // `verify` checks the bucket's object even where a good local copy exists.
    let v = e.run(&["verify"]);
    assert!(!v.0.status.success(), "{}", v.stdout());
    assert!(
        format!("{}{}", v.stdout(), v.stderr()).contains(&d[..12]),
        "{}{}",
        v.stdout(),
        v.stderr()
    );
    // A machine that has no local copy reads the bucket's object.
    let other = Env::s3(BASE, &s3.url(""), s3.env());
    let v = other.run(&["verify"]);
    assert!(!v.0.status.success());
    assert!(
        v.stdout().contains(&d[..12]) || v.stderr().contains(&d[..12]),
        "{}{}",
        v.stdout(),
        v.stderr()
    );
    let o = other.ok(&["run", "all", "--set", "stage.square.params.sleep_ms=1"]);
    assert!(o.stderr().contains("is corrupt"), "{}", o.stderr());
    assert!(
        o.ran().contains(&"gen".to_string()) && o.ran().contains(&"square".to_string()),
        "{}",
        o.stdout()
    );
    assert_eq!(other.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
    assert_ne!(s3.get(&key), bytes, "the object was rebuilt");
    assert!(other.ok(&["verify"]).stdout().contains("0 bad"));
}

#[test]
fn s3_two_concurrent_runs_on_one_prefix_both_finish() {
    let Some(s3) = fixtures::s3::s3_up("toy-concurrent") else {
        return;
    };
    let toml = BASE.replace(
        "[stage.square]\n",
        "[stage.square]\nparams = { sleep_ms = 100 }\n",
    );
    let local = Env::new(&toml);
    local.ok(&["run", "all"]);
    // Two machines (two local tiers) on one prefix, at once.
    let a = Env::s3(&toml, &s3.url(""), s3.env());
    let b = Env::s3(&toml, &s3.url(""), s3.env());
    let (ca, cb) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| a.cmd(&["run", "all"]).output().unwrap());
        let hb = sc.spawn(|| b.cmd(&["run", "all"]).output().unwrap());
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for (name, o) in [("a", &ca), ("b", &cb)] {
        assert!(
            o.status.success(),
            "run {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(listed(&a), listed(&local));
    assert_eq!(listed(&b), listed(&local));
    assert_eq!(b.total(), (0..10).map(|i| (i * i) as f64).sum::<f64>());
    assert!(a.ok(&["run", "all"]).ran().is_empty());
}

#[test]
fn s3_gc_is_refused_while_a_run_lease_is_live() {
    let Some(s3) = fixtures::s3::s3_up("toy-gc") else {
        return;
    };
    let e = Env::s3(BASE, &s3.url(""), s3.env());
    e.ok(&["run", "all"]);
    e.ok(&["run", "all", "--set", "stage.gen.params.scale=2.0"]);
    let mut child = e.spawn(&[
        "run",
        "gen",
        "--set",
        "stage.gen.params.scale=9.0",
        "--set",
        "stage.gen.params.sleep_ms=20000",
    ]);
    wait_for("the run's lease", || !s3.list("leases").is_empty());
    let o = e.run(&["gc", "--grace", "0"]);
    assert!(!o.0.status.success());
    assert!(
        o.stderr().contains("refused: 1 run(s) hold a live lease")
            && o.stderr().contains("`run gen`"),
        "{}",
        o.stderr()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = s3.list("blobs").len();
    let o = e.ok(&["gc", "--keep", "0", "--grace", "0"]);
    assert!(o.stdout().starts_with("removed"), "{}", o.stdout());
    assert!(
        s3.list("leases").is_empty(),
        "the dead run's lease was removed"
    );
    assert!(
        s3.list("blobs").len() < before,
        "unreferenced objects were deleted"
    );
    let o = e.ok(&["run", "all", "--set", "stage.gen.params.scale=2.0"]);
    assert!(
        o.ran().is_empty(),
        "gc kept what the latest runs name: {}",
        o.stdout()
    );
}

#[test]
fn s3_conditional_writes_retry_on_409_and_304() {
    let Some(s3) = fixtures::s3::s3_up("toy-conflict") else {
        return;
    };
    let local = Env::new(BASE);
    local.ok(&["run", "all"]);
    for status in [409, 304] {
        // The first creates of blobs meet a conflict (409) or a "not modified" (304) while
        // no object is there: taken for "already stored", the blobs would never be uploaded.
        let proxy = fixtures::s3::ConflictProxy::start(&s3.endpoint, status, 5, "/blobs/");
        let mut vars = s3.env();
        vars[0].1 = proxy.endpoint.clone();
        let url = s3.url(&format!("s{status}"));
        let e = Env::s3(BASE, &url, vars);
        let o = e.ok(&["run", "all"]);
        assert_eq!(o.ran().len(), 4, "{}", o.stdout());
        assert_eq!(proxy.injected(), 5, "answers made up");
        assert_eq!(listed(&e), listed(&local), "after {status} answers");
        // Another machine, straight to the server: every blob is in the bucket.
        let other = Env::s3(BASE, &url, s3.env());
        let o = other.ok(&["run", "all"]);
        assert!(o.ran().is_empty(), "{}", o.stdout());
        let v = other.ok(&["verify"]).stdout();
        assert!(v.contains("checked 7 blobs") && v.contains("0 bad"), "{v}");
    }
}

/// BASE with a slow `square` (its writes come while the test plays an outage) and, when
/// given, `[s3]` settings.
fn slow_s3_base(s3_settings: &str) -> String {
    let t = BASE.replace(
        "[stage.square]\nneeds = [\"gen\"]\n",
        "[stage.square]\nneeds = [\"gen\"]\nparams = { sleep_ms = 1500 }\n",
    );
    if s3_settings.is_empty() {
        t
    } else {
        format!("{t}\n[s3]\n{s3_settings}\n")
    }
}

/// `run all` of the pipeline `toml` on the test bucket through a [`fixtures::s3::FaultProxy`],
/// 0.7 s under way (while `square` sleeps) when this returns.
fn run_behind_a_fault_proxy(
    s3: &fixtures::s3::TestPrefix,
    toml: &str,
) -> (fixtures::s3::FaultProxy, Env, Child) {
    let proxy = fixtures::s3::FaultProxy::start(&s3.endpoint);
    let mut vars = s3.env();
    vars[0].1 = proxy.endpoint.clone();
    let e = Env::s3(toml, &s3.url(""), vars);
    let child = e.spawn(&["run", "all", "--jobs", "1"]);
    std::thread::sleep(Duration::from_millis(700));
    (proxy, e, child)
}

/// Waits for `child` at most `limit`; panics (after killing it) if it is still running.
fn finish_within(mut child: Child, limit: Duration) -> (bool, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn s3_outage_of_30_seconds_is_ridden_through_with_the_same_results() {
    let Some(s3) = fixtures::s3::s3_up("toy-outage") else {
        return;
    };
    let toml = slow_s3_base("");
    let local = Env::new(&toml);
    local.ok(&["run", "all"]);
    // While `square` sleeps: its writes, the heartbeat and everything after meet the outage.
    let (proxy, e, child) = run_behind_a_fault_proxy(&s3, &toml);
    proxy.drop_for(Duration::from_secs(30));
    let (ok, err) = finish_within(child, Duration::from_secs(150));
    assert!(ok, "the run failed during the outage: {err}");
    assert!(proxy.refused() > 0, "the run met the outage");
    assert_eq!(listed(&e), listed(&local));
    // Straight to the server: the bucket holds the whole run.
    let other = Env::s3(&toml, &s3.url(""), s3.env());
    let v = other.ok(&["verify"]).stdout();
    assert!(v.contains("0 bad"), "{v}");
}

#[test]
fn s3_frozen_server_answers_are_abandoned_and_retried() {
    let Some(s3) = fixtures::s3::s3_up("toy-stall") else {
        return;
    };
    let toml = slow_s3_base("request_timeout_seconds = 2");
    let local = Env::new(&slow_s3_base(""));
    local.ok(&["run", "all"]);
    let (proxy, e, child) = run_behind_a_fault_proxy(&s3, &toml);
    // Longer than a request may take: requests are abandoned (after 2 s) and retried.
    proxy.stall_for(Duration::from_secs(7));
    let (ok, err) = finish_within(child, Duration::from_secs(120));
    assert!(ok, "the run failed while the server was frozen: {err}");
    assert_eq!(listed(&e), listed(&local));
}

#[test]
fn s3_outage_past_the_retry_budget_fails_with_a_clear_error_and_exits() {
    let Some(s3) = fixtures::s3::s3_up("toy-outage-long") else {
        return;
    };
    let toml = slow_s3_base("retry_seconds = 3\nrequest_timeout_seconds = 2");
    let (proxy, _e, child) = run_behind_a_fault_proxy(&s3, &toml);
    proxy.drop_for(Duration::from_secs(60));
    let (ok, err) = finish_within(child, Duration::from_secs(45));
    assert!(!ok);
    assert!(
        err.contains("gave up after") && err.contains("[s3] retry_seconds, is 3 s"),
        "{err}"
    );
}

// The campaign on shards: kill -9 at random moments of shard runs and gathers, flipped bytes
// (data and header) in blobs that only a shard record names yet; the gathered result and
// everything after it come out clean.
#[test]
fn fault_campaign_on_shard_records() {
    let mut rng = pipeline::SplitMix64::new(2027);
    let slow = with_params("n = 10, scale = 1.0, chunks = 6", "sleep_ms = 80");
    let expected = EXPECTED_TOTAL;
    let e = Env::new(&slow);
    e.ok(&["run", "gen"]);
    for trial in 0..4 {
        let _ = fs::remove_dir_all(e.cache().join("runs/square"));
        let _ = fs::remove_file(e.cache().join("latest/square.json"));
        // Every shard, one of them killed at a random moment, then run again.
        let victim = rng.next_u64() % 3;
        for i in 0..3 {
            let shard = format!("{i}/3");
            if i == victim {
                let mut child = e.spawn(&["run", "square", "--shard", &shard]);
                std::thread::sleep(Duration::from_millis(rng.next_u64() % 250));
                let _ = child.kill();
                child.wait().unwrap();
            }
            e.ok(&["run", "square", "--shard", &shard]);
        }
        // A flipped byte in a blob a shard record names, before the gather.
        let shard_dir = fs::read_dir(e.cache().join("runs/square/shards"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .next()
            .unwrap();
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(shard_dir.join("1-of-3.json")).unwrap()).unwrap();
        let d = rec["outputs"]["values"]["chunks"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let blob = e
            .cache()
            .join("blobs")
            .join(&d[..2])
            .join(format!("{d}.safetensors"));
        if trial % 2 == 0 {
            flip_data_byte(&blob, rng.next_u64());
        } else {
            flip_header_file(&blob, "key", rng.next_u64());
        }
        e.ok(&["run", "square", "--gather", "3"]);
        // The gathered record names the blob: `verify` finds it, and after the repair the
        // next run rebuilds `square` and gives the clean result.
        let o = e.run(&["verify"]);
        assert!(!o.0.status.success(), "trial {trial}: {}", o.stdout());
        assert!(
            o.stdout().contains(&d[..16]),
            "trial {trial}: {}",
            o.stdout()
        );
        e.ok(&["verify", "--repair"]);
        e.ok(&["run", "all"]);
        assert_eq!(e.total(), expected, "trial {trial}");
        assert!(e.ok(&["verify"]).stdout().contains(": 0 bad"));
    }
}

// The campaign on an S3 cache: kill -9 at random moments of runs, flipped bytes (data and
// header) in the bucket's objects; every time, verify finds them and the next run is clean.
#[test]
fn fault_campaign_on_an_s3_cache() {
    let Some(s3) = fixtures::s3::s3_up("toy-campaign") else {
        return;
    };
    let mut rng = pipeline::SplitMix64::new(2028);
    let slow = with_params(
        "n = 10, scale = 1.0, sleep_ms = 60, chunks = 4",
        "sleep_ms = 60",
    );
    let expected = EXPECTED_TOTAL;
    let e = Env::s3(&slow, &s3.url(""), s3.env());
    for _ in 0..4 {
        let mut child = e.spawn(&["run", "gen", "--force", "--downstream", "--jobs", "1"]);
        std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 600));
        let _ = child.kill();
        child.wait().unwrap();
        e.ok(&["run", "all"]);
        assert_eq!(e.total(), expected);
    }
    for round in 0..3 {
        let rec: serde_json::Value = serde_json::from_slice(&s3.get("latest/square.json")).unwrap();
        let chunks = rec["outputs"]["values"]["chunks"].as_array().unwrap();
        let c = &chunks[(rng.next_u64() % chunks.len() as u64) as usize];
        let d = c["digest"].as_str().unwrap();
        let key = format!("blobs/{}/{d}.safetensors", &d[..2]);
        let mut bytes = s3.get(&key);
        if round % 2 == 0 {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let i = 8 + n + (rng.next_u64() as usize % (bytes.len() - 8 - n));
            bytes[i] ^= 0x10;
        } else {
            flip_header_value(&mut bytes, "key", rng.next_u64());
        }
        s3.put(&key, bytes);
        let o = e.run(&["verify"]);
        assert!(
            !o.0.status.success(),
            "a flipped byte in the bucket must be found"
        );
        assert!(o.stdout().contains(&d[..12]), "{}", o.stdout());
        e.ok(&["verify", "--repair"]);
        e.ok(&["run", "all"]);
        assert_eq!(e.total(), expected);
        assert!(e.ok(&["verify"]).stdout().contains(": 0 bad"));
    }
}
