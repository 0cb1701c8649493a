//! Reads PyTorch checkpoints (`state_dict`s) in pure Rust: the zip format (`torch.save` since
//! 1.6), the legacy format (back-to-back pickles then raw storages, still what many shipped
//! `.pth` files are) and `.safetensors`. No code in the checkpoint is executed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::pickle::{self, PickleError, Value};
use crate::model::tensor::f16_to_f32;

/// One tensor of a checkpoint, converted to f32 (what ONNX initializers of trained vision
/// models hold), in the checkpoint's order.
#[derive(Clone, Debug, PartialEq)]
pub struct CkptTensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub values: Vec<f32>,
    /// Integer tensors (`num_batches_tracked`) are bookkeeping, never weights.
    pub integer: bool,
}

/// A checkpoint that cannot be read, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: {source}", .path.display())]
    Pickle { path: PathBuf, source: PickleError },
}

/// Loads every tensor of the `state_dict` in `path` (`.pt`, `.pth`, `.bin`, `.safetensors`).
pub fn load_checkpoint(path: &Path) -> Result<Vec<CkptTensor>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fmt = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let is_st = path.extension().is_some_and(|e| e == "safetensors");
    if bytes.starts_with(b"PK\x03\x04") {
        load_zip(&bytes, path)
    } else if bytes.first() == Some(&0x80) && !is_st {
        load_legacy(&bytes, path)
    } else if is_st || bytes.len() > 8 && bytes.get(8) == Some(&b'{') {
        load_safetensors(&bytes).map_err(fmt)
    } else {
        Err(fmt(
            "not a PyTorch checkpoint (expected a torch.save zip or pickle file, or .safetensors)"
                .into(),
        ))
    }
}

/// Element type of a torch storage class.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Elem {
    fn from_storage(name: &str) -> Option<Self> {
        let short = name.rsplit('.').next()?;
        Some(match short {
            "FloatStorage" => Elem::F32,
            "DoubleStorage" => Elem::F64,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::Bf16,
            "LongStorage" => Elem::I64,
            "IntStorage" => Elem::I32,
            "ShortStorage" => Elem::I16,
            "CharStorage" => Elem::I8,
            "ByteStorage" => Elem::U8,
            "BoolStorage" => Elem::Bool,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::Bf16 | Elem::I16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }
    fn integer(self) -> bool {
        !matches!(self, Elem::F32 | Elem::F64 | Elem::F16 | Elem::Bf16)
    }
    fn read(self, b: &[u8]) -> f32 {
        match self {
            Elem::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Elem::F64 => f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32,
            Elem::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            Elem::Bf16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
            Elem::I64 => i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as f32,
            Elem::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Elem::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])),
            Elem::I8 => f32::from(b[0] as i8),
            Elem::U8 | Elem::Bool => f32::from(b[0]),
        }
    }
}

