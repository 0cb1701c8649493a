//! Calibration inputs: image folders, `.npy` arrays, ONNX `TensorProto` (`.pb`) files and
//! seeded random data, mapped onto the model's inputs and checked against what the model
//! declares *before anything runs* (seed Q8: an input shape that differed between engine
//! build and inference surfaced as an opaque `cuMemcpyHtoDAsync failed`). Samples are loaded
//! one at a time when calibration asks for them, so memory never holds the data set.
//!
//! Layouts understood:
//! - a folder of files, one sample per file (single-input models);
//! - a folder with one subfolder per input (`left/`, `right/`), files paired in sorted order;
//! - `NAME=PATH` given once per input;
//! - ONNX test-data folders (`test_data_set_0/input_0.pb`, …), one sample per folder;
//! - a `.npy` holding a batch of N samples for a batch-1 input is read as N samples.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::model::DataType;
use crate::model::proto::{Dimension, GraphProto, TensorProto};
use crate::rng::Rng;
use crate::runtime::{HostData, HostTensor};

/// One declared dimension of a model input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DeclDim {
    Known(usize),
    Sym(String),
}

impl std::fmt::Display for DeclDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeclDim::Known(v) => write!(f, "{v}"),
            DeclDim::Sym(s) => f.write_str(s),
        }
    }
}

/// A model input as declared (with `--input-shape` pins applied).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputDecl {
    pub name: String,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: DataType,
    pub dims: Vec<DeclDim>,
}

fn ser_dtype<S: serde::Serializer>(d: &DataType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

impl InputDecl {
    pub fn describe(&self) -> String {
        format!(
            "{} [{}]",
            self.dtype,
            self.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
    pub fn is_dynamic(&self) -> bool {
        self.dims.iter().any(|d| matches!(d, DeclDim::Sym(_)))
    }
}

/// The graph inputs that are not initializers, with declared dims; `pins` replace them.
pub fn input_decls(graph: &GraphProto, pins: &HashMap<String, Vec<i64>>) -> Result<Vec<InputDecl>> {
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let mut out = Vec::new();
    for vi in &graph.input {
        if inits.contains(vi.name()) {
            continue;
        }
        let tt = vi.tensor_type();
        let dtype = DataType(tt.and_then(|t| t.elem_type).unwrap_or(1));
        let dims: Vec<DeclDim> = if let Some(p) = pins.get(vi.name()) {
            p.iter()
                .map(|&d| DeclDim::Known(d.max(0) as usize))
                .collect()
        } else {
            let shape = tt.and_then(|t| t.shape.as_ref()).ok_or_else(|| {
                PareError::Usage(format!(
                    "input '{}' declares no shape; give it with --input-shape {}:DIMS",
                    vi.name(),
                    vi.name()
                ))
            })?;
            shape
                .dim
                .iter()
                .enumerate()
                .map(|(k, d)| match &d.value {
                    Some(Dimension::DimValue(v)) if *v > 0 => DeclDim::Known(*v as usize),
                    Some(Dimension::DimParam(s)) if !s.is_empty() => DeclDim::Sym(s.clone()),
                    _ => DeclDim::Sym(format!("{}_dim{k}", vi.name())),
                })
                .collect()
        };
        out.push(InputDecl {
            name: vi.name().to_string(),
            dtype,
            dims,
        });
    }
    if out.is_empty() {
        return Err(PareError::Usage(
            "the model has no inputs to calibrate".into(),
        ));
    }
    Ok(out)
}

/// Tensor memory layout of image inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// NCHW unless the input's last dim is 1 or 3 and its second is not.
    #[default]
    Auto,
    Nchw,
    Nhwc,
}

/// How images become tensors: `((pixel * scale) - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preprocess {
    /// Target `(height, width)`; default: the input's declared size, else the image's own.
    pub resize: Option<(usize, usize)>,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Channel order BGR (OpenCV-trained models) instead of RGB.
    pub bgr: bool,
    pub layout: Layout,
}

impl Default for Preprocess {
    /// torchvision's ImageNet normalisation.
    fn default() -> Self {
        Preprocess {
            resize: None,
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            bgr: false,
            layout: Layout::Auto,
        }
    }
}

/// Where calibration data comes from (`--calib`).
#[derive(Clone, Debug, PartialEq)]
pub enum CalibSource {
    /// Seeded standard-normal data in the declared shapes.
    Random { seed: u64 },
    /// A folder or file for all inputs.
    Path(PathBuf),
    /// One folder or file per input name.
    PerInput(Vec<(String, PathBuf)>),
}

impl CalibSource {
    /// Parses `--calib` values: `random`, `PATH`, or `NAME=PATH` (repeatable).
    pub fn parse(values: &[String], seed: u64) -> Result<Self> {
        if values.is_empty() {
            return Err(PareError::Usage(
                "--calib is required: a folder of samples, NAME=FOLDER per input, or 'random'"
                    .into(),
            ));
        }
        if values.len() == 1 && values[0] == "random" {
            return Ok(CalibSource::Random { seed });
        }
        let named: Vec<Option<(String, PathBuf)>> = values
            .iter()
            .map(|v| match v.split_once('=') {
                Some((n, p)) if !n.is_empty() && !Path::new(v).exists() => {
                    Some((n.to_string(), PathBuf::from(p)))
                }
                _ => None,
            })
            .collect();
        if named.iter().all(Option::is_some) {
            return Ok(CalibSource::PerInput(named.into_iter().flatten().collect()));
        }
        if values.len() == 1 {
            return Ok(CalibSource::Path(PathBuf::from(&values[0])));
        }
        Err(PareError::Usage(
            "--calib: give one folder, 'random', or NAME=FOLDER once per input (not a mix)".into(),
        ))
    }
}

/// One input's data in one sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Random {
        seed: u64,
    },
    Image(PathBuf),
    /// Sample `index` along axis 0 of a batch file when `split`.
    Npy {
        path: PathBuf,
        index: usize,
        split: bool,
    },
    Pb(PathBuf),
}

