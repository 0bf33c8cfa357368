//! The `cargo xtask` binary: its command tree, and the study's commands on the synthetic set.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;

fn xtask(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A project with the study's own pipeline file (cache and report inside the temp folder).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let toml = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../pipeline.toml"))
        .unwrap()
        .replace("cache = \"data/cache\"", "cache = \"cache\"")
        .replace("out = \"data/report\"", "out = \"report\"");
    fs::write(dir.path().join("pipeline.toml"), toml).unwrap();
    dir
}

#[test]
fn help_lists_every_command_and_bad_arguments_get_one_line() {
    let dir = project();
    let help = text(&xtask(dir.path(), &["--help"]).stdout);
    for cmd in [
        "run",
        "status",
        "why",
        "dag",
        "artifacts",
        "gc",
        "verify",
        "bench",
        "predict",
        "fetch",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`{cmd}` missing from --help:\n{help}"
        );
    }
    for bad in [
        &["run", "--bogus"][..],
        &["predict"],
        &["predict", "x.jpg", "--model", "svm"],
        &["fetch", "cake"],
        &["status", "--jobs", "2"],
        &["nosuchcommand"],
    ] {
        let o = xtask(dir.path(), bad);
        assert!(!o.status.success(), "{bad:?} succeeded");
        let err = text(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{bad:?}: {err}");
        assert!(err.starts_with("error: "), "{bad:?}: {err}");
    }
}

#[test]
fn the_examples_in_help_are_valid_commands() {
    for line in xtask::EXAMPLES.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&words[..2], ["cargo", "xtask"], "{line}");
        let mut argv = vec!["xtask"];
        argv.extend(&words[2..]);
        if let Err(e) = xtask::StudyCli::try_parse_from(&argv) {
            panic!("`{line}` does not parse: {e}");
        }
    }
    // And their settings exist: the `--set` examples resolve against the pipeline file.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipeline.toml");
    pipeline::Config::load(
        Path::new(config),
        &[
            "stage.head-nn.params.learning_rate=0.01".into(),
            "seed=2".into(),
            "dataset.root=.".into(),
        ],
    )
    .unwrap();
    let lr = pipeline::Config::load(
        Path::new(config),
        &["stage.head-nn.params.learning_rate=0.01".into()],
    )
    .unwrap();
    let params = &lr.stage("head-nn").unwrap().params;
    assert!(head_nn_params_ok(params), "{params:?}");
}

fn head_nn_params_ok(t: &toml::Table) -> bool {
    use pipeline::Stage;
    head_nn::HeadNn.resolve_params(t).is_ok()
}

#[test]
fn a_mistyped_weights_path_is_an_error_not_a_download() {
    // A mistyped file name, and the right file name in a mistyped folder (neither folder
    // exists in a fresh project).
    for (path, folder) in [
        ("data/weigths/vgg16.safetensors", "data/weigths"),
        ("data/weigths/vgg16_notop.safetensors", "data/weigths"),
    ] {
        mistyped_weights_path_is_refused(path, folder);
    }
}

fn mistyped_weights_path_is_refused(path: &str, folder: &str) {
    let dir = project();
    let set = format!("weights.path={path}");
    let o = xtask(dir.path(), &["run", "vgg-extract", "--set", &set]);
    assert!(!o.status.success(), "{path}");
    let err = text(&o.stderr);
    assert!(err.contains("is the path mistyped?"), "{err}");
    assert!(
        err.contains("run --fetch") && err.contains("cargo xtask fetch weights --from FILE"),
        "{err}"
    );
    assert!(!dir.path().join(folder).exists(), "nothing was downloaded");
    assert!(
        !dir.path().join("cache/runs/loader").exists(),
        "nothing ran"
    );
}

/// Two synthetic images as PNG files.
fn images(dir: &Path) -> Vec<PathBuf> {
    (0..2)
        .map(|c| {
            let p = dir.join(format!("img{c}.png"));
            fs::write(&p, loader::synthetic::png(c, 7, 128, 96, 1)).unwrap();
            p
        })
        .collect()
}

