//! [`SampleSet`]: samples found by [`super::source`], every one checked against the model's
//! inputs *before anything runs* (seed Q8: an input shape that differed between engine build
//! and inference surfaced as an opaque `cuMemcpyHtoDAsync failed`), then loaded one at a time
//! when asked for, so memory never holds the data set.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::codec::{cast_host, read_pb, tensor_to_host};
use super::image::{Preprocess, image_shape, load_image};
use super::npy::{npy_shape, read_npy_file};
use super::source::{DataSource, find_samples};
use super::spec::{DeclDim, DynamicDims, InputDecl, random_inputs, random_shape};
use super::{Item, dims_text};
use crate::error::{PareError, Result};
use crate::runtime::{HostTensor, InputSpec};

/// Sample data: samples checked against the model's inputs, loaded on demand.
#[derive(Debug)]
pub struct SampleSet {
    pub inputs: Vec<InputDecl>,
    /// Per sample, one item per input (model input order).
    pub items: Vec<Vec<Item>>,
    /// Per sample, the concrete shape of each input.
    pub shapes: Vec<Vec<Vec<usize>>>,
    pub preprocess: Preprocess,
    pub source: String,
    /// Things worth telling the user (added batch dims, split batches, conversions).
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

/// A batch file whose first axis holds several samples for a batch-1 input.
fn batch_rows(item: &Item, decl: &InputDecl) -> Result<Option<usize>> {
    let Item::Npy { path, .. } = item else {
        return Ok(None);
    };
    let shape = npy_shape(path)?;
    let batch_one = decl.dims.first() == Some(&DeclDim::Known(1));
    Ok((batch_one && shape.len() == decl.dims.len() && shape[0] > 1).then_some(shape[0]))
}

impl SampleSet {
    /// Finds the samples of `source` for `inputs` (at most `limit`) and checks every one
    /// against the declared inputs. Nothing is run and no sample is kept in memory. Random
    /// data needs every non-batch dim known (calibration statistics at a made-up size would
    /// mislead); [`SampleSet::open_with`] can guess them instead.
    pub fn open(
        inputs: Vec<InputDecl>,
        source: &DataSource,
        limit: usize,
        preprocess: Preprocess,
    ) -> Result<Self> {
        Self::open_with(inputs, source, limit, preprocess, DynamicDims::Require)
    }

    /// [`SampleSet::open`] with a choice of how random data sizes dynamic dims.
    pub fn open_with(
        inputs: Vec<InputDecl>,
        source: &DataSource,
        limit: usize,
        preprocess: Preprocess,
        dynamic: DynamicDims,
    ) -> Result<Self> {
        let limit = limit.max(1);
        let items = find_samples(source, &inputs, limit)?;
        if items.is_empty() {
            return Err(PareError::Usage(format!(
                "--data {}: no samples found (.png, .jpg, .npy or .pb files)",
                source.label()
            )));
        }
        let mut set = SampleSet {
            inputs,
            items: Vec::new(),
            shapes: Vec::new(),
            preprocess,
            source: source.label(),
            notes: Vec::new(),
            live: AtomicUsize::new(0),
            peak_live: AtomicUsize::new(0),
        };
        let mut notes = Vec::new();
        let mut expanded: Vec<Vec<Item>> = Vec::new();
        for sample in items {
            expanded.extend(set.expand(&sample, &mut notes)?);
            if expanded.len() >= limit {
                expanded.truncate(limit);
                break;
            }
        }
        for sample in expanded {
            let shapes = sample
                .iter()
                .zip(&set.inputs)
                .map(|(item, decl)| set.item_shape(item, decl, dynamic, &mut notes))
                .collect::<Result<Vec<_>>>()?;
            check_sample(&set.inputs, &sample, &shapes)?;
            set.items.push(sample);
            set.shapes.push(shapes);
        }
        notes.dedup();
        set.notes = notes;
        Ok(set)
    }

