//! Images per second of decode + resize over every file of a folder, with the stage's thread
//! pool size (`--threads N`, default all cores). Used by `scripts/bench_vs_pillow.sh`.
//! Usage: `cargo run --release -p preprocess --example throughput -- DIR [--threads N] [--reps R]`

use rayon::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .expect("usage: throughput DIR [--threads N] [--reps R]");
    let get = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let threads = get("--threads", 0);
    let reps = get("--reps", 3);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("readable folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let p = preprocess::Params::default();
    let mut rates = Vec::new();
    for r in 0..reps {
        let t = std::time::Instant::now();
        // Reading the files is part of the work, as in the Pillow path.
        let n: usize = pool.install(|| {
            files
                .par_iter()
                .map(|f| {
                    let bytes = std::fs::read(f).expect("readable file");
                    preprocess::preprocess_one(&bytes, &p)
                        .map(|_| 1)
                        .unwrap_or(0)
                })
                .sum()
        });
        let s = t.elapsed().as_secs_f64();
        rates.push(n as f64 / s);
        println!(
            "rust run={} images={n} seconds={s:.2} img/s={:.1}",
            r + 1,
            n as f64 / s
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "RESULT rust preprocess threads={} median img/s={:.1}",
        pool.current_num_threads(),
        rates[rates.len() / 2]
    );
}