/// A tensor as the pickle describes it, before its storage is read.
struct TensorRef {
    name: String,
    key: String,
    elem: Elem,
    offset: usize,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn load_zip(bytes: &[u8], path: &Path) -> Result<Vec<CkptTensor>, CheckpointError> {
    let fmt = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| fmt(format!("not a readable zip archive: {e}")))?;
    let pkl = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| fmt("zip archive has no data.pkl: not a torch.save checkpoint".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str| -> Result<Vec<u8>, CheckpointError> {
        let mut f = zip
            .by_name(name)
            .map_err(|e| fmt(format!("entry {name}: {e}")))?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(|source| CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(v)
    };
    let data = read_entry(&pkl)?;
    let (root, _) = pickle::load(&data).map_err(|source| CheckpointError::Pickle {
        path: path.to_path_buf(),
        source,
    })?;
    let refs = tensor_refs(&root).map_err(fmt)?;
    let mut storages = HashMap::new();
    for r in &refs {
        if !storages.contains_key(&r.key) {
            let b = read_entry(&format!("{prefix}data/{}", r.key))?;
            storages.insert(r.key.clone(), b);
        }
    }
    materialise(refs, &storages).map_err(fmt)
}

fn load_legacy(bytes: &[u8], path: &Path) -> Result<Vec<CkptTensor>, CheckpointError> {
    let fmt = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let pk = |source| CheckpointError::Pickle {
        path: path.to_path_buf(),
        source,
    };
    let mut pos = 0;
    let next = |pos: &mut usize| -> Result<Value, CheckpointError> {
        let (v, n) = pickle::load(&bytes[*pos..]).map_err(pk)?;
        *pos += n;
        Ok(v)
    };
    let magic = next(&mut pos)?;
    if magic.as_int().is_none() {
        return Err(fmt("not a torch.save pickle (no magic number)".into()));
    }
    let _protocol = next(&mut pos)?;
    let _sys_info = next(&mut pos)?;
    let root = next(&mut pos)?;
    let keys = next(&mut pos)?;
    let refs = tensor_refs(&root).map_err(fmt)?;
    let elems: HashMap<&str, Elem> = refs.iter().map(|r| (r.key.as_str(), r.elem)).collect();
    let mut storages = HashMap::new();
    for k in keys.items().unwrap_or(&[]) {
        let key = k
            .as_str()
            .ok_or_else(|| fmt("storage key is not a string".into()))?;
        let head = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| fmt(format!("storage {key} is cut off")))?;
        let numel = u64::from_le_bytes(head.try_into().unwrap_or([0; 8])) as usize;
        pos += 8;
        let elem = elems.get(key).copied().unwrap_or(Elem::F32);
        let len = numel
            .checked_mul(elem.size())
            .filter(|l| pos + l <= bytes.len())
            .ok_or_else(|| fmt(format!("storage {key} is cut off")))?;
        storages.insert(key.to_string(), bytes[pos..pos + len].to_vec());
        pos += len;
    }
    materialise(refs, &storages).map_err(fmt)
}

/// The `state_dict` inside a pickle root: the root itself, or a dict under a usual key
/// (`state_dict`, `model`, …) when the file is a training checkpoint.
fn state_dict(root: &Value) -> Option<&[(Value, Value)]> {
    let d = dict_items(root)?;
    if d.iter().any(|(_, v)| tensor_call(v).is_some()) {
        return Some(d);
    }
    for key in ["state_dict", "model_state_dict", "model", "net", "module"] {
        if let Some((_, v)) = d.iter().find(|(k, _)| k.as_str() == Some(key))
            && let Some(inner) = state_dict(v)
        {
            return Some(inner);
        }
    }
    Some(d)
}

/// The items of a dict, or of an `OrderedDict` rebuilt through REDUCE.
fn dict_items(v: &Value) -> Option<&[(Value, Value)]> {
    match v {
        Value::Dict(d) => Some(d),
        Value::Call { items, .. } => Some(items),
        _ => None,
    }
}

/// The arguments of a tensor rebuild call (`_rebuild_tensor_v2`, through `_rebuild_parameter`).
fn tensor_call(v: &Value) -> Option<&[Value]> {
    let Value::Call { func, args, .. } = v else {
        return None;
    };
    let Value::Global(f) = &**func else {
        return None;
    };
    let args = args.items()?;
    match f.as_str() {
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => Some(args),
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            tensor_call(args.first()?)
        }
        _ => None,
    }
}

fn ints(v: Option<&Value>) -> Option<Vec<i64>> {
    v?.items()?.iter().map(Value::as_int).collect()
}

fn tensor_refs(root: &Value) -> Result<Vec<TensorRef>, String> {
    let d = state_dict(root).ok_or("the pickle holds no dict of tensors (not a state_dict)")?;
    let mut out = Vec::new();
    for (k, v) in d {
        let Some(name) = k.as_str() else { continue };
        let Some(args) = tensor_call(v) else { continue };
        let bad = |what: &str| format!("tensor '{name}': {what}");
        let Some(Value::PersId(pid)) = args.first() else {
            return Err(bad("no storage reference"));
        };
        let pid = pid
            .items()
            .ok_or_else(|| bad("malformed storage reference"))?;
        let storage = match pid.get(1) {
            Some(Value::Global(g)) => g.clone(),
            _ => return Err(bad("storage without a type")),
        };
        let elem = Elem::from_storage(&storage)
            .ok_or_else(|| bad(&format!("unsupported storage type {storage}")))?;
        let key = match pid.get(2) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Int(i)) => i.to_string(),
            _ => return Err(bad("storage without a key")),
        };
        let offset = args.get(1).and_then(Value::as_int).unwrap_or(0);
        let size = ints(args.get(2)).ok_or_else(|| bad("malformed size"))?;
        let stride = ints(args.get(3)).ok_or_else(|| bad("malformed stride"))?;
        if size.len() != stride.len() || offset < 0 || size.iter().any(|&s| s < 0) {
            return Err(bad("size and stride disagree"));
        }
        out.push(TensorRef {
            name: name.to_string(),
            key,
            elem,
            offset: offset as usize,
            size,
            stride,
        });
    }
    Ok(out)
}

