//! Shared by the timing examples: `--key value` arguments, features read from a
//! safetensors file, CPU time.

use std::collections::HashMap;
use std::fmt::Debug;
use std::str::FromStr;

use safetensors::{Dtype, SafeTensors};

/// `--key value` pairs of the command line.
pub struct Args(HashMap<String, String>);

impl Args {
    /// Parses the process arguments; panics on a key without value.
    pub fn from_env() -> Self {
        let mut args = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            let v = it.next().unwrap_or_else(|| panic!("missing value for {k}"));
            args.insert(k.trim_start_matches("--").to_string(), v);
        }
        Args(args)
    }

    /// The value of `--key`, if given.
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `--key` (or `default`) parsed as `T`; panics if it does not parse.
    pub fn get<T: FromStr>(&self, key: &str, default: &str) -> T
    where
        T::Err: Debug,
    {
        let v = self.opt(key).unwrap_or(default);
        v.parse().unwrap_or_else(|e| panic!("--{key} {v}: {e:?}"))
    }
}

/// Reads `x` (float32, `n x d`) and `y` (int64, `n`, non-negative) from a safetensors
/// file: returns row-major `x`, the labels and `d`. Panics with the reason on bad input.
pub fn load_xy(path: &str) -> (Vec<f32>, Vec<usize>, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("parse {path}: {e}"));
    let xt = st.tensor("x").expect("tensor x");
    assert_eq!(xt.dtype(), Dtype::F32, "x must be float32");
    let &[n, d] = xt.shape() else {
        panic!("x must be 2-d, has shape {:?}", xt.shape());
    };
    let x: Vec<f32> = xt
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let yt = st.tensor("y").expect("tensor y");
    assert_eq!(yt.dtype(), Dtype::I64, "y must be int64");
    let y: Vec<usize> = yt
        .data()
        .chunks_exact(8)
        .map(|b| {
            let v = i64::from_le_bytes(b.try_into().unwrap());
            usize::try_from(v).unwrap_or_else(|_| panic!("negative label {v}"))
        })
        .collect();
    assert_eq!(y.len(), n, "y must have one label per row of x");
    (x, y, d)
}

/// User + system CPU seconds of this process (all threads), NaN where unavailable.
pub fn cpu_seconds() -> f64 {
    // utime + stime of /proc/self/stat, in clock ticks of 1/100 s
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // fields after the command: state is index 0, utime 11, stime 12
    (t(11) + t(12)) / 100.0
}
