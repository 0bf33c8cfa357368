//! How long a no-op `run all` takes to decide that nothing must run, with a stage that reads
//! a dataset folder of 16,643 files (Food-11's size). The first run hashes every file; the
//! measured runs only stat them (the stat cache) and find every stage fresh.
//! Run: `cargo xtask bench toy-stages` (or `cargo bench -p toy-stages`).

use criterion::{criterion_group, criterion_main, Criterion};
use pipeline::{Config, Progress, RunOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ds = dir.path().join("ds");
    let splits = [
        ("training", 9866),
        ("validation", 3430),
        ("evaluation", 3347),
    ];
    for (split, n) in splits {
        std::fs::create_dir_all(ds.join(split)).expect("mkdir");
        for i in 0..n {
            std::fs::write(
                ds.join(split).join(format!("{}_{i}.jpg", i % 11)),
                format!("{split} image {i}"),
            )
            .expect("write");
        }
    }
    let toml = "cache = \"cache\"\n[dataset]\nroot = \"ds\"\n[stage.gen]\ninputs = [\"dataset.root\"]\n[stage.square]\nneeds = [\"gen\"]\n[stage.sum]\nneeds = [\"square\"]\n";
    std::fs::write(dir.path().join("pipeline.toml"), toml).expect("write");
    let config = Config::load(&dir.path().join("pipeline.toml"), &[]).expect("config");
    let registry = toy_stages::registry(&Default::default());
    let progress = Progress::silent();
    let opts = RunOptions::default();
    let first = pipeline::run(&config, &registry, &opts, &progress).expect("first run");
    assert_eq!(first.ran().len(), 3);
    // Let the stat cache's racy window pass, then record the entries as trustworthy.
    std::thread::sleep(std::time::Duration::from_secs(3));
    pipeline::run(&config, &registry, &opts, &progress).expect("second run");
    let mut g = c.benchmark_group("noop_run");
    g.sample_size(20);
    g.bench_function("run_all/16643_files", |b| {
        b.iter(|| {
            let s = pipeline::run(&config, &registry, &opts, &progress).expect("run");
            assert!(s.ran().is_empty());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