    /// A sample whose `.npy` holds a batch for a batch-1 input becomes one sample per row.
    fn expand(&self, sample: &[Item], notes: &mut Vec<String>) -> Result<Vec<Vec<Item>>> {
        let mut rows = 1usize;
        let mut split = vec![false; sample.len()];
        for (k, (item, decl)) in sample.iter().zip(&self.inputs).enumerate() {
            let Some(n) = batch_rows(item, decl)? else {
                continue;
            };
            if rows > 1 && rows != n {
                return Err(PareError::Usage(format!(
                    "{}: holds {n} samples but another input's file holds {rows}",
                    item.label()
                )));
            }
            rows = n;
            split[k] = true;
            notes.push(format!(
                "{} holds a batch of {rows}; read as {rows} samples for batch-1 input '{}'",
                item.label(),
                decl.name
            ));
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
        dynamic: DynamicDims,
        notes: &mut Vec<String>,
    ) -> Result<Vec<usize>> {
        let mut shape = match item {
            Item::Random { .. } => return random_shape(decl, dynamic, notes),
            Item::Image(path) => return image_shape(path, decl, &self.preprocess),
            Item::Npy {
                split: true, path, ..
            } => {
                let mut s = npy_shape(path)?;
                s[0] = 1;
                return Ok(s);
            }
            Item::Npy { path, .. } => npy_shape(path)?,
            Item::Pb(path) => read_pb(path)?
                .dims
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect(),
        };
        if shape.len() + 1 == decl.dims.len() && decl.dims.first() == Some(&DeclDim::Known(1)) {
            notes.push(format!("{}: no batch dim; read as batch 1", item.label()));
            shape.insert(0, 1);
        }
        Ok(shape)
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

    /// Loads sample `k` and converts each tensor to its input's type; notes say what was
    /// converted.
    pub fn load_converted(&self, k: usize, notes: &mut Vec<String>) -> Result<Vec<HostTensor>> {
        let items = &self.items[k];
        if let Some(Item::Random { seed }) = items.first() {
            let specs: Vec<InputSpec> = self
                .inputs
                .iter()
                .zip(&self.shapes[k])
                .map(|(d, s)| InputSpec {
                    name: d.name.clone(),
                    dtype: d.dtype,
                    shape: s.clone(),
                })
                .collect();
            return random_inputs(&specs, *seed);
        }
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for (j, (item, decl)) in items.iter().zip(&self.inputs).enumerate() {
            let shape = &self.shapes[k][j];
            let t = match item {
                Item::Npy { path, index, split } => {
                    let mut t = read_npy_file(path, split.then_some(*index))?;
                    t.shape = shape.clone();
                    t
                }
                Item::Pb(path) => {
                    let mut t = tensor_to_host(&read_pb(path)?)
                        .map_err(|e| PareError::Usage(format!("{}: {e}", path.display())))?;
                    t.shape = shape.clone();
                    t
                }
                Item::Image(path) => load_image(path, decl, shape, &self.preprocess)?,
                Item::Random { .. } => unreachable_random(item)?,
            };
            tensors.push(convert(t, decl, &item.label(), notes)?);
        }
        Ok(tensors)
    }

    fn load_tensors(&self, k: usize) -> Result<Vec<HostTensor>> {
        self.load_converted(k, &mut Vec::new())
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
            let dynamic: Vec<&str> = decl
                .dims
                .iter()
                .filter_map(|d| match d {
                    DeclDim::Sym(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            if dynamic.is_empty() {
                continue;
            }
            let shapes: Vec<&Vec<usize>> = self.shapes.iter().map(|s| &s[j]).collect();
            let column = |d: usize| shapes.iter().map(move |s| s[d]);
            let min: Vec<usize> = (0..decl.dims.len())
                .map(|d| column(d).min().unwrap_or(0))
                .collect();
            let max: Vec<usize> = (0..decl.dims.len())
                .map(|d| column(d).max().unwrap_or(0))
                .collect();
            let mut distinct: Vec<&Vec<usize>> = shapes.clone();
            distinct.sort();
            distinct.dedup();
            let fmt = |s: &[usize]| dims_text(s, "x");
            // The most common shape is the natural "opt" point.
            let opt = distinct
                .iter()
                .max_by_key(|s| shapes.iter().filter(|x| x == s).count())
                .map(|s| fmt(s))
                .unwrap_or_default();
            let n = &decl.name;
            notes.push(format!(
                "input '{n}' has dynamic dims ({}); calibrated over {} shape{} from {} to {}. A static INT8 TensorRT engine serves one shape only: build with an optimization profile, e.g. trtexec --minShapes={n}:{} --optShapes={n}:{opt} --maxShapes={n}:{}",
                dynamic.join(", "),
                distinct.len(),
                if distinct.len() == 1 { "" } else { "s" },
                fmt(&min),
                fmt(&max),
                fmt(&min),
                fmt(&max)
            ));
        }
        notes
    }
}

/// Random items are generated per sample, never per input.
fn unreachable_random(item: &Item) -> Result<HostTensor> {
    Err(PareError::Usage(format!(
        "{}: random data mixed with files in one sample",
        item.label()
    )))
}

/// Checks one sample's shapes against the declared inputs: rank, fixed dims, and symbolic
/// dims consistent across inputs (two inputs both `height` must agree).
fn check_sample(inputs: &[InputDecl], items: &[Item], shapes: &[Vec<usize>]) -> Result<()> {
    let mut syms: HashMap<&str, (usize, &str)> = HashMap::new();
    for ((decl, item), shape) in inputs.iter().zip(items).zip(shapes) {
        let mismatch = |what: String| {
            PareError::Usage(format!(
                "sample {} does not fit input '{}': the model declares {}, the sample is [{}] ({what})",
                item.label(),
                decl.name,
                decl.describe(),
                dims_text(shape, ", ")
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
                DeclDim::Sym(s) => match syms.get(s.as_str()) {
                    Some((prev, other)) if *prev != g => diffs.push(format!(
                        "dim {k} ('{s}') is {g}, but input '{other}' has {s} = {prev}"
                    )),
                    Some(_) => {}
                    None => {
                        syms.insert(s, (g, &decl.name));
                    }
                },
                _ => {}
            }
        }
        if !diffs.is_empty() {
            return Err(mismatch(diffs.join(", ")));
        }
    }
    Ok(())
}

/// Converts data to its input's type where no value changes meaning (float↔float,
/// int↔int); anything else is an error naming the sample and the input.
fn convert(
    t: HostTensor,
    decl: &InputDecl,
    label: &str,
    notes: &mut Vec<String>,
) -> Result<HostTensor> {
    let want = decl.dtype;
    if t.dtype() == want {
        return Ok(t);
    }
    match cast_host(&t, want) {
        Some(c) => {
            notes.push(format!(
                "{label}: converted {} to {want} for input '{}'",
                t.dtype(),
                decl.name
            ));
            Ok(c)
        }
        None => Err(PareError::Usage(format!(
            "sample {label} does not fit input '{}': the model expects {want}, the sample is {}",
            decl.name,
            t.dtype()
        ))),
    }
}
