//! The study's stages end to end, through the runner, on the synthetic default and on a slice
//! of the shared real photos.

use study_tests::{food_slice, shared, Project};

fn pipeline_toml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../pipeline.toml"))
        .unwrap()
        .replace("cache = \"data/cache\"", "cache = \"cache\"")
}

fn meta_len(a: &pipeline::Artifact, key: &str) -> usize {
    a.meta[key]
        .as_array()
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

#[test]
fn synthetic_default_dataset_flows_through_loader_and_preprocess() {
    let p = Project::new(&pipeline_toml());
    p.run(&["preprocess"], &[]);
    let manifest = p.artifact("loader", "manifest");
    assert_eq!(manifest.meta["synthetic"], true);
    assert_eq!(manifest.meta["classes"].as_array().unwrap().len(), 11);
    let train = p.artifact("preprocess", "training");
    assert_eq!(train.rows("images"), 11 * 16);
    assert_eq!(
        p.artifact("preprocess", "evaluation").rows("labels"),
        11 * 6
    );
    let c = p.chunk(&train, 0);
    let (shape, _) = c.u8("images").unwrap();
    assert_eq!(&shape[1..], [224, 224, 3]);
    assert_eq!(train.meta["synthetic"], true);
    // Deterministic: a second project gets the same artifacts.
    let q = Project::new(&pipeline_toml());
    q.run(&["preprocess"], &[]);
    assert_eq!(q.artifact("preprocess", "training").digest, train.digest);
}

#[test]
fn real_photo_slice_is_loaded_and_preprocessed() {
    let Some(shared) = shared() else { return };
    let p = Project::new(&pipeline_toml().replace("root = \"\"", "root = \"ds\""));
    std::fs::create_dir_all(p.path().join("ds")).unwrap();
    food_slice(&shared, &p.path().join("ds"), 3);
    p.run(&["preprocess"], &[]);
    let manifest = p.artifact("loader", "manifest");
    assert_eq!(manifest.meta["synthetic"], false);
    assert_eq!(manifest.meta["classes"][3], "beef_carpaccio");
    assert_eq!(
        manifest.meta["class_counts"]["training"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(meta_len(&manifest, "skipped"), 0);
    for split in ["training", "validation", "evaluation"] {
        let a = p.artifact("preprocess", split);
        assert_eq!(a.rows("images"), 30, "{split}");
        assert_eq!(meta_len(&a, "skipped"), 0);
    }
    let c = p.chunk(&p.artifact("preprocess", "training"), 0);
    let (_, labels) = c.i64("labels").unwrap();
    assert_eq!(&labels[..6], [0, 0, 0, 1, 1, 1]);
}

#[test]
fn undecodable_file_is_skipped_by_preprocess_and_listed() {
    let Some(shared) = shared() else { return };
    let p = Project::new(&pipeline_toml().replace("root = \"\"", "root = \"ds\""));
    let ds = p.path().join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    food_slice(&shared, &ds, 1);
    // A JPEG cut in half: its header is fine (the loader keeps it), its pixels are not.
    let whole = std::fs::read(shared.join("datasets/food101-10/training/0_1.jpg")).unwrap();
    std::fs::write(ds.join("training/0_1.jpg"), &whole[..whole.len() / 2]).unwrap();
    p.run(&["preprocess"], &[]);
    let train = p.artifact("preprocess", "training");
    assert_eq!(train.rows("images"), 10);
    let skipped = train.meta["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["path"], "training/0_1.jpg");
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("truncated"),
        "{skipped:?}"
    );
    // With on_bad_file = "error" the stage stops and names the file.
    let opts = pipeline::RunOptions {
        targets: vec!["preprocess".into()],
        ..Default::default()
    };
    let cfg = p.config(&["stage.preprocess.params.on_bad_file=error"]);
    let s = pipeline::run(
        &cfg,
        &xtask::registry(),
        &opts,
        &pipeline::Progress::new(true),
    )
    .unwrap();
    let err = s.check().unwrap_err().to_string();
    assert!(
        err.contains("training/0_1.jpg: corrupt or truncated image"),
        "{err}"
    );
}

#[test]
fn report_renders_in_a_real_browser() {
    let p = Project::new(&pipeline_toml().replace("out = \"data/report\"", "out = \"report\""));
    // The shared weights when present (no download); otherwise the stage fetches them.
    let weights = shared().map(|s| {
        format!(
            "weights.path={}",
            s.join("weights/vgg16_notop.safetensors").display()
        )
    });
    let set: Vec<&str> = weights.iter().map(String::as_str).collect();
    let s = p.run(&["report"], &set);
    let rec = &s.records["report"];
    let chunk = p.chunk(&rec.outputs["report"], 0);
    let out = p.path().join("report");
    report::write_folder(&chunk, &out, &[], &serde_json::json!({"seed": 1})).unwrap();
    for f in [
        "index.html",
        "metrics.json",
        "samples.png",
        "classes_training.svg",
        "summary.md",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let Some((shot, dom)) = study_tests::render_html(&out.join("index.html"), 1200, 3000) else {
        return;
    };
    // Every figure made it into the page: 3 class-distribution charts, a confusion heatmap per
    // model, accuracy and loss curves for the two networks, and 16 sample images.
    let mut svg_files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".svg"))
        .collect();
    svg_files.sort();
    let expected = [
        "classes_evaluation.svg",
        "classes_training.svg",
        "classes_validation.svg",
        "confusion_head-nn.svg",
        "confusion_logreg.svg",
        "confusion_scratch-cnn.svg",
        "curves_head-nn_accuracy.svg",
        "curves_head-nn_loss.svg",
        "curves_scratch-cnn_accuracy.svg",
        "curves_scratch-cnn_loss.svg",
    ];
    assert_eq!(svg_files, expected, "figure files");
    assert_eq!(
        dom.matches("<svg").count(),
        expected.len(),
        "inline SVG figures"
    );
    assert_eq!(
        dom.matches("data:image/png;base64,").count(),
        16,
        "sample images"
    );
    assert!(dom.contains("Comparison with the study") && dom.contains("Skipped files (0)"));
    // The screenshot is not blank: many distinct colours, and plenty of non-white pixels.
    let img = image::open(&shot).unwrap().to_rgb8();
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let colours: std::collections::BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        non_white > img.pixels().len() / 20,
        "page looks blank: {non_white} non-white pixels"
    );
    assert!(
        colours.len() > 500,
        "page looks blank: {} colours",
        colours.len()
    );
}
