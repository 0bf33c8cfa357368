//! A minimal reader of ONNX models: just enough protobuf to list a graph's initializers.
//!
//! Protobuf wire format: each field is a varint key `(field_number << 3) | wire_type`, then a
//! varint (type 0), 8 bytes (type 1), a varint length and that many bytes (type 2), or 4 bytes
//! (type 5). Unknown fields are skipped. Read here:
//!
//! - `ModelProto.graph` = 7 (every occurrence, merged as protobuf does);
//! - `GraphProto.initializer` = 5 (repeated `TensorProto`);
//! - `TensorProto`: `dims` = 1 (int64, packed or not), `data_type` = 2, `float_data` = 4
//!   (packed or not), `name` = 8, `raw_data` = 9, `external_data` = 13, `data_location` = 14.
//!
//! Tensor data is borrowed from the model buffer when stored as `raw_data`.

use thiserror::Error;

/// ONNX `TensorProto.DataType.FLOAT`.
pub const DATA_TYPE_FLOAT: i32 = 1;

/// ONNX `TensorProto.DataLocation.EXTERNAL`.
const DATA_LOCATION_EXTERNAL: u64 = 1;

/// A malformed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The buffer ends inside a field.
    #[error("truncated {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Absolute byte offset.
        offset: usize,
    },
    /// A varint longer than 10 bytes.
    #[error("malformed varint at byte {offset}")]
    BadVarint {
        /// Absolute byte offset.
        offset: usize,
    },
    /// Field number 0, or wire type 3, 4, 6 or 7.
    #[error("invalid field key {key:#x} at byte {offset}")]
    BadKey {
        /// The key read.
        key: u64,
        /// Absolute byte offset.
        offset: usize,
    },
    /// A known field with an unexpected wire type.
    #[error("{message}.{field} has wire type {wire_type}, expected {expected} (byte {offset})")]
    WrongWireType {
        /// Message name.
        message: &'static str,
        /// Field number.
        field: u32,
        /// Wire type found.
        wire_type: u8,
        /// Wire type expected.
        expected: u8,
        /// Absolute byte offset.
        offset: usize,
    },
    /// A packed field whose length is not a multiple of its element size.
    #[error("packed {what} of {len} bytes at byte {offset} is not a whole number of elements")]
    BadPacked {
        /// What was being read.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Absolute byte offset.
        offset: usize,
    },
    /// A tensor name that is not UTF-8.
    #[error("tensor name at byte {offset} is not utf-8")]
    BadName {
        /// Absolute byte offset.
        offset: usize,
    },
    /// No `ModelProto.graph`.
    #[error("no graph (ModelProto field 7) found")]
    NoGraph,
}

/// One initializer of the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxTensor<'a> {
    /// `TensorProto.name`.
    pub name: String,
    /// `TensorProto.dims`.
    pub dims: Vec<i64>,
    /// `TensorProto.data_type` (1 = float).
    pub data_type: i32,
    /// `TensorProto.raw_data` (little-endian elements), borrowed from the model.
    pub raw_data: Option<&'a [u8]>,
    /// `TensorProto.float_data`.
    pub float_data: Vec<f32>,
    /// Whether the data is stored outside the model (`data_location = EXTERNAL` or
    /// `external_data` entries present).
    pub external: bool,
}

impl OnnxTensor<'_> {
    /// Number of elements implied by `dims` (`None` for a negative dim or an overflow).
    pub fn element_count(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
    }

    /// The data as `f32` values, for a float tensor stored in the model; `Err` says why not.
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        if self.external {
            return Err(
                "data stored outside the model (external_data); only a self-contained \
                        .onnx file can be converted"
                    .into(),
            );
        }
        if self.data_type != DATA_TYPE_FLOAT {
            return Err(format!(
                "onnx data type {} ({}), expected 1 (float)",
                self.data_type,
                data_type_name(self.data_type)
            ));
        }
        let n = self
            .element_count()
            .ok_or_else(|| format!("invalid dims {:?}", self.dims))?;
        match self.raw_data {
            Some(raw) => {
                if raw.len() != n.saturating_mul(4) {
                    return Err(format!(
                        "raw_data has {} bytes, dims {:?} need {}",
                        raw.len(),
                        self.dims,
                        n.saturating_mul(4)
                    ));
                }
                Ok(raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            None => {
                if self.float_data.len() != n {
                    return Err(format!(
                        "float_data has {} values, dims {:?} need {n}",
                        self.float_data.len(),
                        self.dims
                    ));
                }
                Ok(self.float_data.clone())
            }
        }
    }
}

/// Name of an ONNX `TensorProto.DataType`.
pub fn data_type_name(data_type: i32) -> &'static str {
    match data_type {
        0 => "undefined",
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        _ => "other",
    }
}

