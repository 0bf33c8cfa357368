//! The EfficientNet-Lite0 recipe (`xtask/pipelines/lite0.toml`) end to end on a food101-10
//! slice: its features go through the same contract, describe, classifiers, ensemble, report
//! and predict as VGG16's; a second run executes nothing; a classifier's hyperparameter reruns
//! only what follows it.

use study_tests::{food_slice, shared, Project};

/// `xtask/pipelines/lite0.toml` with its paths inside a temporary project.
fn lite0_toml() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xtask/pipelines/lite0.toml"
    ))
    .unwrap()
    .replace("cache = \"../../data/cache\"", "cache = \"cache\"")
    .replace("out = \"../../data/report-lite0\"", "out = \"report\"")
    .replace("root = \"\"", "root = \"ds\"")
}

/// A project of lite0.toml on a food101-10 slice of `per_class` photos per class and split,
/// and the `weights.path=...` setting; `None` (a reported skip) without the shared data or
/// the Lite0 weights.
fn lite0_project(per_class: usize) -> Option<(Project, String)> {
    let (Some(shared), Some(weights)) = (shared(), fixtures::lite0_weights()) else {
        return None;
    };
    let p = Project::new(&lite0_toml());
    let ds = p.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    food_slice(&shared, &ds, per_class);
    Some((p, format!("weights.path={}", weights.display())))
}

#[test]
fn the_lite0_recipe_runs_end_to_end_on_a_food_slice_and_predicts() {
    let Some((p, weights)) = lite0_project(3) else {
        return;
    };
    let ds = p.path().join("ds");
    let set = [weights.as_str(), "threads=2"];
    let s = p.run(&[], &set);
    for stage in [
        "lite0-extract",
        "describe",
        "head-nn",
        "logreg",
        "ensemble",
        "report",
    ] {
        assert!(
            s.ran().contains(&stage),
            "{stage} did not run: {:?}",
            s.ran()
        );
    }
    assert!(
        !s.ran().contains(&"vgg-extract"),
        "the Lite0 recipe needs no VGG16"
    );

    // The features: the head's 7x7x1280 maps of both views, saying which network made them.
    let store = p.store();
    for split in ["training", "validation", "evaluation"] {
        let a = p.artifact("lite0-extract", split);
        let f = contracts::FeaturesReader::new(pipeline::InputArtifact::new(&a, &store));
        assert_eq!(f.backbone().unwrap(), contracts::Backbone::Lite0, "{split}");
        assert_eq!(f.views().unwrap(), ["original", "flip"], "{split}");
        assert_eq!(f.len(), 30, "{split}");
        let c = f.chunk(0).unwrap();
        assert_eq!(c.shape[1..], [7, 7, 1280], "{split}");
        assert!(
            c.features.iter().all(|v| (0.0..=6.0).contains(v)),
            "ReLU6 maps"
        );
    }
    // The descriptor: the head's average and its 2x2 grid, each view a training row.
    let d = p.artifact("describe", "training");
    let (shape, _) = p.chunk(&d, 0).f32("features").unwrap();
    assert_eq!(shape, [60, 1, 1, 1280 + 4 * 1280]);

    for model in ["head-nn", "logreg", "ensemble"] {
        let preds = p.artifact(model, "predictions");
        let pr = contracts::Predictions::read(&pipeline::InputArtifact::new(&preds, &p.store()))
            .unwrap();
        assert_eq!(pr.labels.len(), 30);
        // 10 classes: chance is 10%; 3 photos per class (6 training rows) give more.
        assert!(pr.accuracy() > 0.2, "{model}: {}", pr.accuracy());
    }

    // predict computes Lite0's features with the recipe's own convention and views.
    let globals = cli::Globals {
        config: p.path().join("pipeline.toml"),
        set: set.iter().map(|s| s.to_string()).collect(),
        quiet: true,
    };
    for model in ["logreg", "ensemble"] {
        let args = xtask::PredictArgs {
            images: vec![ds.join("evaluation/0_0.jpg")],
            model: model.to_string(),
        };
        xtask::predict(&args, &globals).unwrap_or_else(|e| panic!("{model}: {e:#}"));
    }

    // The ablation ladder reads the Lite0 extraction as it reads VGG16's.
    let (_, rows) = crate::run_ladder(
        &p,
        &globals,
        "[[step]]\nname = \"head average only\"\nconfig = \"pipeline.toml\"\ntargets = [\"logreg\"]\nset = ['stage.describe.params.parts=[\"head.avg\"]']\n",
    );
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert!(
        rows[0]["descriptor"]
            .as_str()
            .unwrap()
            .contains("head.avg]"),
        "{rows}"
    );
    assert!(rows[0]["logreg"]["test"].as_f64().is_some(), "{rows}");

    // A second run executes nothing; a logistic-regression grid change reruns it and what
    // reads it, nothing upstream.
    assert!(p.run(&[], &set).ran().is_empty());
    let grid = "stage.logreg.params.cs=[1.0, 10.0]";
    let s = p.run(&[], &[set[0], set[1], grid]);
    let mut ran = s.ran();
    ran.sort();
    assert_eq!(ran, ["ensemble", "logreg", "report"]);
}

#[test]
fn a_pool5_descriptor_on_lite0_features_is_refused_with_the_right_name() {
    let Some((p, weights)) = lite0_project(1) else {
        return;
    };
    let set = [
        weights.as_str(),
        "threads=2",
        r#"stage.describe.params.parts=["pool5.avg"]"#,
    ];
    let e = crate::failed_run_error(&p, "describe", &set);
    assert!(
        e.contains("pools `pool5` maps") && e.contains("\"head.avg\""),
        "{e}"
    );
}

#[test]
fn a_sharded_lite0_extraction_equals_an_unsharded_run_byte_for_byte() {
    let project = || lite0_project(1);
    let Some((local, weights)) = project() else {
        return;
    };
    // Small chunks, so that shards cut splits in the middle.
    let set = [
        weights.as_str(),
        "threads=2",
        "stage.preprocess.params.chunk_size=4",
    ];
    local.run(&["lite0-extract"], &set);
    let want = crate::output_digests(&local, &["lite0-extract"]);
    let (sharded, _) = project().unwrap();
    sharded.run(&["preprocess"], &set);
    // 9 units (3 chunks of at most 4 per split) in 4 shards.
    crate::run_shards(&sharded, "lite0-extract", 4, &set);
    sharded.run_opts(
        pipeline::RunOptions {
            targets: vec!["lite0-extract".to_string()],
            gather: Some(4),
            ..Default::default()
        },
        &set,
    );
    assert_eq!(crate::output_digests(&sharded, &["lite0-extract"]), want);
}

#[test]
fn missing_lite0_weights_outside_the_default_path_are_an_error_not_a_download() {
    let p = Project::new(&lite0_toml());
    std::fs::create_dir_all(p.path().join("ds/training")).unwrap();
    let nowhere = p.path().join("nowhere");
    let set = format!(
        "weights.path={}",
        nowhere.join("efficientnet_lite0.safetensors").display()
    );
    let e = pipeline::run(
        &p.config(&[set.as_str()]),
        &xtask::registry(),
        &pipeline::RunOptions {
            targets: vec!["lite0-extract".into()],
            ..Default::default()
        },
        &pipeline::Progress::silent(),
    )
    .map(|_| ())
    .expect_err("the run must stop")
    .to_string();
    assert!(e.contains("is the path mistyped?"), "{e}");
    assert!(
        e.contains("fetch weights --backbone efficientnet-lite0"),
        "{e}"
    );
    assert!(!nowhere.exists(), "nothing was downloaded");
}
