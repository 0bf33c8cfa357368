//! Named f32 tensors: how trained weights leave a stage (to be stored, e.g. as safetensors).

use crate::{Error, Result};

pub use contracts::NamedTensor;

/// An ordered set of named tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    /// Tensors in the model's order.
    pub tensors: Vec<NamedTensor>,
}

impl Weights {
    /// The weights a cached run of the network `model` evaluated, and its class names.
    pub fn from_record(
        model: &str,
        rec: &pipeline::RunRecord,
        store: &pipeline::Store,
    ) -> contracts::Result<(Weights, Vec<String>)> {
        let (tensors, classes): (Vec<NamedTensor>, Vec<String>) =
            contracts::slots::nn_model(model).read_record(rec, store)?;
        Ok((Weights { tensors }, classes))
    }

    /// Adds a tensor; its data length must match its shape.
    pub fn push(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Result<()> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Weights(format!(
                "{name}: {} values for shape {shape:?}",
                data.len()
            )));
        }
        self.tensors.push(NamedTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            data,
        });
        Ok(())
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<&NamedTensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Weights(format!("missing tensor {name}")))
    }

    /// The tensor called `name`, checked to have rank `rank`.
    pub fn get_rank(&self, name: &str, rank: usize) -> Result<&NamedTensor> {
        let t = self.get(name)?;
        if t.shape.len() != rank || t.shape.iter().product::<usize>() != t.data.len() {
            return Err(Error::Weights(format!(
                "{name}: shape {:?} with {} values, expected rank {rank}",
                t.shape,
                t.data.len()
            )));
        }
        Ok(t)
    }

    /// Total number of values.
    pub fn parameter_count(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }

    /// As `(name, shape, data)` triples.
    pub fn into_tuples(self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.tensors
            .into_iter()
            .map(|t| (t.name, t.shape, t.data))
            .collect()
    }

    /// From `(name, shape, data)` triples.
    pub fn from_tuples(tuples: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Self> {
        let mut w = Weights::default();
        for (name, shape, data) in tuples {
            w.push(&name, &shape, data)?;
        }
        Ok(w)
    }
}
