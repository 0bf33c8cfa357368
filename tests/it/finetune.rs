//! Fine-tuning (`xtask/pipelines/finetune.toml`) on food101-10 slices: the stored conv5_2 maps
//! continued by the top block reproduce vgg-extract's pool5; a run with no trained epoch keeps
//! the ImageNet conv5_3; the recipe end to end, whose second run executes nothing and whose
//! fine-tuning hyperparameter reruns only `finetune` and the report.

use study_tests::{food_slice, shared, Project};

use crate::weights_setting;

/// `xtask/pipelines/finetune.toml` with its paths inside a temporary project, plus `extra`.
fn finetune_project(per_class: usize, extra: &str) -> Option<(Project, std::path::PathBuf)> {
    let shared = shared()?;
    let toml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xtask/pipelines/finetune.toml"
    ))
    .unwrap()
    .replace("cache = \"../../data/cache\"", "cache = \"cache\"")
    .replace("out = \"../../data/report-finetune\"", "out = \"report\"")
    .replace("root = \"\"", "root = \"ds\"");
    let p = Project::new(&format!("{toml}\n{extra}"));
    let ds = p.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    food_slice(&shared, &ds, per_class);
    Some((p, shared))
}

fn weights_path(shared: &std::path::Path) -> std::path::PathBuf {
    shared.join("weights/vgg16_notop.safetensors")
}

/// Runs `finetune` with `set`; its run record, test and validation predictions.
fn run_finetune(
    p: &Project,
    set: &[&str],
) -> (
    pipeline::RunRecord,
    contracts::Predictions,
    contracts::Predictions,
) {
    let s = p.run(&["finetune"], set);
    let store = p.store();
    let read = |name: &str| {
        contracts::Predictions::read(&pipeline::InputArtifact::new(
            &p.artifact("finetune", name),
            &store,
        ))
        .unwrap()
    };
    (
        s.records["finetune"].clone(),
        read("predictions"),
        read("validation-predictions"),
    )
}

/// Quick fine-tuning settings for a slice.
const QUICK: [&str; 4] = [
    "stage.finetune.params.epochs=4",
    "stage.finetune.params.batch_size=8",
    "stage.finetune.params.lr_head=0.003",
    "threads=2",
];

#[test]
fn conv5_3_on_stored_conv5_2_maps_reproduces_vgg_extracts_pool5() {
    let extract = "[stage.vgg-extract]\nneeds = [\"preprocess\"]\ninputs = [\"weights.path\"]\nparams = { convention = \"caffe\", batch_size = 16, views = [\"original\", \"flip\"] }\n";
    let Some((p, shared)) = finetune_project(1, extract) else {
        return;
    };
    let w = weights_setting(&shared);
    p.run(&["vgg-extract", "vgg-activations"], &[&w, "threads=2"]);
    let (weights, _) = finetune::read_vgg16(&weights_path(&shared)).unwrap();
    let (layers, at) =
        finetune::pretrained_layers(&weights, "conv5_2", (14, 14, 512), "conv5_3").unwrap();
    assert_eq!(at, 0);
    let net = finetune::TopNet::new(
        layers,
        finetune::Head {
            pooling: finetune::Pooling::Avg,
            d: 512,
            k: 10,
            weight: vec![0.0; 5120],
            bias: vec![0.0; 10],
        },
    );
    let store = p.store();
    for split in ["training", "validation", "evaluation"] {
        let a = p.artifact("vgg-activations", split);
        let maps = contracts::FeaturesReader::new(pipeline::InputArtifact::new(&a, &store));
        let f = p.artifact("vgg-extract", split);
        let pool5 = contracts::FeaturesReader::new(pipeline::InputArtifact::new(&f, &store));
        assert_eq!(
            maps.layout().and_then(finetune::layer_of_layout),
            Some("conv5_2")
        );
        for view in ["features", "features@flip"] {
            let (shape, x) = maps.chunk_tensor(0, view).unwrap();
            assert_eq!(shape[1..], [14, 14, 512], "{split} {view}");
            let (_, want) = pool5.chunk_tensor(0, view).unwrap();
            let got = net.pool5(&x, shape[0]);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= 1e-4 * scale,
                "{split} {view}: pool5 differs by {worst} (scale {scale})"
            );
        }
    }
}

