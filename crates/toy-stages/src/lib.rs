//! Toy stages for the runner's own tests: small, fast, and able to sleep, fail, panic or wait
//! for a peer on demand. They are registered only in the `toy-runner` binary, never in the
//! study's pipeline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pipeline::{BoxError, Registry, Resources, Stage, StageContext, Tensor, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub n: usize,
    pub scale: f64,
    pub chunks: usize,
    /// Sleep this long before writing each chunk.
    pub sleep_ms: u64,
    pub fail: bool,
    pub panic: bool,
    /// Write a NaN into the last value (the runner must refuse to store it).
    pub nan: bool,
    /// `mul` or `pow`: two ways of squaring with identical results (for early cutoff).
    pub mode: String,
    /// Rendezvous folder and peer stage id: the stage fails unless the peer runs concurrently.
    pub meet_dir: String,
    pub meet_peer: String,
    pub meet_timeout_ms: u64,
    /// A sharded run's shard `I` fails while the file `<fail_marker>-<I>` exists.
    pub fail_marker: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            n: 10,
            scale: 1.0,
            chunks: 2,
            sleep_ms: 0,
            fail: false,
            panic: false,
            nan: false,
            mode: "mul".into(),
            meet_dir: String::new(),
            meet_peer: String::new(),
            meet_timeout_ms: 5000,
            fail_marker: String::new(),
        }
    }
}

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        if !matches!(self.mode.as_str(), "mul" | "pow") {
            return Err(format!(
                "mode must be \"mul\" or \"pow\", not {:?}",
                self.mode
            ));
        }
        if self.chunks == 0 {
            return Err("chunks must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// values[i] = i * scale (optionally plus the file count of `dataset.root`).
    Gen,
    /// values = upstream `values` squared, chunk by chunk.
    Square,
    /// total = sum of upstream `values`.
    Sum,
    /// Waits for a peer (concurrency tests).
    Meet,
}

pub struct Toy {
    id: &'static str,
    kind: Kind,
    upstream: &'static str,
    exclusive: bool,
    code: String,
}

impl Toy {
    fn new(
        id: &'static str,
        kind: Kind,
        upstream: &'static str,
        exclusive: bool,
        salt: &str,
    ) -> Toy {
        Toy {
            id,
            kind,
            upstream,
            exclusive,
            code: format!("{}{}", env!("CODE_HASH"), salt),
        }
    }
}

/// The toy registry. `salts` (stage id -> text) stands in for source edits of a stage.
pub fn registry(salts: &BTreeMap<String, String>) -> Registry {
    let s = |id: &str| salts.get(id).cloned().unwrap_or_default();
    Registry::new()
        .with(Toy::new("gen", Kind::Gen, "", false, &s("gen")))
        .with(Toy::new("gen2", Kind::Gen, "", false, &s("gen2")))
        .with(Toy::new("square", Kind::Square, "gen", false, &s("square")))
        .with(Toy::new("sum", Kind::Sum, "square", false, &s("sum")))
        .with(Toy::new("meet-a", Kind::Meet, "", false, &s("meet-a")))
        .with(Toy::new("meet-b", Kind::Meet, "", false, &s("meet-b")))
        .with(Toy::new("hog", Kind::Gen, "", true, &s("hog")))
}

fn count_files(p: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += count_files(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

impl Stage for Toy {
    type Params = Params;
    fn id(&self) -> &'static str {
        self.id
    }
    fn code_version(&self) -> String {
        self.code.clone()
    }
    fn outputs(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Sum => &["total"],
            _ => &["values"],
        }
    }
    /// One thread each, so that two toy stages can run side by side; `hog` takes every core.
    fn resources(&self) -> Resources {
        if self.exclusive {
            Resources::default()
        } else {
            Resources::cpus(1)
        }
    }
    /// `square` works chunk by chunk: it can run in shards.
    fn shardable(&self) -> bool {
        matches!(self.kind, Kind::Square)
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        if let Some(sh) = ctx.shard() {
            let marker = format!("{}-{}", p.fail_marker, sh.index);
            if !p.fail_marker.is_empty() && Path::new(&marker).exists() {
                return Err(format!("toy shard {sh} asked to fail ({marker} exists)").into());
            }
        }
        if p.panic {
            panic!("toy stage asked to panic");
        }
        if p.fail {
            return Err("toy stage asked to fail".into());
        }
        match self.kind {
            Kind::Gen => {
                let extra = match ctx.setting("dataset.root") {
                    Ok(Some(root)) => count_files(root)? as f32,
                    _ => 0.0,
                };
                let mut w = ctx.output("values")?;
                let per = p.n.div_ceil(p.chunks);
                for c in 0..p.chunks {
                    std::thread::sleep(Duration::from_millis(p.sleep_ms));
                    let mut vals: Vec<f32> = (c * per..((c + 1) * per).min(p.n))
                        .map(|i| i as f32 * p.scale as f32 + extra)
                        .collect();
                    if p.nan && c + 1 == p.chunks {
                        if let Some(v) = vals.last_mut() {
                            *v = f32::NAN;
                        }
                    }
                    w.write_chunk(vec![("values", Tensor::from_f32(&[vals.len()], &vals))])?;
                }
                // What the stage was given and what it runs on (scheduler tests).
                w.set_volatile("threads", ctx.threads().into());
                w.set_volatile("pool_threads", rayon::current_num_threads().into());
                w.finish()?;
            }
            Kind::Square => {
                let input = ctx.input(self.upstream, "values")?;
                let mut w = ctx.output("values")?;
                let mine = ctx.shard().map_or(0..input.len(), |s| s.range(input.len()));
                for i in mine {
                    std::thread::sleep(Duration::from_millis(p.sleep_ms));
                    let (shape, v) = input.chunk(i)?.f32("values")?;
                    let sq: Vec<f32> = v
                        .iter()
                        .map(|x| if p.mode == "mul" { x * x } else { x.powi(2) })
                        .collect();
                    w.write_chunk(vec![("values", Tensor::from_f32(&shape, &sq))])?;
                }
                w.finish()?;
            }
            Kind::Sum => {
                let input = ctx.input(self.upstream, "values")?;
                let mut total = 0.0f64;
                for i in 0..input.len() {
                    total += input
                        .chunk(i)?
                        .f32("values")?
                        .1
                        .iter()
                        .map(|&x| x as f64)
                        .sum::<f64>();
                }
                ctx.write_single(
                    "total",
                    vec![("total", Tensor::from_f64(&[1], &[total]))],
                    BTreeMap::new(),
                )?;
            }
            Kind::Meet => {
                let dir = Path::new(&p.meet_dir);
                std::fs::create_dir_all(dir)?;
                std::fs::write(dir.join(self.id), "")?;
                let t0 = Instant::now();
                while !dir.join(&p.meet_peer).exists() {
                    if t0.elapsed() > Duration::from_millis(p.meet_timeout_ms) {
                        return Err(
                            format!("peer `{}` did not run concurrently", p.meet_peer).into()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                ctx.write_single(
                    "values",
                    vec![("values", Tensor::from_f32(&[1], &[1.0]))],
                    BTreeMap::new(),
                )?;
            }
        }
        Ok(())
    }
}