impl Item {
    fn label(&self) -> String {
        match self {
            Item::Random { seed } => format!("random (seed {seed})"),
            Item::Image(p) | Item::Pb(p) => p.display().to_string(),
            Item::Npy {
                path,
                index,
                split: true,
            } => format!("{}[{index}]", path.display()),
            Item::Npy { path, .. } => path.display().to_string(),
        }
    }
}

/// Calibration data: samples checked against the model's inputs, loaded on demand.
#[derive(Debug)]
pub struct SampleSet {
    pub inputs: Vec<InputDecl>,
    /// Per sample, one item per input (model input order).
    pub items: Vec<Vec<Item>>,
    /// Per sample, the concrete shape of each input.
    pub shapes: Vec<Vec<Vec<usize>>>,
    pub preprocess: Preprocess,
    pub source: String,
    /// Things worth telling the user (added batch dims, split batches, defaults used).
    pub notes: Vec<String>,
    live: AtomicUsize,
    peak_live: AtomicUsize,
}

/// A loaded sample; counts itself so tests can prove samples are never all held at once.
pub struct Sample<'a> {
    pub index: usize,
    pub tensors: Vec<HostTensor>,
    set: &'a SampleSet,
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        self.set.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Distinct input shapes in a set and how many samples have each (seed Q11).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShapeCount {
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub samples: usize,
}

fn is_sample_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "npy" | "pb")
    )
}

fn item_for(p: &Path) -> Item {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("npy") => Item::Npy {
            path: p.to_path_buf(),
            index: 0,
            split: false,
        },
        Some("pb") => Item::Pb(p.to_path_buf()),
        _ => Item::Image(p.to_path_buf()),
    }
}

fn io_err(p: &Path, e: std::io::Error) -> PareError {
    if e.kind() == std::io::ErrorKind::NotFound {
        PareError::NotFound {
            path: p.to_path_buf(),
        }
    } else {
        PareError::Io {
            path: p.to_path_buf(),
            source: e,
        }
    }
}