#[test]
fn the_finetune_recipe_runs_end_to_end_and_reruns_only_what_a_change_touches() {
    let Some((p, shared)) = finetune_project(3, "") else {
        return;
    };
    let w = weights_setting(&shared);
    let set = [w.as_str(), QUICK[0], QUICK[1], QUICK[2], QUICK[3]];
    let s = p.run(&[], &set);
    let mut ran = s.ran();
    ran.sort();
    assert_eq!(
        ran,
        [
            "finetune",
            "loader",
            "preprocess",
            "report",
            "vgg-activations"
        ]
    );
    let store = p.store();
    let a = p.artifact("vgg-activations", "training");
    let maps = contracts::FeaturesReader::new(pipeline::InputArtifact::new(&a, &store));
    assert_eq!(maps.views().unwrap(), ["original", "flip"]);
    assert_eq!(maps.len(), 30);
    let preds = p.artifact("finetune", "predictions");
    let pr = contracts::Predictions::read(&pipeline::InputArtifact::new(&preds, &store)).unwrap();
    assert_eq!(pr.labels.len(), 30);
    // 10 classes (chance 10%), 3 training photos per class: above chance, and the 60
    // training rows learnt.
    assert!(pr.accuracy() >= 0.2, "{}", pr.accuracy());
    let h = contracts::History::read(&pipeline::InputArtifact::new(
        &p.artifact("finetune", "history"),
        &store,
    ))
    .unwrap();
    assert_eq!(h.epochs.len(), 4);
    assert!(h.epochs[3].accuracy > 0.9, "{:?}", h.epochs);
    let bundle = contracts::ReportBundle::read(&pipeline::InputArtifact::new(
        &s.records["report"].outputs["report"],
        &store,
    ))
    .unwrap();
    let metrics: serde_json::Value = serde_json::from_slice(&bundle.files["metrics.json"]).unwrap();
    assert!(
        metrics["models"]["finetune"].is_object(),
        "the report shows the fine-tuned model: {metrics}"
    );

    // predict computes the stored layer's maps with the pipeline's own preprocessing and
    // views, then the fine-tuned block and head.
    let globals = cli::Globals {
        config: p.path().join("pipeline.toml"),
        set: set.iter().map(|s| s.to_string()).collect(),
        quiet: true,
    };
    let args = xtask::PredictArgs {
        images: vec![p.path().join("ds/evaluation/0_0.jpg")],
        model: "finetune".into(),
    };
    xtask::predict(&args, &globals).unwrap_or_else(|e| panic!("{e:#}"));

    // The ablation ladder reads the stored maps as an extraction and tabulates the
    // fine-tuned network with its training time; the frozen step is one more finetune run.
    let (_, rows) = crate::run_ladder(
        &p,
        &globals,
        "[[step]]\nname = \"frozen\"\nconfig = \"pipeline.toml\"\ntargets = [\"finetune\"]\nset = [\"stage.finetune.params.frozen_epochs=4\"]\n[[step]]\nname = \"fine-tuned on 12x12 windows, 3x3 grid head\"\nconfig = \"pipeline.toml\"\ntargets = [\"finetune\"]\nset = [\"stage.finetune.params.map_crop=12\", 'stage.finetune.params.pooling=\"avg3x3\"']\n",
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(r["finetune"]["test"].as_f64().is_some(), "{r}");
        assert!(r["finetune_seconds"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["descriptor"].as_str().unwrap().contains("conv5_2"), "{r}");
    }

    assert!(
        p.run(&[], &set).ran().is_empty(),
        "a second run executes nothing"
    );
    let s = p.run(
        &[],
        &[
            set[0],
            set[1],
            set[2],
            set[3],
            set[4],
            "stage.finetune.params.lr_conv=0.002",
        ],
    );
    let mut ran = s.ran();
    ran.sort();
    assert_eq!(ran, ["finetune", "report"]);
}

#[test]
fn no_trained_epoch_keeps_the_pretrained_conv5_3_and_a_wrong_layer_is_refused() {
    let Some((p, shared)) = finetune_project(1, "") else {
        return;
    };
    let w = weights_setting(&shared);
    let set = [
        w.as_str(),
        "stage.finetune.params.epochs=1",
        "stage.finetune.params.frozen_epochs=1",
        "stage.finetune.params.batch_size=8",
        "threads=2",
    ];
    p.run(&["finetune"], &set);
    let model = p.artifact("finetune", "model");
    let (tensors, _) = contracts::slots::nn_model("finetune")
        .read_from::<(Vec<contracts::NamedTensor>, Vec<String>)>(pipeline::InputArtifact::new(
            &model,
            &p.store(),
        ))
        .unwrap();
    let (weights, _) = finetune::read_vgg16(&weights_path(&shared)).unwrap();
    let (layers, _) =
        finetune::pretrained_layers(&weights, "conv5_2", (14, 14, 512), "conv5_3").unwrap();
    let k = tensors.iter().find(|t| t.name == "conv5_3.kernel").unwrap();
    assert_eq!(k.shape, [3, 3, 512, 512]);
    assert!(
        k.data == layers[0].kernel,
        "conv5_3 changed without a trained epoch"
    );

    let e = crate::failed_run_error(
        &p,
        "finetune",
        &[w.as_str(), "stage.finetune.params.train_from=\"conv5_2\""],
    );
    assert!(
        e.contains("conv5_2") && e.contains("store a lower layer"),
        "{e}"
    );
    let e = crate::failed_run_error(
        &p,
        "finetune",
        &[w.as_str(), "stage.finetune.params.map_crop=16"],
    );
    assert!(e.contains("map_crop 16 is larger than the stored"), "{e}");
}

#[test]
fn members_train_as_single_runs_of_their_seeds_and_their_probabilities_are_averaged() {
    let Some((p, shared)) = finetune_project(1, "") else {
        return;
    };
    let w = weights_setting(&shared);
    let quick = [
        w.as_str(),
        "stage.finetune.params.epochs=2",
        "stage.finetune.params.batch_size=8",
        "threads=2",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        quick.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let outputs = |set: &[String]| {
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        p.run(&["finetune"], &set);
        let store = p.store();
        let (tensors, _) = contracts::slots::nn_model("finetune")
            .read_from::<(Vec<contracts::NamedTensor>, Vec<String>)>(pipeline::InputArtifact::new(
                &p.artifact("finetune", "model"),
                &store,
            ))
            .unwrap();
        let probs = |name: &str| {
            contracts::Predictions::read(&pipeline::InputArtifact::new(
                &p.artifact("finetune", name),
                &store,
            ))
            .unwrap()
            .probs
        };
        (
            tensors,
            probs("predictions"),
            probs("validation-predictions"),
        )
    };
    // Two members of seed 1 train with the draws of seeds 1 and 1 + 1 * 2.
    let pair = with(&["stage.finetune.params.members=2"]);
    let (both, test, val) = outputs(&pair);
    let (one, test1, val1) = outputs(&with(&["seed=1"]));
    let (three, test3, val3) = outputs(&with(&["seed=3"]));
    assert_eq!(both.len(), 2 * one.len());
    for t in &one {
        let m0 = both.iter().find(|b| b.name == t.name).unwrap();
        assert!(m0.data == t.data, "member 0's {} is seed 1's", t.name);
        let t3 = three.iter().find(|b| b.name == t.name).unwrap();
        let m1 = both
            .iter()
            .find(|b| b.name == format!("member1.{}", t.name))
            .unwrap();
        assert!(m1.data == t3.data, "member 1's {} is seed 3's", t.name);
    }
    assert!(one.iter().zip(&three).any(|(a, b)| a.data != b.data));
    for (what, got, a, b) in [("test", &test, &test1, &test3), ("val", &val, &val1, &val3)] {
        let mean: Vec<f32> = a.iter().zip(b.iter()).map(|(x, y)| (x + y) / 2.0).collect();
        assert!(got == &mean, "{what}: the members' mean probabilities");
    }
    // predict reads both members.
    let globals = cli::Globals {
        config: p.path().join("pipeline.toml"),
        set: pair,
        quiet: true,
    };
    let args = xtask::PredictArgs {
        images: vec![p.path().join("ds/evaluation/0_0.jpg")],
        model: "finetune".into(),
    };
    xtask::predict(&args, &globals).unwrap_or_else(|e| panic!("{e:#}"));
    let e = pipeline::run(
        &p.config(&[w.as_str(), "stage.finetune.params.members=0"]),
        &xtask::registry(),
        &pipeline::RunOptions::default(),
        &pipeline::Progress::silent(),
    )
    .err()
    .map(|e| format!("{e:#}"))
    .expect("members = 0 is refused");
    assert!(e.contains("members must be positive"), "{e}");
}

/// The evaluation split's stored maps, handed to a predictor as `predict` would compute them.
struct StoredEvaluation(contracts::predictor::StoredMaps, usize);

impl contracts::predictor::ModelInputs for StoredEvaluation {
    fn len(&self) -> usize {
        self.1
    }
    fn images(&mut self) -> contracts::Result<(&[u8], usize)> {
        Err("not asked".into())
    }
    fn features(&mut self, _: contracts::FeatureSource) -> contracts::Result<(Vec<f32>, usize)> {
        Err("not asked".into())
    }
    fn probabilities(&mut self, _: &str) -> contracts::Result<(Vec<f32>, Vec<String>)> {
        Err("not asked".into())
    }
    fn activations(&mut self) -> contracts::Result<contracts::predictor::StoredMaps> {
        Ok(self.0.clone())
    }
}

#[test]
fn evaluate_both_averages_each_members_best_and_final_networks() {
    let Some((p, shared)) = finetune_project(1, "") else {
        return;
    };
    let w = weights_setting(&shared);
    // A learning rate high enough that the last epoch is not the one with the lowest
    // validation loss: the two weight sets differ.
    let quick = [
        w.as_str(),
        "stage.finetune.params.epochs=4",
        "stage.finetune.params.batch_size=8",
        "stage.finetune.params.lr_conv=0.003",
        "stage.finetune.params.lr_head=0.01",
        "threads=2",
    ];
    let run = |extra: &[&str]| {
        let set: Vec<&str> = quick.iter().chain(extra).copied().collect();
        let (rec, test, val) = run_finetune(&p, &set);
        (rec, test.probs, val.probs)
    };
    let (rec_best, test_best, val_best) = run(&["stage.finetune.params.evaluate=\"best\""]);
    let (_, test_final, val_final) = run(&["stage.finetune.params.evaluate=\"final\""]);
    let (rec_both, test_both, val_both) = run(&["stage.finetune.params.evaluate=\"both\""]);
    let store = p.store();
    let h = contracts::History::read(&pipeline::InputArtifact::new(
        &rec_best.outputs["history"],
        &store,
    ))
    .unwrap();
    let best_epoch = (0..h.epochs.len())
        .reduce(|a, b| {
            if h.epochs[b].val_loss < h.epochs[a].val_loss {
                b
            } else {
                a
            }
        })
        .unwrap();
    assert!(
        best_epoch + 1 < h.epochs.len(),
        "the test needs a best epoch before the last: {:?}",
        h.epochs
    );
    assert!(test_best != test_final);
    for (what, got, b, f) in [
        ("test", &test_both, &test_best, &test_final),
        ("val", &val_both, &val_best, &val_final),
    ] {
        let mean: Vec<f32> = b.iter().zip(f.iter()).map(|(x, y)| (x + y) / 2.0).collect();
        assert!(
            got == &mean,
            "{what}: the mean of the best and final networks"
        );
    }
    // The ablation ladder scores the stage on its stored validation predictions.
    let (_, rows) = crate::run_ladder(
        &p,
        &cli::Globals {
            config: p.path().join("pipeline.toml"),
            set: quick.iter().map(|s| s.to_string()).collect(),
            quiet: true,
        },
        "[[step]]\nname = \"both\"\nconfig = \"pipeline.toml\"\ntargets = [\"finetune\"]\nset = ['stage.finetune.params.evaluate=\"both\"']\n",
    );
    let val = contracts::Predictions::read(&pipeline::InputArtifact::new(
        &rec_both.outputs["validation-predictions"],
        &store,
    ))
    .unwrap()
    .accuracy();
    assert_eq!(rows[0]["finetune"]["validation"].as_f64(), Some(val));

    // The predictor of two members with both weight sets gives the stage's probabilities
    // from the evaluation split's stored maps.
    let (rec_pair, test_pair, _) = run(&[
        "stage.finetune.params.evaluate=\"both\"",
        "stage.finetune.params.members=2",
    ]);
    let eval_maps = p.artifact("vgg-activations", "evaluation");
    let maps = contracts::FeaturesReader::new(pipeline::InputArtifact::new(&eval_maps, &store));
    let views = maps.views().unwrap();
    let mut stored = contracts::predictor::StoredMaps {
        views: vec![Vec::new(); views.len()],
        shape: (0, 0, 0),
    };
    for i in 0..maps.chunks() {
        let c = maps.mapped(i).unwrap();
        stored.shape = (c.shape[1], c.shape[2], c.shape[3]);
        for (v, name) in views.iter().enumerate() {
            let bytes = c.view_bytes(name).unwrap();
            stored.views[v].extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
    }
    let predictor = finetune::FinetunePredictor::from_record(&rec_pair, &store).unwrap();
    let got = contracts::predictor::Predictor::predict(
        &predictor,
        &mut StoredEvaluation(stored, maps.len()),
    )
    .unwrap();
    assert_eq!(got.len(), test_pair.len());
    let worst = got
        .iter()
        .zip(&test_pair)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "predict against the stage: {worst}");
    assert!(test_pair != test_both, "the second member counts");
}

#[test]
fn train_on_training_and_validation_learns_the_validation_images() {
    let Some((p, shared)) = finetune_project(1, "") else {
        return;
    };
    let w = weights_setting(&shared);
    let quick = [
        w.as_str(),
        "stage.finetune.params.epochs=4",
        "stage.finetune.params.batch_size=8",
        "stage.finetune.params.lr_head=0.003",
        "stage.finetune.params.evaluate=\"final\"",
        "threads=2",
    ];
    let run = |extra: &[&str]| {
        let set: Vec<&str> = quick.iter().chain(extra).copied().collect();
        let (_, test, val) = run_finetune(&p, &set);
        (test, val)
    };
    let cross_entropy = |q: &contracts::Predictions| {
        q.probs
            .chunks_exact(q.n_classes)
            .zip(&q.labels)
            .map(|(row, &y)| -(row[y as usize].max(1e-12) as f64).ln())
            .sum::<f64>()
            / q.labels.len() as f64
    };
    let (test, val) = run(&[]);
    let (test_refit, val_refit) = run(&["stage.finetune.params.train_on=\"training+validation\""]);
    assert!(
        test.probs != test_refit.probs,
        "the refit trains on more images"
    );
    let (seen, unseen) = (cross_entropy(&val_refit), cross_entropy(&val));
    assert!(
        seen < unseen,
        "the refit has learnt the validation images: their loss {seen} against {unseen}"
    );
    // The ablation ladder shows no validation accuracy for it.
    let (out, rows) = crate::run_ladder(
        &p,
        &cli::Globals {
            config: p.path().join("pipeline.toml"),
            set: quick.iter().map(|s| s.to_string()).collect(),
            quiet: true,
        },
        "[[step]]\nname = \"plain\"\nconfig = \"pipeline.toml\"\ntargets = [\"finetune\"]\n\n[[step]]\nname = \"refit\"\nconfig = \"pipeline.toml\"\ntargets = [\"finetune\"]\nset = ['stage.finetune.params.train_on=\"training+validation\"']\n",
    );
    assert!(rows[0]["finetune"]["validation"].as_f64().is_some());
    assert!(rows[1]["finetune"]["validation"].is_null(), "{rows}");
    assert_eq!(
        rows[1]["finetune"]["test"].as_f64(),
        Some(test_refit.accuracy())
    );
    let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert!(
        md.contains("| refit |") && md.contains("(trained on)"),
        "{md}"
    );
    // The validation loss cannot pick weights the network was trained on.
    let e = pipeline::run(
        &p.config(&[
            w.as_str(),
            "stage.finetune.params.train_on=\"training+validation\"",
            "stage.finetune.params.evaluate=\"best\"",
        ]),
        &xtask::registry(),
        &pipeline::RunOptions::default(),
        &pipeline::Progress::silent(),
    )
    .err()
    .map(|e| format!("{e:#}"))
    .expect("train_on with evaluate = best is refused");
    assert!(
        e.contains("needs evaluate = \"final\" and patience = 0"),
        "{e}"
    );
}
