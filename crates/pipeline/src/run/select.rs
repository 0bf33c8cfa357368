//! Step 1: which stages the run covers, in order, and which are forced.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::run::RunOptions;

pub(crate) struct Selection {
    /// Indices into `config.stages`, in topological order.
    pub order: Vec<usize>,
    pub forced: BTreeSet<String>,
}

impl Selection {
    pub(crate) fn new(config: &Config, opts: &RunOptions) -> Result<Selection, Error> {
        for t in &opts.targets {
            if config.stage(t).is_none() {
                return Err(ConfigError {
                    file: config.file.clone(),
                    position: None,
                    message: format!(
                        "unknown stage `{t}` (stages: {})",
                        config
                            .stages
                            .iter()
                            .map(|s| s.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
                .into());
            }
        }
        let targets: Vec<String> = if opts.targets.is_empty() {
            config.stages.iter().map(|s| s.id.clone()).collect()
        } else {
            opts.targets.clone()
        };
        let mut selected: BTreeSet<String> =
            config.upstream_closure(&targets).into_iter().collect();
        if opts.downstream {
            for t in &targets {
                selected.extend(config.downstream(t));
            }
        }
        let forced = if opts.force {
            targets.iter().cloned().collect()
        } else {
            BTreeSet::new()
        };
        let order = (0..config.stages.len())
            .filter(|&i| selected.contains(&config.stages[i].id))
            .collect();
        Ok(Selection { order, forced })
    }
}
