//! An owned tensor to write into an artifact chunk.

use serde::{Deserialize, Serialize};

/// Element types the artifacts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U8,
    I32,
    I64,
    U32,
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "U8",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
        }
    }

    pub(crate) fn to_st(self) -> safetensors::Dtype {
        match self {
            Dtype::U8 => safetensors::Dtype::U8,
            Dtype::I32 => safetensors::Dtype::I32,
            Dtype::I64 => safetensors::Dtype::I64,
            Dtype::U32 => safetensors::Dtype::U32,
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F64 => safetensors::Dtype::F64,
        }
    }

    pub(crate) fn from_st(d: safetensors::Dtype) -> Option<Dtype> {
        Some(match d {
            safetensors::Dtype::U8 => Dtype::U8,
            safetensors::Dtype::I32 => Dtype::I32,
            safetensors::Dtype::I64 => Dtype::I64,
            safetensors::Dtype::U32 => Dtype::U32,
            safetensors::Dtype::F32 => Dtype::F32,
            safetensors::Dtype::F64 => Dtype::F64,
            _ => return None,
        })
    }
}

/// A little-endian tensor owned in memory, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

macro_rules! ctor {
    ($name:ident, $t:ty, $d:expr) => {
        /// Builds a tensor; panics if `shape` does not match the number of values (a
        /// programming error, not an input error).
        pub fn $name(shape: &[usize], values: &[$t]) -> Tensor {
            assert_eq!(
                shape.iter().product::<usize>(),
                values.len(),
                "shape {shape:?} does not match {} values",
                values.len()
            );
            let mut data = Vec::with_capacity(std::mem::size_of_val(values));
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            Tensor {
                dtype: $d,
                shape: shape.to_vec(),
                data,
            }
        }
    };
}

impl Tensor {
    ctor!(from_f32, f32, Dtype::F32);
    ctor!(from_f64, f64, Dtype::F64);
    ctor!(from_i64, i64, Dtype::I64);
    ctor!(from_i32, i32, Dtype::I32);
    ctor!(from_u32, u32, Dtype::U32);

    pub fn from_u8(shape: &[usize], values: Vec<u8>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape {shape:?} does not match {} values",
            values.len()
        );
        Tensor {
            dtype: Dtype::U8,
            shape: shape.to_vec(),
            data: values,
        }
    }

    /// A UTF-8 string stored as a U8 tensor (for small texts such as JSON tables).
    pub fn from_text(s: &str) -> Tensor {
        Tensor::from_u8(&[s.len()], s.as_bytes().to_vec())
    }
}

impl safetensors::View for &Tensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_st()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}