/// Lists the initializers of every graph (`ModelProto` field 7) of an ONNX model.
pub fn read_initializers(model: &[u8]) -> Result<Vec<OnnxTensor<'_>>, OnnxError> {
    let mut out = Vec::new();
    let mut graphs = 0usize;
    let mut r = Reader::new(model, 0);
    while let Some((field, value)) = r.next_field()? {
        if field == 7 {
            let (bytes, offset) = value.bytes("ModelProto", field, r.last_key_offset)?;
            graphs += 1;
            read_graph(bytes, offset, &mut out)?;
        }
    }
    if graphs == 0 {
        return Err(OnnxError::NoGraph);
    }
    Ok(out)
}

fn read_graph<'a>(
    graph: &'a [u8],
    base: usize,
    out: &mut Vec<OnnxTensor<'a>>,
) -> Result<(), OnnxError> {
    let mut r = Reader::new(graph, base);
    while let Some((field, value)) = r.next_field()? {
        if field == 5 {
            let (bytes, offset) = value.bytes("GraphProto", field, r.last_key_offset)?;
            out.push(read_tensor(bytes, offset)?);
        }
    }
    Ok(())
}

/// Parses one `TensorProto`.
pub fn read_tensor(tensor: &[u8], base: usize) -> Result<OnnxTensor<'_>, OnnxError> {
    let mut t = OnnxTensor::default();
    let mut r = Reader::new(tensor, base);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Varint(v)) => t.dims.push(v as i64),
            (1, Value::Bytes(b, offset)) => {
                let mut p = Reader::new(b, offset);
                while !p.at_end() {
                    t.dims.push(p.varint()? as i64);
                }
            }
            (2, Value::Varint(v)) => t.data_type = v as i32,
            (4, Value::Fixed32(v)) => t.float_data.push(f32::from_le_bytes(v)),
            (4, Value::Bytes(b, offset)) => {
                if b.len() % 4 != 0 {
                    return Err(OnnxError::BadPacked {
                        what: "float_data",
                        len: b.len(),
                        offset,
                    });
                }
                t.float_data.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            (8, Value::Bytes(b, offset)) => {
                t.name = std::str::from_utf8(b)
                    .map_err(|_| OnnxError::BadName { offset })?
                    .to_owned();
            }
            (9, Value::Bytes(b, _)) => t.raw_data = Some(b),
            (13, Value::Bytes(..)) => t.external = true,
            (14, Value::Varint(v)) => t.external |= v == DATA_LOCATION_EXTERNAL,
            (1 | 2 | 4 | 8 | 9 | 13 | 14, v) => {
                let expected = match field {
                    2 | 14 => 0,
                    _ => 2,
                };
                return Err(OnnxError::WrongWireType {
                    message: "TensorProto",
                    field,
                    wire_type: v.wire_type(),
                    expected,
                    offset: r.last_key_offset,
                });
            }
            _ => {}
        }
    }
    Ok(t)
}

/// A field value.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64,
    /// Bytes and their absolute offset.
    Bytes(&'a [u8], usize),
    Fixed32([u8; 4]),
}

impl<'a> Value<'a> {
    fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => 0,
            Value::Fixed64 => 1,
            Value::Bytes(..) => 2,
            Value::Fixed32(_) => 5,
        }
    }

    fn bytes(
        self,
        message: &'static str,
        field: u32,
        key_offset: usize,
    ) -> Result<(&'a [u8], usize), OnnxError> {
        match self {
            Value::Bytes(b, offset) => Ok((b, offset)),
            other => Err(OnnxError::WrongWireType {
                message,
                field,
                wire_type: other.wire_type(),
                expected: 2,
                offset: key_offset,
            }),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    last_key_offset: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            last_key_offset: base,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let start = self.offset();
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(OnnxError::Truncated {
                    what: "varint",
                    offset: start,
                });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(OnnxError::BadVarint { offset: start })
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<(&'a [u8], usize), OnnxError> {
        let offset = self.offset();
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(OnnxError::Truncated { what, offset })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok((bytes, offset))
    }

    /// The next field, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, OnnxError> {
        if self.at_end() {
            return Ok(None);
        }
        self.last_key_offset = self.offset();
        let key = self.varint()?;
        let field = key >> 3;
        let bad_key = OnnxError::BadKey {
            key,
            offset: self.last_key_offset,
        };
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(bad_key);
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "fixed64 field")?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| OnnxError::Truncated {
                    what: "length-delimited field",
                    offset: self.offset(),
                })?;
                let (b, offset) = self.take(len, "length-delimited field")?;
                Value::Bytes(b, offset)
            }
            5 => {
                let (b, _) = self.take(4, "fixed32 field")?;
                Value::Fixed32([b[0], b[1], b[2], b[3]])
            }
            _ => return Err(bad_key),
        };
        Ok(Some((field as u32, value)))
    }
}
