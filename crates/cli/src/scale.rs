//! `bench scale`: what the runner costs per input file, from ten thousand files to an
//! ImageNet-sized tree.
//!
//! For each size N it builds (once, kept for later runs) a dataset whose `training/` split
//! holds N symbolic links to the images of a small flat-layout dataset (`<class>_<n>.<ext>`),
//! with that dataset's `validation/`, `evaluation/` and `classes.txt`, and a pipeline of the
//! `loader` alone with its own cache. It then runs this binary as a user would: the first
//! `run loader` from an empty cache, three no-op runs, three `status`, one `run --dry-run`,
//! and prints wall time, CPU time and peak memory (from the kernel's accounting of each
//! child process) per run and per file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "bench scale",
    about = "Costs per file from 10 k to 1.28 M files"
)]
struct ScaleArgs {
    /// Tree sizes (files in training/), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1280000")]
    files: Vec<usize>,
    /// A flat-layout dataset whose images the links point to.
    #[arg(long, default_value = "../shared/datasets/food101-10")]
    source: PathBuf,
    /// Where the trees, pipelines and caches go (kept: a tree is built once).
    #[arg(long, default_value = "target/bench-scale")]
    work: PathBuf,
    /// No-op runs (and `status` runs) per size; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Trees of small regular files instead of links (not images: only `status` is
    /// measured, whose planning digests the tree the same way): what a no-op costs when every
    /// file must be `stat`ed.
    #[arg(long)]
    regular_files: bool,
}

/// One child process's cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: f64,
    user: f64,
    sys: f64,
    max_rss_kb: i64,
}

