//! Step 2: external inputs. Missing ones may be provided by their stage (a download); every
//! one is digested (through the stat cache) for the keys.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::Error;
use crate::plan::{external_digests, Resolved};
use crate::progress::Progress;
use crate::run::select::Selection;
use crate::stage::MissingInput;
use crate::statcache::StatCache;
use crate::store::Store;

pub(crate) fn provide_missing(
    config: &Config,
    resolved: &Resolved<'_>,
    sel: &Selection,
    fetch: bool,
    progress: &Progress,
) -> Result<(), Error> {
    for &i in &sel.order {
        let sc = &config.stages[i];
        for name in &sc.inputs {
            let Some(p) = config.setting_path(name) else {
                continue;
            };
            if p.exists() {
                continue;
            }
            let missing = MissingInput {
                setting: name,
                path: &p,
                base: &config.base,
                fetch,
                progress,
            };
            let input_err = |message: String| Error::Input {
                stage: sc.id.clone(),
                setting: name.clone(),
                message,
            };
            let provided = resolved.stages[i]
                .0
                .provide_input(&missing)
                .map_err(|e| input_err(format!("{} is missing: {e}", p.display())))?;
            if !provided {
                return Err(input_err(format!("{} does not exist", p.display())));
            }
        }
    }
    Ok(())
}

/// Digests of every selected stage's external inputs, by config index.
pub(crate) fn digest_externals(
    config: &Config,
    sel: &Selection,
    store: &Store,
    progress: &crate::Progress,
) -> Result<BTreeMap<usize, BTreeMap<String, String>>, Error> {
    let mut stat = StatCache::open(store.stat_cache_dir()).with_progress(progress.clone());
    let mut out = BTreeMap::new();
    for &i in &sel.order {
        let sc = &config.stages[i];
        out.insert(i, external_digests(config, &sc.id, &sc.inputs, &mut stat)?);
    }
    Ok(out)
}
