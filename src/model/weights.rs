//! Checkpoint files as plain host data: official SAM 2 / SAM 2.1 `.pt` files, the original
//! SAM4EM trainer's `.pth`, and safetensors with the same keys.
//!
//! A checkpoint becomes a [`StateDict`]: name → shape + f32 values. Which name goes where in
//! the model is decided by `model::sam4em` (key maps); this module only reads files. Pickled
//! files are parsed by `pytorch-reader`, which interprets the pickle opcodes as data and never
//! imports or calls anything named in them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tensor held on the host in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and values; panics when they disagree (a programming error).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} does not hold {} values", data.len());
        HostTensor { shape, data }
    }

    /// A shape without values: lets key and shape checks run on a listing of a checkpoint
    /// (such as `sam2-checkpoint-keys.json`) without reading or allocating its data.
    pub fn declared(shape: Vec<usize>) -> Self {
        HostTensor { shape, data: Vec::new() }
    }

    /// Whether this is a [`HostTensor::declared`] shape without values.
    pub fn is_declared(&self) -> bool {
        self.data.is_empty() && self.shape.iter().product::<usize>() > 0
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Named tensors read from one file. Integer tensors (BatchNorm's `num_batches_tracked`) are
/// kept apart from the float ones so that key checks can still see them.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    /// Float tensors by checkpoint key.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Keys of integer or boolean tensors, with their shapes.
    pub other: BTreeMap<String, Vec<usize>>,
    /// The file this came from (for error messages).
    pub source: PathBuf,
}

/// Why a checkpoint could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read at all.
    #[error("cannot read checkpoint: {source}: {}", path.display())]
    Read {
        /// What failed.
        source: std::io::Error,
        /// The file.
        path: PathBuf,
    },
    /// The file is not a checkpoint this program understands.
    #[error("not a readable checkpoint ({reason}): {}", path.display())]
    Format {
        /// Why.
        reason: String,
        /// The file.
        path: PathBuf,
    },
    /// A tensor has a shape the model does not expect.
    #[error("checkpoint tensor {key} has shape {found:?}, the model needs {expected:?}: {}", path.display())]
    Shape {
        /// Checkpoint key.
        key: String,
        /// Shape the model needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
        /// The file.
        path: PathBuf,
    },
    /// Tensors the model needs are absent.
    #[error("checkpoint lacks {} tensor(s) the model needs, e.g. {}: {}", keys.len(), preview(keys), path.display())]
    Missing {
        /// Model keys without a value.
        keys: Vec<String>,
        /// The file.
        path: PathBuf,
    },
    /// Tensors in the file that the model has no place for.
    #[error("checkpoint has {} tensor(s) this model does not know, e.g. {}: {}", keys.len(), preview(keys), path.display())]
    Unexpected {
        /// Checkpoint keys nobody took.
        keys: Vec<String>,
        /// The file.
        path: PathBuf,
    },
    /// A value is NaN or infinite.
    #[error("checkpoint tensor {key} holds NaN or infinite values: {}", path.display())]
    NonFinite {
        /// Checkpoint key.
        key: String,
        /// The file.
        path: PathBuf,
    },
}

fn preview(keys: &[String]) -> String {
    let mut s: Vec<&str> = keys.iter().take(4).map(String::as_str).collect();
    if keys.len() > 4 {
        s.push("…");
    }
    s.join(", ")
}