/// Gathers each tensor's elements from its storage by offset and strides (views and
/// transposed tensors are saved with their base storage).
fn materialise(
    refs: Vec<TensorRef>,
    storages: &HashMap<String, Vec<u8>>,
) -> Result<Vec<CkptTensor>, String> {
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let data = storages
            .get(&r.key)
            .ok_or_else(|| format!("tensor '{}': storage {} is missing", r.name, r.key))?;
        let es = r.elem.size();
        let n: usize = r.size.iter().map(|&d| d as usize).product();
        let mut values = Vec::with_capacity(n);
        let mut idx = vec![0i64; r.size.len()];
        for _ in 0..n {
            let pos = r.offset as i64 + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<i64>();
            let b = usize::try_from(pos)
                .ok()
                .and_then(|p| data.get(p * es..p * es + es))
                .ok_or_else(|| format!("tensor '{}' reads past its storage", r.name))?;
            values.push(r.elem.read(b));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < r.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.push(CkptTensor {
            name: r.name,
            dims: r.size,
            values,
            integer: r.elem.integer(),
        });
    }
    Ok(out)
}

fn load_safetensors(bytes: &[u8]) -> Result<Vec<CkptTensor>, String> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let elem = match view.dtype() {
            Dtype::F32 => Elem::F32,
            Dtype::F64 => Elem::F64,
            Dtype::F16 => Elem::F16,
            Dtype::BF16 => Elem::Bf16,
            Dtype::I64 => Elem::I64,
            Dtype::I32 => Elem::I32,
            Dtype::I16 => Elem::I16,
            Dtype::I8 => Elem::I8,
            Dtype::U8 => Elem::U8,
            Dtype::BOOL => Elem::Bool,
            other => return Err(format!("tensor '{name}': unsupported dtype {other:?}")),
        };
        let values = view
            .data()
            .chunks_exact(elem.size())
            .map(|b| elem.read(b))
            .collect();
        out.push(CkptTensor {
            name,
            dims: view.shape().iter().map(|&d| d as i64).collect(),
            values,
            integer: elem.integer(),
        });
    }
    // safetensors stores no module order; natural order of the dotted paths is the closest
    // stand-in for registration order (`features.10` after `features.9`).
    out.sort_by_key(|t| natural_key(&t.name));
    Ok(out)
}

/// Orders `a.10.w` after `a.9.w`.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, p.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_ten_after_nine() {
        let mut v = vec!["f.10.w", "f.9.w", "f.9.b", "g"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["f.9.b", "f.9.w", "f.10.w", "g"]);
    }

    #[test]
    fn strided_gather_reads_transposed_views() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let storages = HashMap::from([("0".to_string(), data)]);
        let r = TensorRef {
            name: "t".into(),
            key: "0".into(),
            elem: Elem::F32,
            offset: 0,
            size: vec![3, 2],
            stride: vec![1, 3],
        };
        let t = materialise(vec![r], &storages).unwrap();
        assert_eq!(t[0].values, [1., 4., 2., 5., 3., 6.]);
        let r = TensorRef {
            name: "t".into(),
            key: "0".into(),
            elem: Elem::F32,
            offset: 5,
            size: vec![2],
            stride: vec![1],
        };
        let e = materialise(vec![r], &storages).unwrap_err();
        assert!(e.contains("past its storage"), "{e}");
    }
}
