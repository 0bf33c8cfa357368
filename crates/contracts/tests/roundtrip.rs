//! Every contract written by one stage and read back by another through the real runner
//! (content-addressed blobs, run records, memory-mapped chunks): what a reader gets is what
//! the writer put, field for field.

use std::collections::BTreeMap;

use contracts::{
    ids, outputs, BlendCandidate, BlendChoice, Choice, Entry, EpochRecord, Evaluate, FeaturesMeta,
    FeaturesReader, FeaturesWriter, Grid, History, ImagesMeta, ImagesReader, ImagesWriter,
    LogRegChoice, LogRegFit, LogRegModel, Manifest, ManifestArtifact, ManifestMeta, ManifestReader,
    ModelSummary, NamedTensor, NnModel, Predictions, PredictionsMeta, ReportBundle, Skipped,
    StoredScores,
};
use pipeline::{BoxError, Config, Progress, Registry, RunOptions, Stage};
use pipeline::{StageContext, Tensor, Validate};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct NoParams {}
impl Validate for NoParams {}

/// A stage that runs one function.
struct Step {
    id: &'static str,
    outputs: &'static [&'static str],
    run: fn(&StageContext<'_>) -> Result<(), BoxError>,
}

impl Stage for Step {
    type Params = NoParams;
    fn id(&self) -> &'static str {
        self.id
    }
    fn code_version(&self) -> String {
        "roundtrip".into()
    }
    fn outputs(&self) -> &'static [&'static str] {
        self.outputs
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        (self.run)(ctx)
    }
}

fn classes() -> Vec<String> {
    vec!["cat".into(), "dog".into()]
}

fn manifest() -> Manifest {
    let e = |p: &str, label| Entry {
        path: p.into(),
        label,
        digest: format!("d-{p}"),
    };
    Manifest {
        layout: "food11".into(),
        synthetic: false,
        classes: classes(),
        splits: BTreeMap::from([
            (
                "training".into(),
                vec![e("training/0_0.jpg", 0), e("training/1_0.jpg", 1)],
            ),
            ("validation".into(), vec![e("validation/0_0.jpg", 0)]),
            ("evaluation".into(), vec![e("evaluation/1_0.jpg", 1)]),
        ]),
        skipped: vec![Skipped {
            path: "training/x.txt".into(),
            reason: "not an image".into(),
        }],
        leakage: vec![vec!["training/0_0.jpg".into(), "validation/0_0.jpg".into()]],
    }
}

fn images_meta() -> ImagesMeta {
    ImagesMeta {
        classes: classes(),
        count: 2,
        skipped: manifest().skipped,
        synthetic: false,
    }
}

fn features_meta() -> FeaturesMeta {
    FeaturesMeta {
        classes: Some(classes()),
        synthetic: Some(false),
        convention: "caffe".into(),
        weights_digest: "w123".into(),
        views: vec!["original".into(), "flip".into()],
        taps: vec!["conv5_3".into()],
        layout: Some("a descriptor".into()),
        backbone: Some(contracts::Backbone::Lite0),
    }
}

fn tensor(name: &str, shape: Vec<usize>) -> NamedTensor {
    let n = shape.iter().product::<usize>();
    NamedTensor {
        name: name.into(),
        shape,
        data: (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
    }
}

fn nn_model() -> NnModel {
    NnModel {
        final_weights: vec![
            tensor("dense.kernel", vec![3, 2]),
            tensor("dense.bias", vec![2]),
        ],
        best_weights: vec![
            tensor("dense.kernel", vec![3, 2]),
            tensor("dense.bias", vec![2]),
        ]
        .into_iter()
        .map(|mut t| {
            t.data.iter_mut().for_each(|v| *v += 1.0);
            t
        })
        .collect(),
        best_epoch: 2,
        evaluate: Evaluate::Best,
        classes: classes(),
    }
}

fn history() -> History {
    History {
        epochs: (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                loss: 1.0 / e as f64,
                accuracy: 0.2 * e as f64,
                val_loss: 1.5 / e as f64,
                val_accuracy: 0.1 * e as f64,
                seconds: 0.25 * e as f64,
            })
            .collect(),
    }
}

fn logreg_choice() -> LogRegChoice {
    LogRegChoice {
        c: 0.1,
        solver: "lbfgs".into(),
        val_accuracy: 0.75,
    }
}

fn logreg_model() -> LogRegModel {
    LogRegModel {
        coef: vec![0.5, -0.25, 1.0, 2.0, -3.0, 0.125],
        intercept: vec![0.1, -0.1],
        n_features: 3,
        best: logreg_choice(),
        classes: classes(),
    }
}

