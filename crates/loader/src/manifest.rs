//! The manifest: what the loader hands to `preprocess`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The study's three splits, in this order everywhere.
pub const SPLITS: [&str; 3] = ["training", "validation", "evaluation"];

/// One usable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the dataset root with `/` separators (or `synthetic/...`).
    pub path: String,
    pub label: usize,
    /// blake3 of the file's bytes.
    pub digest: String,
}

/// A file that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout: String,
    pub synthetic: bool,
    pub classes: Vec<String>,
    /// Split name -> entries, sorted by path.
    pub splits: BTreeMap<String, Vec<Entry>>,
    pub skipped: Vec<Skipped>,
    /// Groups of files with identical content found in more than one split.
    pub leakage: Vec<Vec<String>>,
}

impl Manifest {
    /// Per split, the number of files of each class.
    pub fn class_counts(&self) -> BTreeMap<String, Vec<usize>> {
        self.splits
            .iter()
            .map(|(s, es)| {
                let mut c = vec![0; self.classes.len()];
                for e in es {
                    c[e.label] += 1;
                }
                (s.clone(), c)
            })
            .collect()
    }
}
