//! A cached fine-tuned network applied to new images (for `predict`): the pipeline's own
//! stored-layer maps of every view, the trained top block and head, the views' probabilities
//! averaged as in evaluation, and over the members when the stage trained several.

use contracts::predictor::{ModelInputs, Predictor};
use contracts::{ids, slots, Evaluate, NamedTensor, BEST_PREFIX};
use pipeline::{RunRecord, Store};

use crate::conv::Shape;
use crate::model::{Head, Layer, Pooling, TopNet};
use crate::stage::{add_probs, member_prefix, view_averaged, Params};

/// The weights a `finetune` run evaluated, its classes, its head's pooling, its members and
/// which of their weight sets it averaged.
pub struct FinetunePredictor {
    tensors: Vec<NamedTensor>,
    classes: Vec<String>,
    pooling: Pooling,
    members: usize,
    evaluate: Evaluate,
}

impl FinetunePredictor {
    pub fn from_record(rec: &RunRecord, store: &Store) -> contracts::Result<Self> {
        let p: Params = contracts::predictor::record_params(rec, ids::FINETUNE)?;
        let (tensors, classes) = slots::nn_model(ids::FINETUNE)
            .read_record::<(Vec<NamedTensor>, Vec<String>)>(rec, store)?;
        Ok(FinetunePredictor {
            tensors,
            classes,
            pooling: p.pooling,
            members: p.members,
            evaluate: p.evaluate,
        })
    }

    /// Member `m`'s network for stored maps of `(h, w, c)`: the first member's tensors are
    /// unprefixed, member `m`'s start with [`member_prefix`]`(m)`; with `best`, the best
    /// weights of `evaluate = "both"`, which start with [`BEST_PREFIX`] before that.
    fn network(
        &self,
        m: usize,
        best: bool,
        (h, w, c0): (usize, usize, usize),
    ) -> contracts::Result<TopNet> {
        let mut layers = Vec::new();
        let mut c = c0;
        let prefix = format!(
            "{}{}",
            if best { BEST_PREFIX } else { "" },
            member_prefix(m)
        );
        // Member `m`'s tensors, by their unprefixed names (the layers' and the head's names
        // start with neither prefix).
        let own: Vec<(&str, &NamedTensor)> = self
            .tensors
            .iter()
            .filter_map(|t| {
                let name = t.name.strip_prefix(&prefix)?;
                (!name.starts_with("member") && !name.starts_with(BEST_PREFIX)).then_some((name, t))
            })
            .collect();
        let get = |name: &str| {
            own.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .ok_or_else(|| format!("the finetune model has no tensor `{prefix}{name}`"))
        };
        for &(tname, t) in &own {
            let Some(name) = tname.strip_suffix(".kernel") else {
                continue;
            };
            let [3, 3, tc, o] = t.shape[..] else {
                return Err(format!("`{}` has shape {:?}", t.name, t.shape).into());
            };
            if tc != c {
                return Err(
                    format!("`{}` takes {tc} channels where the maps have {c}", t.name).into(),
                );
            }
            let bias = get(&format!("{name}.bias"))?;
            layers.push(Layer {
                name: name.to_string(),
                shape: Shape { h, w, c, o },
                kernel: t.data.clone(),
                bias: bias.data.clone(),
            });
            c = o;
        }
        if layers.is_empty() {
            return Err("the finetune model has no convolution".into());
        }
        let hw = get("head.weight")?;
        let [d, k] = hw.shape[..] else {
            return Err(format!("`head.weight` has shape {:?}", hw.shape).into());
        };
        let want = TopNet::feature_len(self.pooling, (h / 2, w / 2, c));
        if d != want || k != self.classes.len() {
            return Err(format!(
                "the head takes {d} features to {k} classes; {h}x{w} maps give {want}, and there are {} classes",
                self.classes.len()
            )
            .into());
        }
        let head = Head {
            pooling: self.pooling,
            d,
            k,
            weight: hw.data.clone(),
            bias: get("head.bias")?.data.clone(),
        };
        Ok(TopNet::new(layers, head))
    }
}

impl Predictor for FinetunePredictor {
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn predict(&self, inputs: &mut dyn ModelInputs) -> contracts::Result<Vec<f32>> {
        let n = inputs.len();
        let maps = inputs.activations()?;
        let (views, map) = (&maps.views, maps.shape);
        // The stage's order: each member's best weights, then its final ones.
        let sets: &[bool] = match self.evaluate {
            Evaluate::Both => &[true, false],
            Evaluate::Best | Evaluate::Final => &[false],
        };
        let mut probs: Vec<f32> = Vec::new();
        for m in 0..self.members {
            for &best in sets {
                let net = self.network(m, best, map)?;
                let q = view_averaged(&net, n, views.len(), |v, start, end, x| {
                    let len = map.0 * map.1 * map.2;
                    x.extend_from_slice(&views[v][start * len..end * len]);
                    Ok(())
                })?;
                add_probs(&mut probs, q);
            }
        }
        let networks = self.members * sets.len();
        if networks > 1 {
            probs.iter_mut().for_each(|q| *q /= networks as f32);
        }
        Ok(probs)
    }
}
