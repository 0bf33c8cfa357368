//! Times one training step of the scratch CNN (caffe transform, forward, backward, Adam) on
//! random 224x224 images, as `torch_bench.py cnn` does for PyTorch.
//!
//! Usage: cargo run --release -p scratch-cnn --example step_timing -- [REPS] [BATCH] [THREADS] [SIZE]
//! (defaults 5, 32, 2, 224). Prints one line per step and a final `RESULT` line with the median.

use scratch_cnn::{Cnn, Images, Params};
use std::time::Instant;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|s| s.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn main() -> scratch_cnn::Result<()> {
    let (reps, batch, threads, size) = (arg(1, 5), arg(2, 32), arg(3, 2), arg(4, 224));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon pool");
    let n_classes = 11;
    let mut rng = nn_train::Rng::new(0, 0);
    let pixels: Vec<u8> = (0..batch * size * size * 3)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let images = Images::new(&pixels, size, size)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % n_classes as u32).collect();
    let rows: Vec<usize> = (0..batch).collect();
    let mut cnn = Cnn::new(size, size, n_classes, &Params::default(), 0)?;
    println!(
        "ours threads {threads} batch {batch} size {size} parameters {}",
        cnn.parameter_count()
    );
    let mut times = vec![];
    let mut buf = Vec::new();
    for r in 0..=reps {
        let t = Instant::now();
        buf.clear();
        images.caffe_batch(&rows, &mut buf);
        let (loss, _) = cnn.step(&buf, &labels)?;
        let dt = t.elapsed().as_secs_f64();
        if r == 0 {
            println!("warmup loss {:.4} t={dt:.3}s", loss / batch as f64);
            continue;
        }
        times.push(dt);
        println!(
            "ours cnn-train b={batch} run={r} loss={:.4} t={dt:.3}s img/s={:.2}",
            loss / batch as f64,
            batch as f64 / dt
        );
    }
    let t = Instant::now();
    let _ = cnn.logits(&buf)?;
    let fwd = t.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let md = times[times.len() / 2];
    println!(
        "forward only (no backward): t={fwd:.3}s img/s={:.2}",
        batch as f64 / fwd
    );
    println!(
        "RESULT ours cnn-train b={batch} median_t={md:.3}s img/s={:.2} runs={times:.3?}",
        batch as f64 / md
    );
    Ok(())
}
