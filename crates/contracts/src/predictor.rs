//! Trained models applied to new inputs, behind one interface: each model crate builds its
//! [`Predictor`] from its own run record (its artifacts and nothing else), so a tool such as
//! `predict` holds no knowledge of which stage made a model, nor of any stage's params.

use pipeline::{InputArtifact, RunRecord, Store};

use crate::slots::{FeatureSource, Read, Slot};
use crate::{outputs, Result};

/// What a model may ask for; the caller computes each thing at most once and hands out the
/// same values to every model that asks (an ensemble's members read the same features).
pub trait ModelInputs {
    /// The number of inputs (rows of every answer).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The inputs as the pipeline preprocessed its images: `len` RGB images of `size x size`,
    /// channels last; returns the pixels and `size`.
    fn images(&mut self) -> Result<(&[u8], usize)>;
    /// The inputs' features as `source` stored them for the evaluation split (views averaged),
    /// row-major with `channels` values on the last axis; returns the rows and `channels`.
    fn features(&mut self, source: FeatureSource) -> Result<(Vec<f32>, usize)>;
    /// Another cached model's class probabilities of the inputs (`len x classes`), and its
    /// class names.
    fn probabilities(&mut self, model: &str) -> Result<(Vec<f32>, Vec<String>)>;
    /// The inner-layer maps `vgg-activations` stores, computed for the inputs as the
    /// pipeline's run of that stage computed them, the stage's views in order.
    fn activations(&mut self) -> Result<StoredMaps>;
}

/// An inner layer's maps of new inputs, per view (see [`ModelInputs::activations`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMaps {
    /// One `len x h x w x c` block per view.
    pub views: Vec<Vec<f32>>,
    /// `(h, w, c)`.
    pub shape: (usize, usize, usize),
}

/// A trained model, ready to predict.
pub trait Predictor {
    /// The class names, in the order of the probabilities' columns.
    fn classes(&self) -> &[String];
    /// Class probabilities (`inputs.len() x classes`), each row summing to one.
    fn predict(&self, inputs: &mut dyn ModelInputs) -> Result<Vec<f32>>;
}

impl<'s, K> Slot<'s, K> {
    /// This slot's artifact among the outputs of a run record (of the slot's stage), read
    /// with `R`.
    pub fn read_record<'a, R: Read<'a, K>>(
        &self,
        rec: &'a RunRecord,
        store: &'a Store,
    ) -> Result<R> {
        if rec.stage != self.stage {
            return Err(format!(
                "a run record of `{}` has no `{self:?}` (it is `{}`'s)",
                rec.stage, self.stage
            )
            .into());
        }
        let art = rec.outputs.get(self.output).ok_or_else(|| {
            format!(
                "the cached run of `{}` has no output `{}`",
                self.stage, self.output
            )
        })?;
        R::read_input(InputArtifact::new(art, store))
    }
}

impl FeatureSource {
    /// The features the run `rec` read: `describe`'s when it read them, else the extraction
    /// stage's it read (`vgg-extract`'s when it names none).
    pub fn of_record(rec: &RunRecord) -> FeatureSource {
        let read = |source: FeatureSource| {
            let slot = crate::slots::features(source, outputs::TRAINING);
            rec.key_inputs
                .inputs
                .contains_key(&format!("{}.{}", slot.stage, slot.output))
        };
        if read(FeatureSource::Described) {
            return FeatureSource::Described;
        }
        FeatureSource::Extracted(
            crate::Backbone::ALL
                .into_iter()
                .find(|b| read(FeatureSource::Extracted(*b)))
                .unwrap_or(crate::Backbone::Vgg16),
        )
    }
}

/// The params a stage ran with, from its run record (for the crate that owns the params type:
/// a consumer asks that crate, never parses another stage's params).
pub fn record_params<P: serde::de::DeserializeOwned>(rec: &RunRecord, stage: &str) -> Result<P> {
    if rec.stage != stage {
        return Err(format!(
            "expected a run record of `{stage}`, got one of `{}`",
            rec.stage
        )
        .into());
    }
    serde_json::from_value(rec.key_inputs.params.clone()).map_err(|e| {
        format!("the cached run of `{stage}` has params this build cannot read ({e})").into()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pipeline::{KeyInputs, RunRecord, Store};
    use serde_json::json;

    use super::*;
    use crate::{ids, slots, LogRegModel};

    fn record(stage: &str, inputs: &[&str]) -> RunRecord {
        RunRecord {
            stage: stage.into(),
            key: "k".into(),
            key_inputs: KeyInputs {
                stage: stage.into(),
                code: "c".into(),
                params: json!({"size": 5}),
                inputs: inputs.iter().map(|i| (i.to_string(), "d".into())).collect(),
                externals: BTreeMap::new(),
                seed: None,
                device: None,
            },
            outputs: BTreeMap::new(),
            seconds: 0.0,
            started_ms: 0,
            finished_ms: 0,
            threads: 1,
            producer: String::new(),
            usage: None,
        }
    }

    #[derive(serde::Deserialize, Debug)]
    struct SizeParams {
        size: usize,
    }

    #[test]
    fn params_are_read_from_the_owning_stage_record_only() {
        let rec = record(ids::PREPROCESS, &[]);
        let p: SizeParams = record_params(&rec, ids::PREPROCESS).unwrap();
        assert_eq!(p.size, 5);
        let e = record_params::<SizeParams>(&rec, ids::VGG_EXTRACT).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected a run record of `vgg-extract`, got one of `preprocess`"),
            "{e}"
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Other {
            batch: usize,
        }
        let e = record_params::<Other>(&rec, ids::PREPROCESS).unwrap_err();
        assert!(
            e.to_string().contains("params this build cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_slot_reads_only_its_own_stage_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let e = slots::LOGREG_MODEL
            .read_record::<LogRegModel>(&record(ids::HEAD_NN, &[]), &store)
            .unwrap_err();
        assert!(e.to_string().contains("(it is `logreg`'s)"), "{e}");
        let e = slots::LOGREG_MODEL
            .read_record::<LogRegModel>(&record(ids::LOGREG, &[]), &store)
            .unwrap_err();
        assert!(e.to_string().contains("has no output `model`"), "{e}");
    }

    #[test]
    fn the_feature_source_follows_what_the_model_read() {
        let extracted = record(
            ids::HEAD_NN,
            &["vgg-extract.training", "vgg-extract.validation"],
        );
        assert_eq!(
            FeatureSource::of_record(&extracted),
            FeatureSource::Extracted(crate::Backbone::Vgg16)
        );
        let lite0 = record(
            ids::LOGREG,
            &["lite0-extract.training", "lite0-extract.validation"],
        );
        assert_eq!(
            FeatureSource::of_record(&lite0),
            FeatureSource::Extracted(crate::Backbone::Lite0)
        );
        let described = record(ids::LOGREG, &["describe.training", "describe.validation"]);
        assert_eq!(
            FeatureSource::of_record(&described),
            FeatureSource::Described
        );
    }
}
