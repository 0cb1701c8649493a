//! Loading and saving ONNX files.
//!
//! Loading memory-maps the file and decodes from a `Bytes` over the map, so tensor payloads
//! are slices of the page cache rather than copies: a 100 MB model costs little more than its
//! graph structure in RSS. External data is mapped the same way and attached to each tensor as
//! `raw_data`, so the rest of pare sees one self-contained model. Saving writes to a temporary
//! file next to the target and renames it, so a crash never leaves half a model behind.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::proto::{
    DATA_LOCATION_EXTERNAL, GraphProto, ModelProto, StringStringEntryProto, TensorProto,
};
use crate::error::{PareError, Result};

/// A loaded model: the protobuf plus where it came from.
#[derive(Clone, Debug)]
pub struct Model {
    pub proto: ModelProto,
    /// The file it was loaded from (`None` for built or embedded models).
    pub path: Option<PathBuf>,
    /// Size of the file on disk, external data not included.
    pub file_size: u64,
    /// Names of tensors whose data came from external files, so `save` can keep them external.
    pub external_tensors: Vec<String>,
}

impl Model {
    /// A model built in memory (builders, benchmarks, tests): no file, no external data.
    pub fn in_memory(proto: ModelProto) -> Self {
        Model {
            proto,
            path: None,
            file_size: 0,
            external_tensors: Vec::new(),
        }
    }
}

/// How `save_model` lays out tensor data.
#[derive(Clone, Debug, Default)]
pub struct SaveOptions {
    /// Tensors with at least this many bytes go to an external data file. `None` keeps
    /// everything inline unless the model would exceed protobuf's 2 GiB limit or the source
    /// model used external data (then 1 KiB, as onnx does).
    pub external_threshold: Option<usize>,
}

const PROTOBUF_LIMIT: usize = (2 << 30) - 1;

/// Sniffs formats people commonly mistake for ONNX, so the error says what the file *is*.
fn sniff_foreign(bytes: &[u8]) -> Option<String> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("is a PNG image, not an ONNX model".into());
    }
    if starts(b"\xff\xd8\xff") {
        return Some("is a JPEG image, not an ONNX model".into());
    }
    if starts(b"GIF8") || starts(b"BM") && bytes.len() > 14 && bytes[6..10] == [0, 0, 0, 0] {
        return Some("is an image, not an ONNX model".into());
    }
    if starts(b"PK\x03\x04") {
        return Some(
            "is a ZIP archive, most likely a PyTorch TorchScript or checkpoint file (.pt/.pth); \
             pare reads ONNX: export it with torch.onnx.export(model, example_inputs, \"model.onnx\")"
                .into(),
        );
    }
    if bytes.len() > 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return Some(
            "is a Python pickle (a legacy PyTorch checkpoint?); export the model with \
             torch.onnx.export(model, example_inputs, \"model.onnx\")"
                .into(),
        );
    }
    if bytes.len() > 8 && &bytes[4..8] == b"TFL3" {
        return Some("is a TensorFlow Lite flatbuffer, not an ONNX model (try tf2onnx)".into());
    }
    if starts(b"\x89HDF") {
        return Some("is an HDF5 (Keras) file, not an ONNX model (try tf2onnx)".into());
    }
    // Text: a likely first character and printable bytes after it (random bytes starting
    // with '{' are corrupt, not text).
    let head = &bytes[..bytes.len().min(256)];
    let printable = head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b >= 0x80);
    if (starts(b"{") || starts(b"#") || starts(b"<")) && printable {
        return Some("is a text file, not an ONNX model (ONNX files are binary protobuf)".into());
    }
    None
}

