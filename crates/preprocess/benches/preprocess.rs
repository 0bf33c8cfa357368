//! Decode + keras resize throughput on real photos of `../shared/datasets/food101-10`.
//! Run: `cargo xtask bench preprocess` (or `cargo bench -p preprocess`). Skips (with a
//! message) when the shared data is absent.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets/food101-10/training");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} not found", dir.display());
        return;
    };
    let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    files.sort();
    files.truncate(64);
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let p = preprocess::Params::default();
    let mut g = c.benchmark_group("preprocess");
    g.sample_size(10);
    g.throughput(Throughput::Elements(bytes.len() as u64));
    g.bench_function("keras_224/64_images", |b| {
        b.iter(|| {
            bytes
                .par_iter()
                .map(|x| preprocess::preprocess_one(x, &p).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
