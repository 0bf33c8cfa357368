//! The `ensemble` stage adapter: the trained head and logistic regression, applied to the
//! features they were trained on (`describe`'s descriptors when the stage needs `describe`,
//! else `vgg-extract`'s pool5 maps), blended with the weight chosen on validation.

use contracts::{
    ids, outputs, BlendChoice, Choice, FeaturesReader, Grid, LogRegModel, NnModel, Predictions,
    PredictionsMeta,
};
use pipeline::{BoxError, Stage, StageContext, Validate};

use crate::{argmax_rows, blend, choose, score, Params};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self)
    }
}

/// One split's features as each model reads them.
struct SplitRows {
    /// Globally average-pooled rows (the head's input).
    pooled: Vec<f32>,
    /// Flattened rows (the logistic regression's input).
    flat: Vec<f32>,
    flat_dim: usize,
    labels: Vec<usize>,
    index: Vec<i64>,
}

fn rows(f: &FeaturesReader<'_>) -> Result<SplitRows, BoxError> {
    let mut s = SplitRows {
        pooled: Vec::new(),
        flat: Vec::new(),
        flat_dim: 0,
        labels: Vec::new(),
        index: Vec::new(),
    };
    for i in 0..f.chunks() {
        let c = f.chunk(i)?;
        let channels = *c.shape.last().ok_or("features have no channel axis")?;
        s.pooled.extend(head_nn::global_average_pool(
            &c.features,
            c.shape[0],
            channels,
        )?);
        s.flat_dim = c.row_len();
        s.flat.extend_from_slice(&c.features);
        s.labels.extend(c.labels.iter().map(|&l| l as usize));
        s.index.extend(c.index);
    }
    Ok(s)
}

/// The stage.
pub struct Ensemble;

impl Stage for Ensemble {
    type Params = Params;
    fn id(&self) -> &'static str {
        ids::ENSEMBLE
    }
    fn code_version(&self) -> String {
        pipeline::code_version!(CACHE_VERSION)
    }
    fn outputs(&self) -> &'static [&'static str] {
        &[outputs::PREDICTIONS]
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), BoxError> {
        let p: Params = ctx.params()?;
        let source = contracts::features_source(ctx);
        let (head_w, head_classes) =
            NnModel::read_selected(&ctx.input(ids::HEAD_NN, outputs::MODEL)?)?;
        let head_w = nn_train::Weights { tensors: head_w };
        let head_dim =
            head_nn::Head::from_weights(&head_w, &head_nn::Params::default())?.input_dim();
        let lr = LogRegModel::read(&ctx.input(ids::LOGREG, outputs::MODEL)?)?;
        let lr_classes = lr.classes;
        if lr_classes != head_classes {
            return Err(format!(
                "head-nn and logreg were trained on different classes ({} vs {})",
                head_classes.join(", "),
                lr_classes.join(", ")
            )
            .into());
        }
        let k = head_classes.len();
        let lr = logreg::Model::from_coefficients(lr.coef, lr.intercept, lr.n_features)?;
        let probs = |split: &str| -> Result<(SplitRows, Vec<f32>, Vec<f32>), BoxError> {
            let s = rows(&FeaturesReader::new(ctx.input(source, split)?))?;
            let n = s.labels.len();
            if n > 0 && s.pooled.len() != n * head_dim {
                return Err(format!(
                    "{source}.{split} has {} channels per row, the head was trained on {head_dim}: head-nn must read the same features as the ensemble",
                    s.pooled.len() / n
                )
                .into());
            }
            if n > 0 && s.flat_dim != lr.n_features {
                return Err(format!(
                    "{source}.{split} rows have {} features, the logistic regression was trained on {}: logreg must read the same features as the ensemble",
                    s.flat_dim,
                    lr.n_features
                )
                .into());
            }
            let h = head_nn::predict(&head_w, &s.pooled)?.probabilities;
            let l: Vec<f32> = lr
                .predict_proba(&s.flat)?
                .iter()
                .map(|&v| v as f32)
                .collect();
            Ok((s, h, l))
        };
        let (va, vh, vl) = probs(outputs::VALIDATION)?;
        let (best, grid) = choose(&vh, &vl, k, &va.labels, &p.head_weights)?;
        let w = grid[best].head_weight;
        drop((va, vh, vl));
        let (ev, eh, el) = probs(outputs::EVALUATION)?;
        let blended = blend(&eh, &el, w)?;
        let (correct, loss) = score(&blended, k, &ev.labels)?;
        for c in &grid {
            ctx.progress().println(format!(
                "ensemble: head weight {:.2}: val_accuracy {:.4}  val_loss {:.4}",
                c.head_weight, c.val_accuracy, c.val_loss
            ));
        }
        let preds = Predictions {
            pred: argmax_rows(&blended, k).iter().map(|&v| v as i64).collect(),
            labels: ev.labels.iter().map(|&v| v as i64).collect(),
            probs: blended,
            n_classes: k,
            index: ev.index,
        };
        let choice = BlendChoice {
            head_weight: w,
            val_accuracy: grid[best].val_accuracy,
        };
        preds.write(
            ctx,
            &PredictionsMeta {
                classes: head_classes,
                test_loss: Some(loss),
                grid: Some(Grid::Blend(grid)),
                best: Some(Choice::Blend(choice)),
                ..PredictionsMeta::default()
            },
        )?;
        let n = preds.labels.len();
        ctx.count(n as u64, "rows");
        ctx.progress().println(format!(
            "ensemble: head weight {w}; test accuracy {:.4} ({correct}/{n})",
            correct as f64 / n.max(1) as f64
        ));
        Ok(())
    }
}