/// Runs `bench scale` with the arguments after `--`.
pub fn bench_scale(args: &[String]) -> anyhow::Result<()> {
    let a = ScaleArgs::try_parse_from(
        std::iter::once("bench scale".to_string()).chain(args.iter().cloned()),
    )?;
    if a.files.is_empty() || a.files.contains(&0) || a.repeat == 0 {
        bail!("--files needs sizes of at least 1 and --repeat at least 1");
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    std::fs::create_dir_all(&a.work).with_context(|| format!("creating {}", a.work.display()))?;
    let work = std::path::absolute(&a.work)?;
    println!(
        "bench scale: CPU {}; {} threads",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if a.regular_files {
        return regular_trees(&a, &exe, &work);
    }
    let source = std::path::absolute(&a.source)?;
    let images = source_images(&source)?;
    println!("links to {} images of {}", images.len(), source.display());
    let mut rows = Vec::new();
    for &n in &a.files {
        let tree = work.join(format!("tree-{n}"));
        build_tree(&tree, &source, &images, n)?;
        let config = loader_pipeline(&work, &tree, &n.to_string())?;
        let run = |what: &[&str]| measure(&exe, &config, what);
        let first = run(&["run", "loader"])?;
        // Let the tree's folders age past the stat cache's racy window, as a user's would.
        std::thread::sleep(std::time::Duration::from_secs(2));
        run(&["run", "loader"])?;
        let noop = median_of(a.repeat, || run(&["run", "loader"]))?;
        let status = median_of(a.repeat, || run(&["status"]))?;
        let dry = run(&["run", "all", "--dry-run"])?;
        let why = run(&["why", "loader"])?;
        let floor = median_of(a.repeat, || stat_floor(&tree))?;
        let files = (n + images.split_extra) as f64;
        println!(
            "{n:>9} files: first run {:.1} s ({:.0} files/s, peak {} MB); no-op {:.2} s (CPU {:.2} µs/file: user {:.2}, kernel {:.2}; peak {} MB); status {:.2} s; dry run {:.2} s; why {:.2} s; one stat per file {:.2} s (CPU {:.2} µs/file)",
            first.wall,
            files / first.wall,
            first.max_rss_kb / 1024,
            noop.wall,
            (noop.user + noop.sys) / files * 1e6,
            noop.user / files * 1e6,
            noop.sys / files * 1e6,
            noop.max_rss_kb / 1024,
            status.wall,
            dry.wall,
            why.wall,
            floor.wall,
            (floor.user + floor.sys) / files * 1e6
        );
        rows.push((n, first, noop, [status, dry, why], floor, files));
    }
    println!();
    println!("| files | first `run loader` | files/s | peak RSS first | no-op `run loader` (median of {}) | no-op user µs/file | no-op kernel µs/file | peak RSS no-op | `status` | `run all --dry-run` | `why loader` | one stat per file (no cache) |", a.repeat);
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, first, noop, [status, dry, why], floor, files) in rows {
        println!(
            "| {n} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            cells(&first, &noop, files),
            status.wall,
            dry.wall,
            why.wall,
            floor.wall,
        );
    }
    Ok(())
}

/// `--regular-files`: trees of small files (written once, kept), planning only.
fn regular_trees(a: &ScaleArgs, exe: &Path, work: &Path) -> anyhow::Result<()> {
    println!("| files (regular) | first `status` (hashes every file) | files/s | peak RSS first | no-op `status` (median of {}) | no-op user µs/file | no-op kernel µs/file | peak RSS no-op | one stat per file (no cache) |", a.repeat);
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &a.files {
        let tree = work.join(format!("regular-{n}"));
        let training = tree.join("training");
        if std::fs::read_dir(&training).map_or(0, |d| d.count()) != n {
            if tree.exists() {
                std::fs::remove_dir_all(&tree)?;
            }
            for split in ["training", "validation", "evaluation"] {
                std::fs::create_dir_all(tree.join(split))?;
            }
            for i in 0..n {
                let f = training.join(format!("{}_{i}.jpg", i % 10));
                std::fs::write(&f, i.to_string())
                    .with_context(|| format!("writing {}", f.display()))?;
            }
        }
        let config = loader_pipeline(work, &tree, &format!("regular-{n}"))?;
        std::thread::sleep(std::time::Duration::from_secs(2));
        let first = measure(exe, &config, &["status"])?;
        let noop = median_of(a.repeat, || measure(exe, &config, &["status"]))?;
        let floor = median_of(a.repeat, || stat_floor(&tree))?;
        let files = n as f64;
        println!(
            "| {n} | {} | {:.2} s |",
            cells(&first, &noop, files),
            floor.wall
        );
    }
    Ok(())
}

/// The floor of any no-op: one `stat` (following links) of every file of the tree, by name in
/// its open folder, on as many threads as the runner uses, in this process.
fn stat_floor(tree: &Path) -> anyhow::Result<Cost> {
    let mut names: Vec<(PathBuf, std::ffi::CString)> = Vec::new();
    for split in ["training", "validation", "evaluation"] {
        let dir = tree.join(split);
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let name = e?.file_name();
            let c = std::ffi::CString::new(name.as_encoded_bytes()).context("a NUL in a name")?;
            names.push((dir.clone(), c));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = self_usage();
    let start = Instant::now();
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for part in names.chunks(names.len().div_ceil(threads).max(1)) {
            let failed = &failed;
            scope.spawn(move || {
                let mut open: Option<(&Path, std::fs::File)> = None;
                for (dir, name) in part {
                    if open.as_ref().is_none_or(|(d, _)| d != dir) {
                        match std::fs::File::open(dir) {
                            Ok(f) => open = Some((dir.as_path(), f)),
                            Err(_) => {
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                    let fd =
                        std::os::fd::AsRawFd::as_raw_fd(&open.as_ref().expect("opened above").1);
                    // Safety: `name` is a C string, `st` a plain struct the call fills.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    if unsafe { libc::fstatat(fd, name.as_ptr(), &mut st, 0) } != 0 {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let after = self_usage();
    let failed = failed.into_inner();
    if failed > 0 {
        bail!("{}: {failed} files could not be stat-ed", tree.display());
    }
    Ok(Cost {
        wall,
        user: after.0 - before.0,
        sys: after.1 - before.1,
        max_rss_kb: 0,
    })
}

/// This process's user and kernel CPU seconds so far.
fn self_usage() -> (f64, f64) {
    // Safety: `ru` is a plain struct the call fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// The table cells of a first run and a no-op over `files` files.
fn cells(first: &Cost, noop: &Cost, files: f64) -> String {
    format!(
        "{:.1} s | {:.0} | {} MB | {:.2} s | {:.2} | {:.2} | {} MB",
        first.wall,
        files / first.wall,
        first.max_rss_kb / 1024,
        noop.wall,
        noop.user / files * 1e6,
        noop.sys / files * 1e6,
        noop.max_rss_kb / 1024
    )
}

/// A pipeline of the loader alone on `tree`, with its own empty cache; its path.
fn loader_pipeline(work: &Path, tree: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let cache = work.join(format!("cache-{name}"));
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("emptying {}", cache.display()))?;
    }
    let config = work.join(format!("pipeline-{name}.toml"));
    let text = format!(
        "cache = {:?}\n[dataset]\nroot = {:?}\n[stage.loader]\ninputs = [\"dataset.root\"]\n",
        cache.display().to_string(),
        tree.display().to_string()
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// The median (by wall time) of `repeat` measurements.
fn median_of(repeat: usize, f: impl Fn() -> anyhow::Result<Cost>) -> anyhow::Result<Cost> {
    let mut v = (0..repeat)
        .map(|_| f())
        .collect::<anyhow::Result<Vec<Cost>>>()?;
    v.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    Ok(v[v.len() / 2])
}

/// The source's training images, with the number of validation and evaluation files.
struct Images {
    names: Vec<String>,
    split_extra: usize,
}

impl Images {
    fn len(&self) -> usize {
        self.names.len()
    }
}

fn source_images(source: &Path) -> anyhow::Result<Images> {
    let list = |split: &str| -> anyhow::Result<Vec<String>> {
        let dir = source.join(split);
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: the source needs Food-11's layout", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        Ok(v)
    };
    let names: Vec<String> = list("training")?
        .into_iter()
        .filter(|n| {
            n.split_once('_')
                .is_some_and(|(c, _)| c.parse::<usize>().is_ok())
        })
        .collect();
    if names.is_empty() {
        bail!(
            "{}: no `<class>_<n>.<ext>` images in training/ (bench scale needs a flat-layout dataset)",
            source.display()
        );
    }
    let split_extra = list("validation")?.len() + list("evaluation")?.len();
    Ok(Images { names, split_extra })
}

/// Builds the tree of `n` links unless it is already there.
fn build_tree(tree: &Path, source: &Path, images: &Images, n: usize) -> anyhow::Result<()> {
    let training = tree.join("training");
    let have = std::fs::read_dir(&training).map_or(0, |d| d.count());
    if have == n {
        return Ok(());
    }
    if tree.exists() {
        std::fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    std::fs::create_dir_all(&training)?;
    for f in ["validation", "evaluation", "classes.txt"] {
        if source.join(f).exists() {
            symlink(&source.join(f), &tree.join(f))?;
        }
    }
    let bar =
        indicatif::ProgressBar::new(n as u64).with_message(format!("building {}", tree.display()));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} links ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for i in 0..n {
        let name = &images.names[i % images.len()];
        let (class, rest) = name.split_once('_').expect("filtered above");
        let ext = rest.rsplit_once('.').map_or("jpg", |(_, e)| e);
        symlink(
            &source.join("training").join(name),
            &training.join(format!("{class}_{i}.{ext}")),
        )?;
        if i % 10_000 == 0 {
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> anyhow::Result<()> {
    bail!("bench scale builds its trees from symbolic links (Unix only)")
}

/// Runs this binary with `args` on `config`; wall time, CPU time and peak memory.
fn measure(exe: &Path, config: &Path, args: &[&str]) -> anyhow::Result<Cost> {
    let start = Instant::now();
    let child = Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("--quiet")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the runner")?;
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr;
    let err_text = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut status = 0;
    // Safety: `ru` is a plain struct the call fills; `pid` is our own child, waited once.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    let err = err_text.join().unwrap_or_default();
    if rc != pid {
        bail!(
            "waiting for the runner: {}",
            std::io::Error::last_os_error()
        );
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("`{}` failed:\n{}", args.join(" "), tail(&err, 20));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok(Cost {
        wall,
        user: secs(ru.ru_utime),
        sys: secs(ru.ru_stime),
        max_rss_kb: ru.ru_maxrss,
    })
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn cpu_model() -> String {
    let Ok(t) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unknown CPU".into();
    };
    let field = |k: &str| {
        t.lines()
            .find(|l| l.split(':').next().is_some_and(|n| n.trim() == k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let avx512 = field("flags").split_whitespace().any(|f| f == "avx512f");
    format!(
        "{} (family {}, model {}, {})",
        field("model name"),
        field("cpu family"),
        field("model"),
        if avx512 { "AVX-512" } else { "no AVX-512" }
    )
}