impl StateDict {
    /// Reads a checkpoint, choosing the format from its content: safetensors (an 8-byte
    /// header length and a JSON header) or a PyTorch file (zip or legacy pickle). For PyTorch
    /// files the state dict is looked for under `model` (SAM 2) or `model_state_dict` (the
    /// SAM4EM trainer), else at the top level.
    pub fn read(path: &Path) -> Result<Self, WeightsError> {
        let mut head = [0u8; 16];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|source| WeightsError::Read { source, path: path.into() })?;
            f.read(&mut head).map_err(|source| WeightsError::Read { source, path: path.into() })?
        };
        if n >= 9 && head[8] == b'{' {
            Self::read_safetensors(path)
        } else {
            Self::read_pytorch(path, &["model", "model_state_dict", "state_dict"])
        }
    }

    /// Reads a safetensors file.
    pub fn read_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Read { source, path: path.into() })?;
        Self::from_safetensors_bytes(&bytes, path)
    }

    /// Parses safetensors bytes; `path` only labels errors.
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<Self, WeightsError> {
        use safetensors::Dtype;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError::Format { reason: format!("safetensors: {e}"), path: path.into() })?;
        let mut dict = StateDict { source: path.into(), ..Default::default() };
        for (name, view) in st.iter() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let kind = match view.dtype() {
                Dtype::F32 => FloatKind::F32,
                Dtype::F64 => FloatKind::F64,
                Dtype::F16 => FloatKind::F16,
                Dtype::BF16 => FloatKind::BF16,
                _ => {
                    dict.other.insert(name.to_string(), shape);
                    continue;
                }
            };
            let data = floats_from_le(kind, raw);
            dict.tensors.insert(name.to_string(), HostTensor::new(shape, data));
        }
        Ok(dict)
    }

    /// Reads a PyTorch `.pt`/`.pth` file. The first of `top_level_keys` present in the
    /// pickled dictionary is taken as the state dict; when none is, the top level is.
    pub fn read_pytorch(path: &Path, top_level_keys: &[&str]) -> Result<Self, WeightsError> {
        use pytorch_reader::{DType, PytorchReader};
        let fmt = |e: pytorch_reader::PytorchError| WeightsError::Format {
            reason: format!("PyTorch file: {e}"),
            path: path.into(),
        };
        let mut reader = None;
        for key in top_level_keys {
            if let Ok(r) = PytorchReader::with_top_level_key(path, key)
                && !r.is_empty()
            {
                reader = Some(r);
                break;
            }
        }
        let reader = match reader {
            Some(r) => r,
            None => PytorchReader::new(path).map_err(fmt)?,
        };
        let mut dict = StateDict { source: path.into(), ..Default::default() };
        for (name, t) in reader.into_tensors() {
            let shape = t.shape().to_vec();
            let dtype = t.dtype();
            let kind = match dtype {
                DType::F32 => FloatKind::F32,
                DType::F64 => FloatKind::F64,
                DType::F16 => FloatKind::F16,
                DType::BF16 => FloatKind::BF16,
                _ => {
                    dict.other.insert(name, shape);
                    continue;
                }
            };
            let raw = t
                .read()
                .map_err(|e| WeightsError::Format { reason: format!("tensor {name}: {e}"), path: path.into() })?;
            let data = floats_from_le(kind, &raw);
            if data.len() != shape.iter().product::<usize>() {
                return Err(WeightsError::Format {
                    reason: format!("tensor {name} holds {} values for shape {shape:?}", data.len()),
                    path: path.into(),
                });
            }
            dict.tensors.insert(name, HostTensor::new(shape, data));
        }
        if dict.tensors.is_empty() {
            return Err(WeightsError::Format { reason: "no float tensors in the file".into(), path: path.into() });
        }
        Ok(dict)
    }

    /// The same keys and shapes without the values (for key checks on a shapes-only model).
    pub fn declared_only(&self) -> StateDict {
        StateDict {
            tensors: self.tensors.iter().map(|(k, t)| (k.clone(), HostTensor::declared(t.shape.clone()))).collect(),
            other: self.other.clone(),
            source: self.source.clone(),
        }
    }

    /// Writes float tensors as safetensors with string metadata, atomically.
    pub fn write_safetensors(
        tensors: &BTreeMap<String, HostTensor>,
        metadata: BTreeMap<String, String>,
        path: &Path,
    ) -> Result<(), WeightsError> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(k, b, s)| {
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map_err(|e| WeightsError::Format { reason: format!("tensor {k}: {e}"), path: path.into() })?;
                Ok((k.clone(), view))
            })
            .collect::<Result<_, WeightsError>>()?;
        let meta: std::collections::HashMap<String, String> = metadata.into_iter().collect();
        let out = safetensors::serialize(views, Some(meta))
            .map_err(|e| WeightsError::Format { reason: format!("safetensors: {e}"), path: path.into() })?;
        crate::io::atomic::write_file_atomic(path, |w| {
            use std::io::Write;
            w.write_all(&out).map_err(|e| e.to_string())
        })
        .map_err(|e| WeightsError::Read { source: std::io::Error::other(e.to_string()), path: path.into() })
    }
}

/// Float element types a checkpoint may store.
#[derive(Clone, Copy)]
enum FloatKind {
    F32,
    F64,
    F16,
    BF16,
}

/// Little-endian values of `kind` → f32.
fn floats_from_le(kind: FloatKind, raw: &[u8]) -> Vec<f32> {
    match kind {
        FloatKind::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        FloatKind::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        FloatKind::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        FloatKind::BF16 => {
            raw.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
        }
    }
}

/// IEEE half → single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f · 2^-24.
            let v = f as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7fc0_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn safetensors_round_trip_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        let mut t = BTreeMap::new();
        t.insert("x.weight".to_string(), HostTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]));
        let mut meta = BTreeMap::new();
        meta.insert("k".to_string(), "v".to_string());
        StateDict::write_safetensors(&t, meta, &path).unwrap();
        let back = StateDict::read(&path).unwrap();
        assert_eq!(back.tensors, t);
        let bad = dir.path().join("bad.pt");
        std::fs::write(&bad, b"not a checkpoint at all").unwrap();
        let err = StateDict::read(&bad).unwrap_err().to_string();
        assert!(err.ends_with(&bad.display().to_string()), "{err}");
    }
}
