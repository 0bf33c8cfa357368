//! The `ensemble` stage adapter: the head's and the logistic regression's class probabilities,
//! as they wrote them for the validation and evaluation splits, blended with the weight chosen
//! on validation. It reads artifacts only: no model is applied here.

use contracts::slots::{self, kind};
use contracts::{ids, outputs, BlendChoice, Choice, Grid, Predictions, PredictionsMeta, Slot};
use pipeline::{BoxError, Stage, StageContext, Validate};

use crate::{argmax_rows, blend, choose, score, Params};

/// Bump when results change without a source change.
pub const CACHE_VERSION: u32 = 1;

impl Validate for Params {
    fn validate(&self) -> Result<(), String> {
        Params::validate(self)
    }
}

/// The two models' probabilities on one split, checked to describe the same rows.
struct SplitProbs {
    head: Predictions,
    logreg: Predictions,
}

fn split_probs(
    ctx: &StageContext<'_>,
    slot: fn(&str) -> Slot<'_, kind::Predictions>,
    split: &str,
) -> Result<SplitProbs, BoxError> {
    let head: Predictions = slot(ids::HEAD_NN).read(ctx)?;
    let logreg: Predictions = slot(ids::LOGREG).read(ctx)?;
    if head.index != logreg.index || head.labels != logreg.labels {
        return Err(format!(
            "head-nn and logreg predicted other rows of the {split} split ({} vs {}): both must read the same features as the ensemble",
            head.index.len(),
            logreg.index.len()
        )
        .into());
    }
    if head.n_classes != logreg.n_classes {
        return Err(format!(
            "head-nn gives {} class probabilities per row, logreg {}",
            head.n_classes, logreg.n_classes
        )
        .into());
    }
    Ok(SplitProbs { head, logreg })
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
        let head_classes = slots::predictions(ids::HEAD_NN)
            .read::<PredictionsMeta>(ctx)?
            .classes;
        let lr_classes = slots::predictions(ids::LOGREG)
            .read::<PredictionsMeta>(ctx)?
            .classes;
        if lr_classes != head_classes {
            return Err(format!(
                "head-nn and logreg were trained on different classes ({} vs {})",
                head_classes.join(", "),
                lr_classes.join(", ")
            )
            .into());
        }
        let k = head_classes.len();
        let va = split_probs(ctx, slots::validation_predictions, outputs::VALIDATION)?;
        let labels: Vec<usize> = va.head.labels.iter().map(|&l| l as usize).collect();
        let (best, grid) = choose(
            &va.head.probs,
            &va.logreg.probs,
            k,
            &labels,
            &p.head_weights,
        )?;
        let w = grid[best].head_weight;
        drop(va);
        let ev = split_probs(ctx, slots::predictions, outputs::EVALUATION)?;
        let blended = blend(&ev.head.probs, &ev.logreg.probs, w)?;
        let labels: Vec<usize> = ev.head.labels.iter().map(|&l| l as usize).collect();
        let (correct, loss) = score(&blended, k, &labels)?;
        for c in &grid {
            ctx.progress().println(format!(
                "ensemble: head weight {:.2}: val_accuracy {:.4}  val_loss {:.4}",
                c.head_weight, c.val_accuracy, c.val_loss
            ));
        }
        let preds = Predictions {
            pred: argmax_rows(&blended, k).iter().map(|&v| v as i64).collect(),
            labels: ev.head.labels,
            probs: blended,
            n_classes: k,
            index: ev.head.index,
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