fn record_file(dir: &Path, stage: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(format!("cache/latest/{stage}.json"))).unwrap())
        .unwrap()
}

#[test]
fn predict_uses_the_configured_model_answers_per_image_and_reports_damage() {
    let dir = project();
    let d = dir.path();
    let epochs = "stage.scratch-cnn.params.epochs=1";
    let o = xtask(d, &["-q", "run", "scratch-cnn", "--set", epochs]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let imgs = images(d);
    let img_args: Vec<&str> = imgs.iter().map(|p| p.to_str().unwrap()).collect();
    let predict = |extra: &[&str]| {
        let mut a = vec!["predict", "--model", "scratch-cnn", "--set", epochs];
        a.extend(&img_args);
        a.extend(extra);
        xtask(d, &a)
    };
    let a = predict(&[]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let a_out = text(&a.stdout);
    assert_eq!(a_out.lines().count(), 2, "{a_out}");

    // A second model with another learning rate becomes the stage's latest run ...
    let lr = "stage.scratch-cnn.params.learning_rate=0.01";
    let o = xtask(
        d,
        &["-q", "run", "scratch-cnn", "--set", epochs, "--set", lr],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        record_file(d, "scratch-cnn")["key_inputs"]["params"]["learning_rate"],
        0.01
    );
    // ... but a plain `predict` still answers with the model its configuration selects.
    assert_eq!(text(&predict(&[]).stdout), a_out);
    let b = predict(&["--set", lr]);
    assert!(b.status.success());
    assert_ne!(
        text(&b.stdout),
        a_out,
        "the lr 0.01 model answers differently"
    );
    // A configuration whose model was never built: say so, and how to build it.
    let c = predict(&["--set", "stage.scratch-cnn.params.learning_rate=0.05"]);
    assert!(!c.status.success());
    let err = text(&c.stderr);
    assert!(
        err.contains("not in the cache") && err.contains("cargo xtask run scratch-cnn"),
        "{err}"
    );

    // One good and one bad image: an answer for the good one, the bad one named, exit 1.
    let bad = d.join("bad.jpg");
    fs::write(&bad, b"\xff\xd8\xff not really a jpeg").unwrap();
    let o = xtask(
        d,
        &[
            "predict",
            "--model",
            "scratch-cnn",
            "--set",
            epochs,
            img_args[0],
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert_eq!(text(&o.stdout).lines().count(), 1);
    assert!(text(&o.stdout).starts_with(img_args[0]));
    let err = text(&o.stderr);
    assert!(
        err.contains("bad.jpg: error:") && err.contains("1 of 2 images"),
        "{err}"
    );

    // A corrupt model blob: predict says how to repair, verify finds it, repair + run fixes it.
    // The lr 0.001 model's record (the one the configuration selects).
    let a_rec = fs::read_dir(d.join("cache/runs/scratch-cnn"))
        .unwrap()
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&fs::read(e.unwrap().path()).unwrap())
                .unwrap()
        })
        .find(|r| r["key_inputs"]["params"]["learning_rate"] == 0.001)
        .unwrap();
    let digest = a_rec["outputs"]["model"]["chunks"][0]["digest"]
        .as_str()
        .unwrap();
    let blob = d.join(format!("cache/blobs/{}/{digest}.safetensors", &digest[..2]));
    let mut bytes = fs::read(&blob).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    fs::write(&blob, &bytes).unwrap();
    let o = predict(&[]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("verify --repair"),
        "{}",
        text(&o.stderr)
    );
    let v = xtask(d, &["verify", "--repair"]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    let o = xtask(d, &["-q", "run", "scratch-cnn", "--set", epochs]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&predict(&[]).stdout),
        a_out,
        "rebuilt: the same model again"
    );
}

#[test]
fn a_diverging_network_fails_its_stage_and_records_nothing() {
    let dir = project();
    let d = dir.path();
    let o = xtask(
        d,
        &[
            "-q",
            "run",
            "scratch-cnn",
            "--set",
            "stage.scratch-cnn.params.epochs=1",
            "--set",
            "stage.scratch-cnn.params.learning_rate=1e30",
        ],
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("stage `scratch-cnn` failed: training diverged at epoch 1")
            && err.contains("learning rate (1e30) is likely too high"),
        "{err}"
    );
    assert!(
        !d.join("cache/runs/scratch-cnn").exists(),
        "nothing recorded"
    );
}

/// `path` inside `../shared` (or `$SHARED_DIR`), if present.
fn shared_path(path: &str) -> Option<PathBuf> {
    let shared = std::env::var_os("SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let w = shared.join(path);
    if w.exists() {
        Some(w)
    } else {
        assert!(
            std::env::var_os("REQUIRE_SHARED").is_none(),
            "REQUIRE_SHARED is set but {} is missing",
            w.display()
        );
        eprintln!("SKIPPED: {} not found (set SHARED_DIR)", w.display());
        None
    }
}

/// The VGG16 weights in `../shared` (or `$SHARED_DIR`), if present.
fn shared_weights() -> Option<PathBuf> {
    shared_path("weights/vgg16_notop.safetensors")
}

#[test]
fn bench_scale_builds_a_linked_tree_and_measures_each_command() {
    let Some(source) = shared_path("datasets/food101-10") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = source.display().to_string();
    let args = [
        "bench", "scale", "--", "--files", "300,500", "--repeat", "1",
    ];
    let o = xtask(
        dir.path(),
        &[&args[..], &["--work", "w", "--source", &source]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for n in [300, 500] {
        assert!(out.contains(&format!("\n| {n} | ")), "{out}");
        let links = fs::read_dir(dir.path().join(format!("w/tree-{n}/training"))).unwrap();
        assert_eq!(links.count(), n);
        // Each size ran the loader on its own cache, from empty.
        let rec = dir.path().join(format!("w/cache-{n}/latest/loader.json"));
        assert!(rec.exists(), "{}", rec.display());
    }
    // A source without Food-11's layout is a clear error, not a panic.
    let o = xtask(
        dir.path(),
        &["bench", "scale", "--", "--files", "5", "--source", "w"],
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("Food-11"), "{}", text(&o.stderr));
}

#[test]
fn slurm_sharded_extraction_of_the_synthetic_set_equals_a_local_run() {
    if !fixtures::slurm_up() {
        return;
    }
    let Some(w) = shared_weights() else { return };
    let weights = format!("weights.path={}", w.display());
    let local = project();
    let o = xtask(
        local.path(),
        &["-q", "run", "vgg-extract", "--set", &weights],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cluster = project();
    let run = || {
        xtask(
            cluster.path(),
            &[
                "run",
                "vgg-extract",
                "--executor",
                "slurm",
                "--shards",
                "3",
                "--wait",
                "--set",
                &weights,
            ],
        )
    };
    let o = run();
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    assert!(out.contains("3 of 3 shards (array 0-2)"), "{out}");
    for stage in ["preprocess", "vgg-extract"] {
        let (a, b) = (
            record_file(local.path(), stage),
            record_file(cluster.path(), stage),
        );
        for (name, art) in a["outputs"].as_object().unwrap() {
            assert_eq!(
                art["digest"], b["outputs"][name]["digest"],
                "{stage}.{name} differs"
            );
        }
    }
    let o = run();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("nothing submitted"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn s3_cache_runs_the_whole_default_study_and_every_command_works_on_it() {
    let Some(s3) = fixtures::s3::s3_up("xtask-study") else {
        return;
    };
    let Some(w) = shared_weights() else { return };
    let weights = format!("weights.path={}", w.display());
    let local = project();
    let o = xtask(local.path(), &["-q", "run", "all", "--set", &weights]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Two machines on one bucket prefix: each project has its own local tier.
    let on_s3 = || {
        let dir = project();
        let p = dir.path().join("pipeline.toml");
        let toml = fs::read_to_string(&p).unwrap().replace(
            "cache = \"cache\"",
            &format!("cache = \"{}\"\nlocal_cache = \"local\"", s3.url("")),
        );
        fs::write(&p, toml).unwrap();
        dir
    };
    let x = |dir: &Path, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.current_dir(dir).args(args);
        for (k, v) in s3.env() {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let a = on_s3();
    let o = x(a.path(), &["run", "all", "--set", &weights]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stages = [
        "loader",
        "preprocess",
        "vgg-extract",
        "head-nn",
        "logreg",
        "scratch-cnn",
    ];
    for stage in stages {
        let want = record_file(local.path(), stage);
        let got: serde_json::Value =
            serde_json::from_slice(&s3.get(&format!("latest/{stage}.json"))).unwrap();
        for (name, art) in want["outputs"].as_object().unwrap() {
            assert_eq!(
                art["digest"], got["outputs"][name]["digest"],
                "{stage}.{name} differs from the local cache's"
            );
        }
    }
    let o = x(a.path(), &["run", "all", "--set", &weights]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        !out.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("ran")),
        "the second run executed something:\n{out}"
    );
    // The other machine: status, artifacts, verify and predict, from the bucket.
    let b = on_s3();
    let status = text(&x(b.path(), &["status", "--set", &weights]).stdout);
    for stage in stages.iter().chain(&["report"]) {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(stage) && l.contains(" fresh ")),
            "{stage} not fresh:\n{status}"
        );
    }
    assert!(
        status.contains(&format!("cache {}", s3.url(""))),
        "{status}"
    );
    let ls = text(&x(b.path(), &["artifacts", "ls", "logreg"]).stdout);
    assert!(ls.starts_with("logreg."), "{ls}");
    let show = x(b.path(), &["artifacts", "show", "head-nn.model"]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let v = x(b.path(), &["verify"]);
    assert!(
        v.status.success() && text(&v.stdout).contains("0 bad"),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
    let imgs = images(b.path());
    let img_args: Vec<&str> = imgs.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["predict", "--model", "logreg", "--set", &weights];
    args.extend(&img_args);
    let remote = x(b.path(), &args);
    assert!(remote.status.success(), "{}", text(&remote.stderr));
    let here = xtask(local.path(), &args);
    assert!(here.status.success(), "{}", text(&here.stderr));
    let strip = |o: &Output| {
        text(&o.stdout)
            .lines()
            .map(|l| l.rsplit('/').next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&remote),
        strip(&here),
        "predictions from the bucket's model"
    );
    assert_eq!(strip(&remote).len(), 2);
}

#[test]
fn fetch_lite0_weights_from_a_local_file_converts_or_refuses_clearly() {
    let dir = project();
    let fetch_from = |file: &Path| {
        xtask(
            dir.path(),
            &[
                "fetch",
                "weights",
                "--backbone",
                "efficientnet-lite0",
                "--from",
                file.to_str().unwrap(),
            ],
        )
    };
    let fixture = |name: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/lite0-weights/tests/fixtures")
            .join(name)
    };
    let dest = dir
        .path()
        .join("data/weights/efficientnet_lite0.safetensors");
    // PyTorch's zip format: refused, with the way out; a legacy checkpoint of other tensors:
    // every missing Lite0 tensor named.
    for (file, want) in [
        ("small_zip.pth", "zip-format checkpoint"),
        ("small_legacy.pth", "_conv_stem.weight: missing"),
    ] {
        let o = fetch_from(&fixture(file));
        assert!(!o.status.success(), "{file}");
        let err = text(&o.stderr);
        assert!(err.contains(want), "{file}: {err}");
    }
    assert!(!dest.exists(), "nothing written");
    // The real weights, when present: a folded file imports as itself, with the pinned digest.
    if let Some(w) = fixtures::lite0_weights() {
        let o = fetch_from(&w);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(
            out.contains("the ImageNet EfficientNet-Lite0 weights"),
            "{out}"
        );
        assert!(dest.is_file());
    }
}