fn predictions() -> Predictions {
    Predictions {
        pred: vec![1, 0],
        labels: vec![1, 1],
        probs: vec![0.25, 0.75, 0.5, 0.5],
        n_classes: 2,
        index: vec![0, 1],
    }
}

fn net_meta() -> PredictionsMeta {
    PredictionsMeta {
        classes: classes(),
        test_loss: Some(0.693),
        evaluate: Some(Evaluate::Best),
        ..PredictionsMeta::default()
    }
}

fn logreg_meta() -> PredictionsMeta {
    let fit = |c: f64, converged| LogRegFit {
        c,
        solver: "lbfgs".into(),
        val_accuracy: 0.5 + c,
        n_iter: 12,
        converged,
        stop: "Converged".into(),
    };
    PredictionsMeta {
        classes: classes(),
        grid: Some(Grid::LogReg(vec![fit(0.1, true), fit(1.0, false)])),
        best: Some(Choice::LogReg(logreg_choice())),
        grid_seconds: Some(vec![1.5, 2.5]),
        ..PredictionsMeta::default()
    }
}

fn blend_meta() -> PredictionsMeta {
    PredictionsMeta {
        classes: classes(),
        test_loss: Some(0.5),
        grid: Some(Grid::Blend(vec![BlendCandidate {
            head_weight: 0.25,
            val_accuracy: 0.5,
            val_correct: 1,
            val_loss: 0.7,
        }])),
        best: Some(Choice::Blend(BlendChoice {
            head_weight: 0.25,
            val_accuracy: 0.5,
        })),
        ..PredictionsMeta::default()
    }
}

fn bundle() -> ReportBundle {
    ReportBundle {
        files: BTreeMap::from([
            ("index.html".into(), b"<html></html>".to_vec()),
            ("metrics.json".into(), b"{}".to_vec()),
        ]),
        models: vec![ModelSummary {
            model: ids::HEAD_NN.into(),
            test_accuracy: 0.5,
            mean: 0.5,
        }],
    }
}

const IMG: [u8; 2 * 2 * 2 * 3] = [7; 24];
const FEATURES: [f32; 2 * 4] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5];

fn write_all(ctx: &StageContext<'_>) -> Result<(), BoxError> {
    match ctx.stage() {
        "w-manifest" => ManifestArtifact {
            manifest: manifest(),
            dataset: "food",
            synthetic_files: &[],
            stop_on_bad_file: true,
        }
        .write(ctx),
        "w-images" => {
            let mut w = ImagesWriter::new(ctx, outputs::TRAINING)?;
            w.write_chunk(IMG.to_vec(), 2, 2, &[0, 1], &[0, 1])?;
            w.finish(&images_meta())
        }
        "w-features" => {
            let mut w = FeaturesWriter::new(ctx, outputs::TRAINING)?;
            w.write_chunk(&FEATURES, [2, 1, 1, 4], &[0, 1], &[0, 1])?;
            w.finish(&features_meta())
        }
        "w-net" => {
            nn_model().write(ctx)?;
            history().write(ctx)?;
            predictions().write_validation(ctx, &classes())?;
            predictions().write(ctx, &net_meta())
        }
        "w-logreg" => {
            logreg_model().write(ctx)?;
            predictions().write(ctx, &logreg_meta())
        }
        "w-blend" => predictions().write(ctx, &blend_meta()),
        "w-report" => bundle().write(ctx),
        other => Err(format!("no writer {other}").into()),
    }
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: read back {got:?}, wrote {want:?}").into())
    }
}

