//! Adam, computed as `torch.optim.Adam` computes it (Keras's Adam applies the same bias
//! correction; it differs only in where epsilon enters, which is below f32 resolution for the
//! default epsilon except for gradients near zero).

use crate::{Error, Result};
use candle_core::{backprop::GradStore, Tensor, Var};

/// Hyper-parameters of Adam. `Default` is Keras's: lr 0.001, betas (0.9, 0.999), epsilon 1e-7.
/// Flattened into the params of both network stages.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdamConfig {
    /// Step size.
    pub learning_rate: f64,
    /// Decay of the first-moment estimate.
    pub beta_1: f64,
    /// Decay of the second-moment estimate.
    pub beta_2: f64,
    /// Added to the bias-corrected root of the second moment.
    pub epsilon: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            learning_rate: 1e-3,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
}

impl AdamConfig {
    /// Checks the ranges that Adam needs.
    /// Checks the ranges that Adam needs; the message names each parameter out of range, with
    /// its value and the range it must be in.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            bad.push(format!(
                "learning_rate = {} (must be a positive number)",
                self.learning_rate
            ));
        }
        for (name, v) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&v) {
                bad.push(format!("{name} = {v} (must be in [0, 1))"));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            bad.push(format!(
                "epsilon = {} (must be a finite number >= 0)",
                self.epsilon
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!("Adam: {}", bad.join("; "))))
        }
    }
}

/// Adam's state for a fixed list of parameter tensors.
#[derive(Clone, Debug)]
pub struct Adam {
    cfg: AdamConfig,
    step: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// Fresh state (zero moments, step 0) for parameters of the given element counts.
    pub fn new(cfg: AdamConfig, sizes: &[usize]) -> Self {
        Adam {
            cfg,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One step on plain slices: `params[i]` is updated from `grads[i]`; a `None` gradient leaves
    /// that parameter and its moments untouched (as PyTorch does for a parameter without grad).
    pub fn step_slices(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[Option<&[f32]>],
    ) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return Err(Error::Invalid("Adam: parameter count changed".into()));
        }
        self.step += 1;
        let c = self.cfg;
        // Scalars as PyTorch's single-tensor Adam computes them (in double, then applied to f32).
        let bias_correction1 = 1.0 - c.beta_1.powi(self.step as i32);
        let bias_correction2 = 1.0 - c.beta_2.powi(self.step as i32);
        let step_size = (c.learning_rate / bias_correction1) as f32;
        let bc2_sqrt = bias_correction2.sqrt() as f32;
        let w1 = (1.0 - c.beta_1) as f32;
        let b2 = c.beta_2 as f32;
        let w2 = (1.0 - c.beta_2) as f32;
        let eps = c.epsilon as f32;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            if p.len() != m.len() || g.len() != m.len() {
                return Err(Error::Invalid(format!("Adam: parameter {i} changed size")));
            }
            for j in 0..m.len() {
                let gj = g[j];
                m[j] += w1 * (gj - m[j]);
                v[j] = v[j] * b2 + w2 * gj * gj;
                let denom = v[j].sqrt() / bc2_sqrt + eps;
                p[j] += -step_size * (m[j] / denom);
            }
        }
        Ok(())
    }

    /// One step on candle variables with the gradients of a backward pass.
    pub fn step_vars(&mut self, vars: &[Var], grads: &GradStore) -> Result<()> {
        let mut values = Vec::with_capacity(vars.len());
        let mut gvals = Vec::with_capacity(vars.len());
        for var in vars {
            values.push(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
            gvals.push(match grads.get(var.as_tensor()) {
                Some(g) => Some(g.flatten_all()?.to_vec1::<f32>()?),
                None => None,
            });
        }
        {
            let mut ps: Vec<&mut [f32]> = values.iter_mut().map(|v| v.as_mut_slice()).collect();
            let gs: Vec<Option<&[f32]>> = gvals.iter().map(|g| g.as_deref()).collect();
            self.step_slices(&mut ps, &gs)?;
        }
        for (var, value) in vars.iter().zip(values) {
            let t = Tensor::from_vec(value, var.shape(), var.device())?;
            var.set(&t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_against_gradient_sign() {
        let mut a = Adam::new(AdamConfig::default(), &[3]);
        let mut p = vec![1.0f32, 1.0, 1.0];
        let g = vec![0.5f32, -2.0, 0.0];
        a.step_slices(&mut [&mut p], &[Some(&g)]).unwrap();
        assert!((p[0] - 0.999).abs() < 1e-6);
        assert!((p[1] - 1.001).abs() < 1e-6);
        assert_eq!(p[2], 1.0);
    }

    #[test]
    fn none_gradient_skips_parameter() {
        let mut a = Adam::new(AdamConfig::default(), &[1, 1]);
        let (mut p, mut q) = (vec![1.0f32], vec![1.0f32]);
        a.step_slices(&mut [&mut p, &mut q], &[Some(&[1.0]), None])
            .unwrap();
        assert_eq!(q[0], 1.0);
        assert!(p[0] < 1.0);
    }

    #[test]
    fn out_of_range_parameters_are_named_with_their_values() {
        let cfg = AdamConfig {
            learning_rate: -0.001,
            beta_2: 1.5,
            ..AdamConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid input: Adam: learning_rate = -0.001 (must be a positive number); beta_2 = 1.5 (must be in [0, 1))"
        );
        assert!(!e.contains('{'), "no Debug struct in the message: {e}");
        assert!(AdamConfig::default().validate().is_ok());
    }
}
