//! What a stage needs to run: CPU threads, memory, GPUs (a leaf module).
//!
//! In `pipeline.toml`: `resources = { cpus = 2, memory = "4G", gpus = 0 }` per stage, `cpus`
//! and `memory` also `"all"`. The local scheduler starts a stage only while the cpus (and
//! declared memory) of the stages running beside it fit the run's budget, and gives it that
//! many threads; a cluster executor requests the same per job.

use serde::{Deserialize, Serialize};

/// CPU threads of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cpus {
    /// Every core of the run's budget (the stage runs alone).
    All,
    /// This many threads.
    Count(usize),
}

/// A stage's resource needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: Cpus,
    /// Bytes of memory; `None`: not declared (not checked).
    pub memory: Option<u64>,
    pub gpus: u32,
}

impl Default for Resources {
    /// Every core, memory not declared, no GPU.
    fn default() -> Self {
        Resources {
            cpus: Cpus::All,
            memory: None,
            gpus: 0,
        }
    }
}

impl Resources {
    /// `n` threads, memory not declared, no GPU.
    pub fn cpus(n: usize) -> Resources {
        Resources {
            cpus: Cpus::Count(n),
            ..Resources::default()
        }
    }

    /// Threads this stage gets out of a budget of `budget` cores.
    pub fn threads(&self, budget: usize) -> usize {
        match self.cpus {
            Cpus::All => budget.max(1),
            Cpus::Count(n) => n.clamp(1, budget.max(1)),
        }
    }

    /// `self` with the entries of a `resources = { ... }` table applied.
    pub fn with_table(mut self, t: &toml::Table) -> Result<Resources, String> {
        for (k, v) in t {
            match k.as_str() {
                "cpus" => {
                    self.cpus = match v {
                        toml::Value::String(s) if s == "all" => Cpus::All,
                        toml::Value::Integer(n) if *n >= 1 => Cpus::Count(*n as usize),
                        other => {
                            return Err(format!(
                                "resources.cpus must be a positive number or \"all\", not {other}"
                            ))
                        }
                    }
                }
                "memory" => {
                    self.memory = match v {
                        toml::Value::String(s) if s == "all" => None,
                        toml::Value::String(s) => Some(parse_bytes(s)?),
                        toml::Value::Integer(n) if *n > 0 => Some(*n as u64),
                        other => {
                            return Err(format!(
                        "resources.memory must be like \"512M\", \"4G\" or \"all\", not {other}"
                    ))
                        }
                    }
                }
                "gpus" => {
                    self.gpus = match v {
                        toml::Value::Integer(n) if *n >= 0 => *n as u32,
                        other => {
                            return Err(format!("resources.gpus must be a number, not {other}"))
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown resource `{other}` (known: cpus, memory, gpus)"
                    ))
                }
            }
        }
        Ok(self)
    }
}

/// `"512M"`, `"4G"`, `"1.5GiB"`, `"1000000"` -> bytes (K, M, G, T are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as \"512M\" or \"4G\""))?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
    };
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("`{s}` must be positive"));
    }
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_sizes() {
        let t: toml::Table = toml::from_str("cpus = 3\nmemory = \"1.5G\"").unwrap();
        let r = Resources::default().with_table(&t).unwrap();
        assert_eq!(r.cpus, Cpus::Count(3));
        assert_eq!(r.memory, Some(1_610_612_736));
        assert_eq!(r.threads(2), 2, "never more than the budget");
        assert_eq!(Resources::default().threads(8), 8);
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        for bad in ["cpus = 0", "cpus = \"most\"", "memory = \"4Q\"", "disk = 1"] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            assert!(Resources::default().with_table(&t).is_err(), "{bad}");
        }
    }
}