fn read_all(ctx: &StageContext<'_>) -> Result<(), BoxError> {
    let m = ManifestReader::open(&ctx.input("w-manifest", outputs::MANIFEST)?)?;
    check("manifest", m.manifest, manifest())?;
    check("manifest stop on bad file", m.stop_on_bad_file, true)?;
    let mm = ManifestMeta::read(&ctx.input("w-manifest", outputs::MANIFEST)?)?;
    check("manifest meta classes", mm.classes, classes())?;
    check(
        "manifest meta counts",
        mm.class_counts,
        manifest().class_counts(),
    )?;
    check("manifest meta leakage", mm.leakage, manifest().leakage)?;
    check("manifest meta skipped", mm.skipped, manifest().skipped)?;
    check("manifest meta dataset", mm.dataset.as_str(), "food")?;

    let images = ImagesReader::new(ctx.input("w-images", outputs::TRAINING)?);
    let c = images.chunk(0)?;
    check("images", c.images(), &IMG[..])?;
    check("images labels", c.labels()?, vec![0, 1])?;
    let meta = ImagesMeta::from_meta(&images.input().artifact.meta)?;
    check("images meta", meta, images_meta())?;
    check(
        "images carried",
        images.carried_meta()?,
        (Some(classes()), Some(false)),
    )?;

    let f = FeaturesReader::new(ctx.input("w-features", outputs::TRAINING)?);
    let fc = f.chunk(0)?;
    check("features", fc.features, FEATURES.to_vec())?;
    check("features shape", fc.shape, vec![2, 1, 1, 4])?;
    check(
        "features carried",
        f.carried_meta()?,
        (Some(classes()), Some(false)),
    )?;
    check("features convention", f.convention(), Some("caffe"))?;
    check("features weights", f.weights_digest(), Some("w123"))?;
    check("features views", f.views()?, features_meta().views)?;
    check("features taps", f.taps()?, features_meta().taps)?;
    check(
        "features backbone",
        Some(f.backbone()?),
        features_meta().backbone,
    )?;
    check("features layout", f.layout(), Some("a descriptor"))?;

    let (w, cl) = NnModel::read_selected(&ctx.input("w-net", outputs::MODEL)?)?;
    check("nn model (best weights)", w, nn_model().best_weights)?;
    check("nn model classes", cl, classes())?;
    let h = History::read(&ctx.input("w-net", outputs::HISTORY)?)?;
    check("history", h, history())?;

    for (stage, meta) in [
        ("w-net", net_meta()),
        ("w-logreg", logreg_meta()),
        ("w-blend", blend_meta()),
    ] {
        let input = ctx.input(stage, outputs::PREDICTIONS)?;
        check(stage, Predictions::read(&input)?, predictions())?;
        check(stage, PredictionsMeta::read(&input)?, meta)?;
        check(
            stage,
            PredictionsMeta::stored_scores(&input)?,
            StoredScores {
                test_accuracy: 0.5,
                correct: 1,
                total: 2,
            },
        )?;
    }
    let v = ctx.input("w-net", outputs::VALIDATION_PREDICTIONS)?;
    check(
        "validation predictions",
        Predictions::read(&v)?,
        predictions(),
    )?;
    check("validation classes", contracts::classes(&v)?, classes())?;
    let lr = LogRegModel::read(&ctx.input("w-logreg", outputs::MODEL)?)?;
    check("logreg model", lr, logreg_model())?;
    let b = ReportBundle::read(&ctx.input("w-report", outputs::REPORT)?)?;
    check("report bundle", b, bundle())?;
    ctx.write_single(
        "ok",
        vec![("x", Tensor::from_i64(&[1], &[1]))],
        BTreeMap::new(),
    )?;
    Ok(())
}

#[test]
fn every_contract_reads_back_what_was_written() {
    let writers: [(&'static str, &'static [&'static str]); 7] = [
        ("w-manifest", &[outputs::MANIFEST]),
        ("w-images", &[outputs::TRAINING]),
        ("w-features", &[outputs::TRAINING]),
        (
            "w-net",
            &[
                outputs::MODEL,
                outputs::HISTORY,
                outputs::PREDICTIONS,
                outputs::VALIDATION_PREDICTIONS,
            ],
        ),
        ("w-logreg", &[outputs::MODEL, outputs::PREDICTIONS]),
        ("w-blend", &[outputs::PREDICTIONS]),
        ("w-report", &[outputs::REPORT]),
    ];
    let mut registry = Registry::new();
    let mut toml = String::from("cache = \"cache\"\n");
    for (id, outputs) in writers {
        registry = registry.with(Step {
            id,
            outputs,
            run: write_all,
        });
        toml.push_str(&format!("[stage.{id}]\n"));
    }
    registry = registry.with(Step {
        id: "read",
        outputs: &["ok"],
        run: read_all,
    });
    let needs: Vec<String> = writers.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    toml.push_str(&format!("[stage.read]\nneeds = [{}]\n", needs.join(", ")));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), toml).unwrap();
    let config = Config::load(&dir.path().join("pipeline.toml"), &[]).unwrap();
    let s = pipeline::run(
        &config,
        &registry,
        &RunOptions::default(),
        &Progress::silent(),
    )
    .unwrap();
    s.check().unwrap();
    assert_eq!(s.ran().len(), 8, "{:?}", s.ran());
}