fn not_onnx(path: &Path, message: impl Into<String>) -> PareError {
    PareError::NotOnnx {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Memory-maps a file as `Bytes`. Empty files cannot be mapped and are returned as empty.
fn map_file(path: &Path) -> Result<Bytes> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let len = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only; pare never writes to files it has mapped (outputs go to a
    // temporary file that is renamed over the target, never written through a map).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| io_error(path, source))?;
    Ok(Bytes::from_owner(map))
}

fn io_error(path: &Path, source: std::io::Error) -> PareError {
    if source.kind() == std::io::ErrorKind::NotFound {
        PareError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        PareError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether external data may live outside the model's folder (`--allow-external-outside`).
/// Process-wide because every command loads models through many paths (reference models,
/// diff's two sides, the TUI's reloads) and the user's consent covers them all.
static ALLOW_EXTERNAL_OUTSIDE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Lets external data `location`s leave the model's folder (absolute paths, `..`, symbolic
/// links) for the rest of the process: the CLI's `--allow-external-outside`.
pub fn set_allow_external_outside(allow: bool) {
    ALLOW_EXTERNAL_OUTSIDE.store(allow, std::sync::atomic::Ordering::Relaxed);
}

fn external_outside_allowed() -> bool {
    ALLOW_EXTERNAL_OUTSIDE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Loads an ONNX model from a file, resolving external data relative to it.
pub fn load_model(path: &Path) -> Result<Model> {
    let meta = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
    if meta.is_dir() {
        return Err(PareError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let bytes = map_file(path)?;
    let mut model = decode_model(bytes, path)?;
    model.path = Some(path.to_path_buf());
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    resolve_external(&mut model, &base, path)?;
    check_payloads(&model.proto, path)?;
    Ok(model)
}

/// Every tensor's data must match its declared dims and type, checked once at load: a corrupt
/// or hostile file declaring 2^40 elements over a few bytes is an error naming the tensor,
/// never an allocation of what the dims claim (every later decoder trusts this).
fn check_payloads(m: &ModelProto, path: &Path) -> Result<()> {
    let mut problem: Option<String> = None;
    any_tensor(m, &mut |t| {
        problem = payload_problem(t);
        problem.is_some()
    });
    match problem {
        Some(message) => Err(not_onnx(path, message)),
        None => Ok(()),
    }
}

/// What is wrong with a tensor's payload size, if anything.
fn payload_problem(t: &TensorProto) -> Option<String> {
    if t.dims.iter().any(|&d| d < 0) {
        return Some(format!(
            "tensor '{}' has a negative dimension {:?}",
            t.name(),
            t.dims
        ));
    }
    let numel = t.numel();
    let dt = super::DataType(t.data_type());
    let bits = dt.bits();
    if let Some(raw) = &t.raw_data {
        if bits == 0 {
            return None;
        }
        let need = numel.checked_mul(bits).map(|b| b.div_ceil(8));
        if need != Some(raw.len() as u64) {
            return Some(format!(
                "tensor '{}' holds {} bytes, but its dims {:?} of type {dt} need {}",
                t.name(),
                raw.len(),
                t.dims,
                need.map_or("more than 2^64".to_string(), |n| n.to_string())
            ));
        }
        return None;
    }
    let typed = t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len()
        + t.string_data.len();
    let per = if matches!(dt.0, 14 | 15) { 2 } else { 1 };
    // Sub-byte types pack several values per int32; only whole-element types are checked.
    let whole_elements = bits >= 8 || dt == super::DataType::STRING;
    if typed > 0 && whole_elements {
        let need = numel.saturating_mul(per);
        if typed as u64 != need {
            return Some(format!(
                "tensor '{}' holds {typed} values, but its dims {:?} need {need}",
                t.name(),
                t.dims
            ));
        }
    }
    None
}

/// Decodes an in-memory ONNX file; `origin` names it in errors.
pub fn load_model_bytes(bytes: Bytes, origin: &Path) -> Result<Model> {
    let mut model = decode_model(bytes, origin)?;
    let has_external = any_tensor(&model.proto, &mut |t| t.is_external());
    if has_external {
        return Err(not_onnx(
            origin,
            "uses external data, which needs a model file on disk to resolve",
        ));
    }
    model.external_tensors.clear();
    check_payloads(&model.proto, origin)?;
    Ok(model)
}

fn decode_model(bytes: Bytes, path: &Path) -> Result<Model> {
    let file_size = bytes.len() as u64;
    if bytes.is_empty() {
        return Err(not_onnx(path, "is empty (0 bytes), not an ONNX model"));
    }
    if let Some(what) = sniff_foreign(&bytes) {
        return Err(not_onnx(path, what));
    }
    let proto = ModelProto::decode(bytes).map_err(|e| {
        not_onnx(
            path,
            format!("is not a valid ONNX protobuf (truncated or corrupt?): {e}"),
        )
    })?;
    let Some(graph) = proto.graph.as_ref() else {
        return Err(not_onnx(
            path,
            "decodes as protobuf but has no graph: not an ONNX model",
        ));
    };
    if proto.ir_version.is_none() && proto.opset_import.is_empty() {
        return Err(not_onnx(
            path,
            "decodes as protobuf but has neither ir_version nor opset_import: not an ONNX model",
        ));
    }
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(not_onnx(path, "has an empty graph (no nodes, no outputs)"));
    }
    Ok(Model {
        proto,
        path: None,
        file_size,
        external_tensors: Vec::new(),
    })
}

/// Visits every tensor that can carry data (initializers, Constant values, sparse parts,
/// attribute tensors), in the main graph, nested graphs, functions and training info.
pub fn any_tensor(m: &ModelProto, f: &mut dyn FnMut(&TensorProto) -> bool) -> bool {
    fn graph(g: &GraphProto, f: &mut dyn FnMut(&TensorProto) -> bool) -> bool {
        g.initializer.iter().any(&mut *f)
            || g.sparse_initializer
                .iter()
                .any(|s| s.values.iter().chain(s.indices.iter()).any(&mut *f))
            || g.node.iter().any(|n| {
                n.attribute.iter().any(|a| {
                    a.t.iter().any(|t| f(t))
                        || a.tensors.iter().any(&mut *f)
                        || a.g.iter().any(|g| graph(g, f))
                        || a.graphs.iter().any(|g| graph(g, f))
                })
            })
    }
    m.graph.iter().any(|g| graph(g, f))
        || m.training_info.iter().any(|t| {
            t.initialization.iter().any(|g| graph(g, f)) || t.algorithm.iter().any(|g| graph(g, f))
        })
}

/// Mutable twin of [`any_tensor`] (visits everything).
pub fn for_each_tensor_mut(
    m: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    fn graph(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto) -> Result<()>) -> Result<()> {
        for t in &mut g.initializer {
            f(t)?;
        }
        for s in &mut g.sparse_initializer {
            for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
                f(t)?;
            }
        }
        for n in &mut g.node {
            for a in &mut n.attribute {
                for t in a.t.iter_mut() {
                    f(t)?;
                }
                for t in &mut a.tensors {
                    f(t)?;
                }
                for g in a.g.iter_mut() {
                    graph(g, f)?;
                }
                for g in &mut a.graphs {
                    graph(g, f)?;
                }
            }
        }
        Ok(())
    }
    if let Some(g) = m.graph.as_mut() {
        graph(g, f)?;
    }
    for t in &mut m.training_info {
        if let Some(g) = t.initialization.as_mut() {
            graph(g, f)?;
        }
        if let Some(g) = t.algorithm.as_mut() {
            graph(g, f)?;
        }
    }
    Ok(())
}

/// Whether `full` (inside `base` by its components) leaves `base` once symbolic links are
/// followed: a model from elsewhere must not read arbitrary files (onnx's checker refuses the
/// same). A file that does not exist is reported as missing later.
fn escapes(base: &Path, full: &Path) -> bool {
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let (Ok(b), Ok(f)) = (base.canonicalize(), full.canonicalize()) else {
        return false;
    };
    !f.starts_with(b)
}

/// Replaces every external reference with a `raw_data` slice of the mapped external file.
fn resolve_external(model: &mut Model, base: &Path, model_path: &Path) -> Result<()> {
    let mut maps: HashMap<String, Bytes> = HashMap::new();
    let mut names = Vec::new();
    for_each_tensor_mut(&mut model.proto, &mut |t| {
        if !t.is_external() {
            return Ok(());
        }
        let tensor = t.name().to_string();
        let location = t.external_entry("location").unwrap_or("").to_string();
        let err = |problem: String| PareError::ExternalData {
            path: model_path.to_path_buf(),
            tensor: tensor.clone(),
            file: location.clone(),
            problem,
        };
        if location.is_empty() {
            return Err(err("has no 'location' entry".into()));
        }
        let rel = Path::new(&location);
        let confined = !external_outside_allowed();
        const HINT: &str = "; pare refuses that unless --allow-external-outside is given";
        if confined
            && (rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir)))
        {
            return Err(err(format!("points outside the model's directory{HINT}")));
        }
        let full = base.join(rel);
        if confined && escapes(base, &full) {
            return Err(err(format!(
                "resolves outside the model's directory (through a symbolic link){HINT}"
            )));
        }
        if !maps.contains_key(&location) {
            let data = map_file(&full).map_err(|e| match e {
                PareError::NotFound { .. } => {
                    err(format!("is missing (looked for {})", full.display()))
                }
                other => err(other.to_string()),
            })?;
            maps.insert(location.clone(), data);
        }
        let data = &maps[&location];
        let parse = |key: &str| -> Result<Option<usize>> {
            match t.external_entry(key) {
                None => Ok(None),
                Some(v) => v
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| err(format!("has a non-numeric '{key}' ({v})"))),
            }
        };
        let offset = parse("offset")?.unwrap_or(0);
        let length = match parse("length")? {
            Some(l) => l,
            None => data.len().saturating_sub(offset),
        };
        let end = offset.saturating_add(length);
        if end > data.len() {
            return Err(err(format!(
                "is too short: tensor needs bytes {offset}..{end}, file has {}",
                data.len()
            )));
        }
        t.raw_data = Some(data.slice(offset..end));
        t.data_location = None;
        t.external_data.clear();
        names.push(tensor);
        Ok(())
    })?;
    model.external_tensors = names;
    Ok(())
}

/// Writes `model` to `path` atomically (temp file + rename). Refuses to overwrite the file the
/// model was loaded from, because its tensors may still be mapped from it.
pub fn save_model(model: &Model, path: &Path, opts: &SaveOptions) -> Result<()> {
    if let Some(src) = &model.path
        && same_file(src, path)
    {
        return Err(PareError::OutputIsInput {
            path: path.to_path_buf(),
        });
    }
    let mut proto = model.proto.clone();
    let inline_size = proto.encoded_len();
    let threshold = match opts.external_threshold {
        Some(t) => Some(t),
        None if !model.external_tensors.is_empty() || inline_size > PROTOBUF_LIMIT => Some(1024),
        None => None,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| PareError::Usage(format!("{} is not a file path", path.display())))?;
    let mut external_written: Option<(PathBuf, tempfile_like::TempFile)> = None;
    if let Some(threshold) = threshold {
        let data_name = format!("{file_name}.data");
        let data_path = dir.join(&data_name);
        let mut tmp = tempfile_like::TempFile::create(&data_path)?;
        let mut offset: u64 = 0;
        for_each_tensor_mut(&mut proto, &mut |t| {
            let Some(raw) = t.raw_data.as_ref() else {
                return Ok(());
            };
            if raw.len() < threshold {
                return Ok(());
            }
            // Align each tensor to 4 KiB like onnx does, so readers can map it directly.
            let pad = (4096 - (offset % 4096)) % 4096;
            if pad > 0 {
                tmp.write_all(&vec![0u8; pad as usize])?;
                offset += pad;
            }
            tmp.write_all(raw)?;
            let len = raw.len() as u64;
            t.external_data = vec![
                StringStringEntryProto::new("location", data_name.clone()),
                StringStringEntryProto::new("offset", offset.to_string()),
                StringStringEntryProto::new("length", len.to_string()),
            ];
            t.data_location = Some(DATA_LOCATION_EXTERNAL);
            t.raw_data = None;
            offset += len;
            Ok(())
        })?;
        external_written = Some((data_path, tmp));
    }
    let encoded = proto.encode_to_vec();
    if encoded.len() > PROTOBUF_LIMIT {
        return Err(PareError::Usage(format!(
            "{}: the graph alone is {} bytes, over protobuf's 2 GiB limit",
            path.display(),
            encoded.len()
        )));
    }
    let mut tmp = tempfile_like::TempFile::create(path)?;
    tmp.write_all(&encoded)?;
    if let Some((data_path, data_tmp)) = external_written {
        data_tmp.persist(&data_path)?;
    }
    tmp.persist(path)?;
    Ok(())
}

/// Whether two paths name the same file: through symbolic links (canonical paths) and hard
/// links (same device and inode), so no spelling of the input can be overwritten.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(x), Ok(y)) = (std::fs::canonicalize(a), std::fs::canonicalize(b))
        && x == y
    {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// Serialises a model to bytes (everything inline).
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// A small atomic-write helper: writes to `.<name>.tmp-<pid>` and renames on `persist`;
/// dropped without persisting, it deletes the temporary file.
pub mod tempfile_like {
    use super::*;

    pub struct TempFile {
        tmp: PathBuf,
        file: Option<std::io::BufWriter<File>>,
    }

    impl TempFile {
        pub fn create(target: &Path) -> Result<Self> {
            let dir = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "out".into());
            // Unique per process and per call: two threads may write the same target.
            static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!(".{name}.tmp-{}-{serial}", std::process::id()));
            let file = File::create(&tmp).map_err(|source| PareError::Write {
                path: target.to_path_buf(),
                source,
            })?;
            Ok(Self {
                tmp,
                file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            })
        }

        pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
            let tmp = self.tmp.clone();
            self.file
                .as_mut()
                .map(|f| f.write_all(data))
                .unwrap_or(Ok(()))
                .map_err(|source| PareError::Write { path: tmp, source })
        }

        pub fn persist(mut self, target: &Path) -> Result<()> {
            let werr = |source| PareError::Write {
                path: target.to_path_buf(),
                source,
            };
            if let Some(f) = self.file.take() {
                let file = f.into_inner().map_err(|e| werr(e.into_error()))?;
                file.sync_all().map_err(werr)?;
            }
            if let Err(e) = std::fs::rename(&self.tmp, target) {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(werr(e));
            }
            // The rename itself is durable only once the folder is synced (best effort: not
            // every filesystem lets a directory be opened for syncing).
            if let Some(dir) = self.tmp.parent()
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if self.file.is_some() {
                self.file = None;
                let _ = std::fs::remove_file(&self.tmp);
            }
        }
    }
}

/// Writes bytes atomically to `path` (used for tags files, reports and test data).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = tempfile_like::TempFile::create(path)?;
    tmp.write_all(data)?;
    tmp.persist(path)
}

/// Metadata entries as an ordered map (for display).
pub fn metadata_map(entries: &[StringStringEntryProto]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|e| {
            (
                e.key.clone().unwrap_or_default(),
                e.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}
