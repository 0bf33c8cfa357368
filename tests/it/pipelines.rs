//! Every pipeline file and ablation ladder the project ships loads and passes the runner's
//! checks (stages known, params valid), so a recipe the README names cannot rot unnoticed.

use std::path::Path;

#[test]
fn every_shipped_pipeline_and_ladder_step_is_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = xtask::registry();
    let mut files: Vec<_> = std::fs::read_dir(root.join("xtask/pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.push(root.join("pipeline.toml"));
    files.sort();
    let (mut pipelines, mut ladders) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("[[step]]") {
            let steps = xtask::check_ladder(f, &[]).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(steps > 0, "{}", f.display());
            ladders += 1;
        } else {
            let c = pipeline::Config::load_with_paths(f, &[], xtask::PATH_SETTINGS)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            pipeline::check(&c, &registry).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            pipelines += 1;
        }
    }
    assert!(
        pipelines >= 6 && ladders >= 2,
        "{pipelines} pipelines, {ladders} ladders"
    );

    // A mistake in a ladder's last step is refused before any step runs.
    let dir = tempfile::tempdir().unwrap();
    let ladder = dir.path().join("ladder.toml");
    let finetune = root.join("xtask/pipelines/finetune.toml");
    std::fs::write(
        &ladder,
        format!(
            "[[step]]\nname = \"fine\"\nconfig = {0:?}\n[[step]]\nname = \"typo\"\nconfig = {0:?}\nset = ['stage.finetune.params.evaluate=\"last\"']\n",
            finetune.display().to_string()
        ),
    )
    .unwrap();
    let e = format!("{:#}", xtask::check_ladder(&ladder, &[]).unwrap_err());
    assert!(
        e.contains("step `typo`") && e.contains("unknown variant `last`"),
        "{e}"
    );
    let globals = cli::Globals {
        config: root.join("pipeline.toml"),
        set: Vec::new(),
        quiet: true,
    };
    let args = xtask::AblationArgs {
        file: ladder,
        out: Some(dir.path().join("out")),
    };
    let e = format!("{:#}", xtask::ablation(&args, &globals).unwrap_err());
    assert!(e.contains("step `typo`"), "{e}");
    assert!(!dir.path().join("out").exists(), "nothing ran");
}
