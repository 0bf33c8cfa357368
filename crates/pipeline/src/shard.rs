//! Shards: a fixed, ordered range of a shardable stage's work units (chunks of images), so
//! that the units can be computed by independent processes or machines (`run --shard I/N`)
//! and gathered into the record an unsharded run would have written.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Shard `index` of `count` (0-based, as SLURM's `$SLURM_ARRAY_TASK_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The most shards a stage may be split into.
pub const MAX_SHARDS: usize = 10_000;

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "the shard count must be between 1 and {MAX_SHARDS}, not {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard {index} does not exist: shards of {count} are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// The units of `total` that this shard computes: contiguous, in order, and as even as
    /// possible (sizes differ by at most one; with more shards than units some are empty).
    /// The ranges of shards 0..count tile 0..total.
    pub fn range(&self, total: usize) -> Range<usize> {
        let at = |i: usize| i * total / self.count;
        at(self.index)..at(self.index + 1)
    }

    /// File-name form, `I-of-N`.
    pub fn file_stem(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    /// `I/N`, e.g. `3/8`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard such as `3/8` (shard 3 of 8, counted from 0)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: usize = i.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_tile_the_units_in_order() {
        for total in [0, 1, 5, 7, 40, 41] {
            for count in [1, 2, 3, 8, 50] {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next, "total {total} count {count} index {index}");
                    assert!(r.len() <= total / count + 1);
                    assert!(r.len() + 1 >= total / count);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("3/8".parse::<Shard>(), Ok(Shard { index: 3, count: 8 }));
        assert!("8/8"
            .parse::<Shard>()
            .unwrap_err()
            .contains("numbered 0 to 7"));
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("such as `3/8`"));
        assert_eq!(Shard { index: 2, count: 8 }.to_string(), "2/8");
    }
}