/// Sample files of a folder (sorted), or the file itself.
fn list_files(p: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
    if meta.is_file() {
        if !is_sample_file(p) {
            return Err(PareError::Usage(format!(
                "{}: not a calibration sample (expected .png, .jpg, .npy or .pb)",
                p.display()
            )));
        }
        return Ok(vec![p.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| io_err(p, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_sample_file(p))
        .collect();
    v.sort();
    Ok(v)
}

fn subdirs(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `input_K.pb` files of an ONNX test-data folder, mapped to inputs by the tensor's name, else
/// by K.
fn test_data_sample(dir: &Path, inputs: &[InputDecl]) -> Result<Vec<Item>> {
    let mut files: Vec<PathBuf> = list_files(dir)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("input_") && n.ends_with(".pb"))
        })
        .collect();
    files.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.trim_start_matches("input_").parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    let mut slots: Vec<Option<Item>> = vec![None; inputs.len()];
    for (k, f) in files.iter().enumerate() {
        let t = read_pb(f)?;
        let slot = inputs.iter().position(|i| i.name == t.name()).unwrap_or(k);
        if slot < slots.len() {
            slots[slot] = Some(Item::Pb(f.clone()));
        }
    }
    slots
        .into_iter()
        .zip(inputs)
        .map(|(s, i)| {
            s.ok_or_else(|| {
                PareError::Usage(format!(
                    "{}: no input_K.pb for model input '{}'",
                    dir.display(),
                    i.name
                ))
            })
        })
        .collect()
}

impl SampleSet {
    /// Finds the samples of `source` for `inputs` (at most `limit`) and checks every one
    /// against the declared inputs. Nothing is run and no sample is kept in memory.
    pub fn open(
        inputs: Vec<InputDecl>,
        source: &CalibSource,
        limit: usize,
        preprocess: Preprocess,
    ) -> Result<Self> {
        let limit = limit.max(1);
        let mut notes = Vec::new();
        let (items, label): (Vec<Vec<Item>>, String) = match source {
            CalibSource::Random { seed } => (
                (0..limit)
                    .map(|k| {
                        vec![
                            Item::Random {
                                seed: seed.wrapping_mul(0x100_0000_01B3).wrapping_add(k as u64)
                            };
                            inputs.len()
                        ]
                    })
                    .collect(),
                format!("random (seed {seed})"),
            ),
            CalibSource::Path(p) => (Self::discover(p, &inputs)?, p.display().to_string()),
            CalibSource::PerInput(pairs) => {
                for (n, _) in pairs {
                    if !inputs.iter().any(|i| &i.name == n) {
                        return Err(PareError::Usage(format!(
                            "--calib {n}=...: the model has no input '{n}' (inputs: {})",
                            inputs
                                .iter()
                                .map(|i| i.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                let mut per_input = Vec::new();
                for i in &inputs {
                    let (_, p) = pairs.iter().find(|(n, _)| n == &i.name).ok_or_else(|| {
                        PareError::Usage(format!(
                            "--calib gives no data for input '{}': add --calib {}=FOLDER",
                            i.name, i.name
                        ))
                    })?;
                    per_input.push((i.name.clone(), list_files(p)?));
                }
                (
                    pair_up(per_input)?,
                    pairs
                        .iter()
                        .map(|(n, p)| format!("{n}={}", p.display()))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        };
        if items.is_empty() {
            return Err(PareError::Usage(format!(
                "--calib {label}: no calibration samples found (.png, .jpg, .npy or .pb files)"
            )));
        }
        let mut set = SampleSet {
            inputs,
            items: Vec::new(),
            shapes: Vec::new(),
            preprocess,
            source: label,
            notes: Vec::new(),
            live: AtomicUsize::new(0),
            peak_live: AtomicUsize::new(0),
        };
        // Expand batch files, resolve every sample's shapes, and check them all.
        let mut expanded: Vec<Vec<Item>> = Vec::new();
        'outer: for sample in items {
            for variant in set.expand(&sample, &mut notes)? {
                expanded.push(variant);
                if expanded.len() >= limit {
                    break 'outer;
                }
            }
        }
        for sample in expanded {
            let mut shapes = Vec::new();
            for (item, decl) in sample.iter().zip(&set.inputs) {
                shapes.push(set.item_shape(item, decl, &mut notes)?);
            }
            check_sample(&set.inputs, &sample, &shapes)?;
            set.items.push(sample);
            set.shapes.push(shapes);
        }
        notes.dedup();
        set.notes = notes;
        Ok(set)
    }

    fn discover(p: &Path, inputs: &[InputDecl]) -> Result<Vec<Vec<Item>>> {
        let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
        if meta.is_dir() {
            // ONNX test-data layout.
            let sets: Vec<PathBuf> = subdirs(p)
                .into_iter()
                .filter(|d| {
                    d.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("test_data_set"))
                })
                .collect();
            if !sets.is_empty() {
                return sets.iter().map(|d| test_data_sample(d, inputs)).collect();
            }
            // One subfolder per input.
            let per_input: Vec<Option<PathBuf>> = inputs
                .iter()
                .map(|i| Some(p.join(&i.name)).filter(|d| d.is_dir()))
                .collect();
            if per_input.iter().all(Option::is_some) {
                let lists = inputs
                    .iter()
                    .zip(per_input.into_iter().flatten())
                    .map(|(i, d)| Ok((i.name.clone(), list_files(&d)?)))
                    .collect::<Result<Vec<_>>>()?;
                return pair_up(lists);
            }
        }
        if inputs.len() > 1 {
            return Err(PareError::Usage(format!(
                "{}: the model has {} inputs ({}); give one subfolder per input ({}) or --calib NAME=FOLDER for each",
                p.display(),
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                inputs
                    .iter()
                    .map(|i| format!("{}/", i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(list_files(p)?
            .into_iter()
            .map(|f| vec![item_for(&f)])
            .collect())
    }

    /// A sample whose `.npy` holds a batch for a batch-1 input becomes one sample per row.
    fn expand(&self, sample: &[Item], notes: &mut Vec<String>) -> Result<Vec<Vec<Item>>> {
        let mut rows = 1usize;
        let mut split = vec![false; sample.len()];
        for (k, (item, decl)) in sample.iter().zip(&self.inputs).enumerate() {
            if let Item::Npy { path, .. } = item {
                let h = npy_header(path)?;
                let batch_one = decl.dims.first() == Some(&DeclDim::Known(1));
                if batch_one && h.shape.len() == decl.dims.len() && h.shape[0] > 1 {
                    if rows > 1 && rows != h.shape[0] {
                        return Err(PareError::Usage(format!(
                            "{}: holds {} samples but another input's file holds {rows}",
                            path.display(),
                            h.shape[0]
                        )));
                    }
                    rows = h.shape[0];
                    split[k] = true;
                    notes.push(format!(
                        "{} holds a batch of {rows}; read as {rows} samples for batch-1 input '{}'",
                        path.display(),
                        decl.name
                    ));
                }
            }
        }
        Ok((0..rows)
            .map(|r| {
                sample
                    .iter()
                    .zip(&split)
                    .map(|(item, &s)| match item {
                        Item::Npy { path, .. } if s => Item::Npy {
                            path: path.clone(),
                            index: r,
                            split: true,
                        },
                        other => other.clone(),
                    })
                    .collect()
            })
            .collect())
    }

    /// The shape an item will have once loaded (headers only; nothing kept).
    fn item_shape(
        &self,
        item: &Item,
        decl: &InputDecl,
        notes: &mut Vec<String>,
    ) -> Result<Vec<usize>> {
        match item {
            Item::Random { .. } => {
                let mut shape = Vec::new();
                for (k, d) in decl.dims.iter().enumerate() {
                    shape.push(match d {
                        DeclDim::Known(v) => *v,
                        DeclDim::Sym(s) if k == 0 => {
                            notes.push(format!("input '{}': dynamic batch '{s}' set to 1 for random calibration", decl.name));
                            1
                        }
                        DeclDim::Sym(s) => {
                            return Err(PareError::Usage(format!(
                                "input '{}' has dynamic dim {k} ('{s}'): random calibration needs a size; give --input-shape {}:{}",
                                decl.name,
                                decl.name,
                                decl.dims
                                    .iter()
                                    .enumerate()
                                    .map(|(j, d)| match d {
                                        DeclDim::Known(v) => v.to_string(),
                                        DeclDim::Sym(_) if j == 0 => "1".into(),
                                        DeclDim::Sym(_) => "N".into(),
                                    })
                                    .collect::<Vec<_>>()
                                    .join("x")
                            )));
                        }
                    });
                }
                Ok(shape)
            }
            Item::Npy { path, split, .. } => {
                let h = npy_header(path)?;
                let mut shape = h.shape.clone();
                if *split {
                    shape[0] = 1;
                } else if shape.len() + 1 == decl.dims.len()
                    && decl.dims.first() == Some(&DeclDim::Known(1))
                {
                    notes.push(format!("{}: no batch dim; read as batch 1", path.display()));
                    shape.insert(0, 1);
                }
                Ok(shape)
            }
            Item::Pb(path) => {
                let t = read_pb(path)?;
                let mut shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
                if shape.len() + 1 == decl.dims.len()
                    && decl.dims.first() == Some(&DeclDim::Known(1))
                {
                    shape.insert(0, 1);
                }
                Ok(shape)
            }
            Item::Image(path) => {
                let (w, h) = image::ImageReader::open(path)
                    .map_err(|e| io_err(path, e))?
                    .with_guessed_format()
                    .map_err(|e| io_err(path, e))?
                    .into_dimensions()
                    .map_err(|e| {
                        PareError::Usage(format!("{}: cannot read image: {e}", path.display()))
                    })?;
                let layout = image_layout(decl, self.preprocess.layout);
                let (ci, hi, wi) = match layout {
                    Layout::Nhwc => (3, 1, 2),
                    _ => (1, 2, 3),
                };
                if decl.dims.len() != 4 {
                    return Err(PareError::Usage(format!(
                        "{}: an image gives a 4-D tensor, but input '{}' is {}",
                        path.display(),
                        decl.name,
                        decl.describe()
                    )));
                }
                let channels = match &decl.dims[ci] {
                    DeclDim::Known(c) => *c,
                    DeclDim::Sym(_) => 3,
                };
                let pick = |d: &DeclDim, native: usize| match d {
                    DeclDim::Known(v) => *v,
                    DeclDim::Sym(_) => native,
                };
                let (th, tw) = self.preprocess.resize.unwrap_or((
                    pick(&decl.dims[hi], h as usize),
                    pick(&decl.dims[wi], w as usize),
                ));
                let mut shape = vec![1usize; 4];
                shape[ci] = channels;
                shape[hi] = th;
                shape[wi] = tw;
                Ok(shape)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Label of sample `k` for messages.
    pub fn label(&self, k: usize) -> String {
        self.items[k]
            .iter()
            .map(Item::label)
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// Loads sample `k` (model input order).
    pub fn load(&self, k: usize) -> Result<Sample<'_>> {
        let n = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_live.fetch_max(n, Ordering::SeqCst);
        match self.load_tensors(k) {
            Ok(tensors) => Ok(Sample {
                index: k,
                tensors,
                set: self,
            }),
            Err(e) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    fn load_tensors(&self, k: usize) -> Result<Vec<HostTensor>> {
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for (j, (item, decl)) in self.items[k].iter().zip(&self.inputs).enumerate() {
            let shape = &self.shapes[k][j];
            let t = match item {
                Item::Random { seed } => {
                    let mut rng = Rng::new(seed.wrapping_add(j as u64 * 0x9E37));
                    HostTensor::random(decl.dtype, shape, &mut rng)?
                }
                Item::Npy { path, index, split } => {
                    read_npy(path, if *split { Some(*index) } else { None }, shape)?
                }
                Item::Pb(path) => {
                    let t = read_pb(path)?;
                    pb_to_host(&t, path, shape)?
                }
                Item::Image(path) => load_image(path, decl, shape, &self.preprocess)?,
            };
            tensors.push(convert_dtype(t, decl.dtype, &item.label(), &decl.name)?);
        }
        Ok(tensors)
    }

    /// Most samples ever loaded at the same time.
    pub fn peak_live(&self) -> usize {
        self.peak_live.load(Ordering::SeqCst)
    }

    /// Distinct input shapes and their sample counts.
    pub fn shape_counts(&self) -> Vec<ShapeCount> {
        let mut counts: Vec<ShapeCount> = Vec::new();
        for s in &self.shapes {
            let map: BTreeMap<String, Vec<usize>> = self
                .inputs
                .iter()
                .zip(s)
                .map(|(i, sh)| (i.name.clone(), sh.clone()))
                .collect();
            match counts.iter_mut().find(|c| c.shapes == map) {
                Some(c) => c.samples += 1,
                None => counts.push(ShapeCount {
                    shapes: map,
                    samples: 1,
                }),
            }
        }
        counts
    }

    /// What a deployment needs to know about dynamic inputs (seed Q11).
    pub fn dynamic_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (j, decl) in self.inputs.iter().enumerate() {
            let dynamic: Vec<String> = decl
                .dims
                .iter()
                .filter_map(|d| match d {
                    DeclDim::Sym(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            if dynamic.is_empty() {
                continue;
            }
            let shapes: Vec<&Vec<usize>> = self.shapes.iter().map(|s| &s[j]).collect();
            let rank = decl.dims.len();
            let min: Vec<usize> = (0..rank)
                .map(|d| shapes.iter().map(|s| s[d]).min().unwrap_or(0))
                .collect();
            let max: Vec<usize> = (0..rank)
                .map(|d| shapes.iter().map(|s| s[d]).max().unwrap_or(0))
                .collect();
            let mut distinct: Vec<&Vec<usize>> = shapes.clone();
            distinct.sort();
            distinct.dedup();
            let fmt = |s: &[usize]| {
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            };
            // The most common shape is the natural "opt" point.
            let opt = distinct
                .iter()
                .max_by_key(|s| shapes.iter().filter(|x| x == s).count())
                .map(|s| fmt(s))
                .unwrap_or_default();
            notes.push(format!(
                "input '{}' has dynamic dims ({}); calibrated over {} shape{} from {} to {}. A static INT8 TensorRT engine serves one shape only: build with an optimization profile, e.g. trtexec --minShapes={}:{} --optShapes={}:{} --maxShapes={}:{}",
                decl.name,
                dynamic.join(", "),
                distinct.len(),
                if distinct.len() == 1 { "" } else { "s" },
                fmt(&min),
                fmt(&max),
                decl.name,
                fmt(&min),
                decl.name,
                opt,
                decl.name,
                fmt(&max)
            ));
        }
        notes
    }
}

/// Pairs per-input file lists by sorted order.
fn pair_up(lists: Vec<(String, Vec<PathBuf>)>) -> Result<Vec<Vec<Item>>> {
    let n = lists.first().map_or(0, |l| l.1.len());
    if let Some((name, l)) = lists.iter().find(|l| l.1.len() != n) {
        return Err(PareError::Usage(format!(
            "calibration inputs do not pair up: '{}' has {} files, '{}' has {}",
            lists[0].0,
            n,
            name,
            l.len()
        )));
    }
    Ok((0..n)
        .map(|k| lists.iter().map(|(_, l)| item_for(&l[k])).collect())
        .collect())
}

fn image_layout(decl: &InputDecl, requested: Layout) -> Layout {
    match requested {
        Layout::Auto => {
            let last = decl.dims.last();
            let second = decl.dims.get(1);
            let chan = |d: Option<&DeclDim>| matches!(d, Some(DeclDim::Known(1 | 3)));
            if decl.dims.len() == 4 && chan(last) && !chan(second) {
                Layout::Nhwc
            } else {
                Layout::Nchw
            }
        }
        l => l,
    }
}

/// Checks one sample's shapes against the declared inputs: rank, fixed dims, and symbolic
/// dims consistent across inputs (two inputs both `height` must agree).
fn check_sample(inputs: &[InputDecl], items: &[Item], shapes: &[Vec<usize>]) -> Result<()> {
    let mut syms: HashMap<&str, (usize, &str)> = HashMap::new();
    for ((decl, item), shape) in inputs.iter().zip(items).zip(shapes) {
        let given = format!(
            "[{}]",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mismatch = |what: String| {
            PareError::Usage(format!(
                "calibration sample {} does not fit input '{}': the model expects {}, the sample is {} ({what})",
                item.label(),
                decl.name,
                decl.describe(),
                given
            ))
        };
        if shape.len() != decl.dims.len() {
            return Err(mismatch(format!(
                "rank {} instead of {}",
                shape.len(),
                decl.dims.len()
            )));
        }
        let mut diffs = Vec::new();
        for (k, (d, &g)) in decl.dims.iter().zip(shape).enumerate() {
            match d {
                DeclDim::Known(v) if *v != g => diffs.push(format!("dim {k} is {g}, not {v}")),
                DeclDim::Sym(s) => {
                    if let Some((prev, other)) = syms.get(s.as_str()) {
                        if *prev != g {
                            diffs.push(format!(
                                "dim {k} ('{s}') is {g}, but input '{other}' has {s} = {prev}"
                            ));
                        }
                    } else {
                        syms.insert(s, (g, &decl.name));
                    }
                }
                _ => {}
            }
        }
        if !diffs.is_empty() {
            return Err(mismatch(diffs.join(", ")));
        }
    }
    Ok(())
}

/// Numeric conversion to the input's type: float64/float16 data may feed a float32 input;
/// anything else must match exactly.
fn convert_dtype(t: HostTensor, want: DataType, label: &str, input: &str) -> Result<HostTensor> {
    if t.dtype() == want {
        return Ok(t);
    }
    match (&t.data, want) {
        (HostData::F64(v), DataType::FLOAT) => Ok(HostTensor::f32(
            t.shape.clone(),
            v.iter().map(|&x| x as f32).collect(),
        )),
        _ => Err(PareError::Usage(format!(
            "calibration sample {label} does not fit input '{input}': the model expects {want}, the sample is {}",
            t.dtype()
        ))),
    }
}

// ---- .npy ----

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    pub descr: String,
    pub shape: Vec<usize>,
    pub data_offset: u64,
}

fn npy_err(p: &Path, m: impl std::fmt::Display) -> PareError {
    PareError::Usage(format!("{}: not a readable .npy file: {m}", p.display()))
}

/// Reads a `.npy` header (versions 1–3).
pub fn npy_header(path: &Path) -> Result<NpyHeader> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut pre = [0u8; 10];
    f.read_exact(&mut pre).map_err(|e| npy_err(path, e))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(npy_err(path, "missing the \\x93NUMPY magic"));
    }
    let (len, start) = if pre[6] == 1 {
        (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10u64)
    } else {
        let mut b = [0u8; 2];
        f.read_exact(&mut b).map_err(|e| npy_err(path, e))?;
        (
            u32::from_le_bytes([pre[8], pre[9], b[0], b[1]]) as usize,
            12u64,
        )
    };
    if len > 1 << 20 {
        return Err(npy_err(path, "header too long"));
    }
    let mut h = vec![0u8; len];
    f.read_exact(&mut h).map_err(|e| npy_err(path, e))?;
    let h = String::from_utf8_lossy(&h);
    let field = |key: &str| -> Option<String> {
        let i = h.find(&format!("'{key}'"))?;
        let rest = &h[i + key.len() + 2..];
        let rest = rest[rest.find(':')? + 1..].trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr")
        .and_then(|r| {
            let r = r.strip_prefix('\'')?;
            Some(r[..r.find('\'')?].to_string())
        })
        .ok_or_else(|| npy_err(path, "no 'descr' in header"))?;
    let fortran = field("fortran_order").is_some_and(|r| r.starts_with("True"));
    if fortran {
        return Err(npy_err(
            path,
            "Fortran-ordered array; save it with np.ascontiguousarray",
        ));
    }
    let shape_txt = field("shape")
        .and_then(|r| {
            let r = r.strip_prefix('(')?;
            Some(r[..r.find(')')?].to_string())
        })
        .ok_or_else(|| npy_err(path, "no 'shape' in header"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| npy_err(path, format!("bad shape '{shape_txt}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(NpyHeader {
        descr,
        shape,
        data_offset: start + len as u64,
    })
}

/// Reads a `.npy` (or row `index` of it) as a tensor of `shape`.
pub fn read_npy(path: &Path, index: Option<usize>, shape: &[usize]) -> Result<HostTensor> {
    let h = npy_header(path)?;
    let (kind, width) = match h.descr.as_str() {
        "<f4" | "=f4" => ("f32", 4),
        "<f8" | "=f8" => ("f64", 8),
        "<f2" | "=f2" => ("f16", 2),
        "<i8" | "=i8" => ("i64", 8),
        "<i4" | "=i4" => ("i32", 4),
        "|i1" => ("i8", 1),
        "|u1" => ("u8", 1),
        "|b1" => ("bool", 1),
        d => {
            return Err(npy_err(
                path,
                format!("unsupported dtype '{d}' (use float32)"),
            ));
        }
    };
    let total: usize = h.shape.iter().product();
    let (offset, count) = match index {
        Some(i) => {
            let row = total / h.shape.first().copied().unwrap_or(1).max(1);
            (h.data_offset + (i * row * width) as u64, row)
        }
        None => (h.data_offset, total),
    };
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err(path, e))?;
    let mut buf = vec![0u8; count * width];
    f.read_exact(&mut buf).map_err(|_| {
        npy_err(
            path,
            format!(
                "file is shorter than its header says ({} values of {})",
                count, h.descr
            ),
        )
    })?;
    let shape = shape.to_vec();
    let data = match kind {
        "f32" => HostData::F32(
            buf.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "f64" => HostData::F64(
            buf.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "f16" => HostData::F32(
            buf.chunks_exact(2)
                .map(|c| crate::model::tensor::f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        "i64" => HostData::I64(
            buf.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "i32" => HostData::I32(
            buf.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "i8" => HostData::I8(buf.iter().map(|&b| b as i8).collect()),
        "u8" => HostData::U8(buf),
        _ => HostData::Bool(buf.iter().map(|&b| b != 0).collect()),
    };
    Ok(HostTensor { shape, data })
}

/// Writes a float32 `.npy` (tests, the comparison script's counterpart).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).map_err(|source| PareError::Write {
        path: path.to_path_buf(),
        source,
    })
}

// ---- .pb ----

fn read_pb(path: &Path) -> Result<TensorProto> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    <TensorProto as prost::Message>::decode(&bytes[..])
        .map_err(|e| PareError::Usage(format!("{}: not an ONNX TensorProto: {e}", path.display())))
}

fn pb_to_host(t: &TensorProto, path: &Path, shape: &[usize]) -> Result<HostTensor> {
    let dt = DataType(t.data_type());
    let shape = shape.to_vec();
    let data = match dt {
        DataType::FLOAT | DataType::FLOAT16 | DataType::BFLOAT16 => {
            HostData::F32(crate::model::tensor::to_f32(t)?)
        }
        DataType::DOUBLE => HostData::F64(
            crate::model::tensor::to_f32(t)?
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        DataType::INT64 => HostData::I64(crate::model::tensor::to_i64(t)?),
        DataType::INT32 => HostData::I32(
            crate::model::tensor::to_i64(t)?
                .into_iter()
                .map(|v| v as i32)
                .collect(),
        ),
        DataType::INT8 => HostData::I8(
            crate::model::tensor::to_i64(t)?
                .into_iter()
                .map(|v| v as i8)
                .collect(),
        ),
        DataType::UINT8 => HostData::U8(
            crate::model::tensor::to_i64(t)?
                .into_iter()
                .map(|v| v as u8)
                .collect(),
        ),
        DataType::BOOL => HostData::Bool(
            crate::model::tensor::to_i64(t)?
                .into_iter()
                .map(|v| v != 0)
                .collect(),
        ),
        other => {
            return Err(PareError::Usage(format!(
                "{}: tensors of type {other} are not supported",
                path.display()
            )));
        }
    };
    let t = HostTensor { shape, data };
    if t.len() != t.shape.iter().product::<usize>() {
        return Err(PareError::Usage(format!(
            "{}: holds {} values for dims {:?}",
            path.display(),
            t.len(),
            t.shape
        )));
    }
    Ok(t)
}

// ---- images ----

fn load_image(
    path: &Path,
    decl: &InputDecl,
    shape: &[usize],
    pp: &Preprocess,
) -> Result<HostTensor> {
    let img = image::ImageReader::open(path)
        .map_err(|e| io_err(path, e))?
        .with_guessed_format()
        .map_err(|e| io_err(path, e))?
        .decode()
        .map_err(|e| PareError::Usage(format!("{}: cannot decode image: {e}", path.display())))?;
    let layout = image_layout(decl, pp.layout);
    let (c, h, w) = match layout {
        Layout::Nhwc => (shape[3], shape[1], shape[2]),
        _ => (shape[1], shape[2], shape[3]),
    };
    if c != 1 && c != 3 {
        return Err(PareError::Usage(format!(
            "{}: input '{}' wants {c} channels; images give 1 (gray) or 3 (RGB)",
            path.display(),
            decl.name
        )));
    }
    let filter = image::imageops::FilterType::Triangle;
    let rgb = img.to_rgb8();
    let rgb = if (rgb.width() as usize, rgb.height() as usize) != (w, h) {
        image::imageops::resize(&rgb, w as u32, h as u32, filter)
    } else {
        rgb
    };
    let mean = |k: usize| pp.mean.get(k).or(pp.mean.first()).copied().unwrap_or(0.0);
    let std = |k: usize| {
        pp.std
            .get(k)
            .or(pp.std.first())
            .copied()
            .unwrap_or(1.0)
            .max(1e-12)
    };
    let mut data = vec![0f32; c * h * w];
    for (x, y, px) in rgb.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for k in 0..c {
            let v = if c == 1 {
                // ITU-R 601 luma, as image's to_luma does.
                0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32
            } else {
                px[if pp.bgr { 2 - k } else { k }] as f32
            };
            let v = (v * pp.scale - mean(k)) / std(k);
            let idx = match layout {
                Layout::Nhwc => (y * w + x) * c + k,
                _ => (k * h + y) * w + x,
            };
            data[idx] = v;
        }
    }
    Ok(HostTensor::f32(shape.to_vec(), data))
}
