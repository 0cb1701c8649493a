//! Running models. Everything in pare that executes a model (validation after pruning, fix
//! verification, calibration and its diagnostics, extraction's boundary data and reduce) goes
//! through one [`Runner`], so the analyses never see which engine ran it beyond the
//! [`EngineKind`] they report. Two engines: tract (embedded, always there) and onnxruntime
//! (cargo feature `ort`, on by default, loaded at run time; see [`ort`]). `--engine auto`
//! picks onnxruntime when its library loads and tract otherwise ([`EngineChoice::resolve`]).

use crate::error::{PareError, Result};
use crate::model::proto::{ModelProto, ValueInfoProto};
use crate::model::tensor::DataType;
use crate::rng::Rng;

pub mod pool;
mod runner;
pub mod tract;
pub use runner::{Runner, RunnerOptions};

/// onnxruntime loaded at run time (cargo feature `ort`).
#[cfg(feature = "ort")]
pub mod ort;

/// A tensor in host memory, row-major: the plain data that crosses the engine boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

/// Element storage of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// The most bytes one random input may take ([`InputSpec::random`], [`HostTensor::random`]).
///
/// Why a fixed bound and not one relative to the model's size: a fully convolutional model of
/// 100 KB legitimately takes a 4K image (1x3x2160x3840 f32 = 100 MB; 1x3x4096x4096 = 201 MB),
/// so the file says nothing about a sensible input size. What the bound must catch is a
/// declaration no one means for random data: a corrupt 2^40 dim, or a batch of 65536 (805 MB
/// of random values take half a minute to draw, and then the model runs on all of them). Such
/// inputs are refused before allocating, naming the input and pointing at `--input-shape`
/// (or real data, which this bound does not limit). 256 MiB keeps every single-image size up
/// to 4K running on random data.
pub const MAX_RANDOM_BYTES: usize = 256 << 20;

/// Bytes per element of the types random inputs are made of (`None`: not made at all).
fn random_elem_bytes(dtype: DataType) -> Option<usize> {
    Some(match dtype {
        DataType::DOUBLE | DataType::INT64 => 8,
        DataType::FLOAT | DataType::INT32 => 4,
        DataType::INT8 | DataType::UINT8 | DataType::BOOL => 1,
        _ => return None,
    })
}

/// Bytes a random tensor of `shape` and `dtype` takes; `None` on overflow or a type random
/// data is not made of.
pub fn random_bytes(dtype: DataType, shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(random_elem_bytes(dtype)?, |a, &d| a.checked_mul(d))
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: HostData::F32(data),
        }
    }

    pub fn dtype(&self) -> DataType {
        match &self.data {
            HostData::F32(_) => DataType::FLOAT,
            HostData::F64(_) => DataType::DOUBLE,
            HostData::I64(_) => DataType::INT64,
            HostData::I32(_) => DataType::INT32,
            HostData::I8(_) => DataType::INT8,
            HostData::U8(_) => DataType::UINT8,
            HostData::Bool(_) => DataType::BOOL,
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            HostData::F32(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::I8(v) => v.len(),
            HostData::U8(v) => v.len(),
            HostData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values as f64 (for comparisons and statistics).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::F64(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Seeded random tensor of a given type: standard normal floats, small non-negative ints.
    pub fn random(dtype: DataType, shape: &[usize], rng: &mut Rng) -> Result<Self> {
        // A declared shape is not data: refuse absurd ones (a corrupt 2^40 dim) before
        // allocating rather than abort on out-of-memory.
        if random_bytes(dtype, shape).is_none_or(|b| b > MAX_RANDOM_BYTES) {
            return Err(PareError::Runtime(format!(
                "cannot make a random input of shape {shape:?}: over {} MiB",
                MAX_RANDOM_BYTES >> 20
            )));
        }
        let n: usize = shape.iter().product();
        let data = match dtype {
            DataType::FLOAT => HostData::F32((0..n).map(|_| rng.normal()).collect()),
            DataType::DOUBLE => HostData::F64((0..n).map(|_| rng.normal() as f64).collect()),
            DataType::INT64 => HostData::I64((0..n).map(|_| rng.below(4) as i64).collect()),
            DataType::INT32 => HostData::I32((0..n).map(|_| rng.below(4) as i32).collect()),
            DataType::INT8 => HostData::I8((0..n).map(|_| rng.below(4) as i8).collect()),
            DataType::UINT8 => HostData::U8((0..n).map(|_| rng.below(4) as u8).collect()),
            DataType::BOOL => HostData::Bool((0..n).map(|_| rng.below(2) == 1).collect()),
            other => {
                return Err(PareError::Runtime(format!(
                    "cannot make random inputs of type {other}"
                )));
            }
        };
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }
}

/// Largest absolute elementwise difference; `None` when shapes differ.
pub fn max_abs_diff(a: &HostTensor, b: &HostTensor) -> Option<f64> {
    if a.shape != b.shape {
        return None;
    }
    let (x, y) = (a.to_f64(), b.to_f64());
    Some(
        x.iter()
            .zip(&y)
            .map(|(p, q)| {
                if p.is_nan() && q.is_nan() {
                    0.0
                } else {
                    (p - q).abs()
                }
            })
            .fold(
                0.0,
                |m: f64, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
            ),
    )
}

/// Signal-to-quantization-noise ratio of `got` against `reference`, in dB.
pub fn sqnr_db(reference: &[f64], got: &[f64]) -> f64 {
    let signal: f64 = reference.iter().map(|v| v * v).sum();
    let noise: f64 = reference
        .iter()
        .zip(got)
        .map(|(r, g)| (r - g) * (r - g))
        .sum();
    10.0 * (signal / noise.max(1e-30)).log10()
}

/// The concrete input signature a [`Runner`] is prepared for.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<usize>,
}

impl InputSpec {
    /// A seeded random tensor for this input; a shape over [`MAX_RANDOM_BYTES`] is refused
    /// naming the input, its shape and the way to give a realistic one.
    pub fn random(&self, rng: &mut Rng) -> Result<HostTensor> {
        let bytes = random_bytes(self.dtype, &self.shape);
        if random_elem_bytes(self.dtype).is_some() && bytes.is_none_or(|b| b > MAX_RANDOM_BYTES) {
            let dims: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
            return Err(PareError::BadSample {
                origin: format!("input '{}'", self.name),
                message: format!(
                    "declared shape {} ({}) would take {} of random data, over pare's bound of \
                     {} MiB per input; give a realistic size with --input-shape {}:DIMS",
                    dims.join("x"),
                    self.dtype,
                    bytes.map_or("over 2^64 bytes".into(), |b| format!("{} MiB", b >> 20)),
                    MAX_RANDOM_BYTES >> 20,
                    self.name
                ),
            });
        }
        HostTensor::random(self.dtype, &self.shape, rng)
    }
}

/// Returns a copy of `model` whose graph outputs are `outputs` (any tensor names, e.g.
/// intermediate activations), so a [`Runner`] computes them.
pub fn with_outputs(model: &ModelProto, outputs: &[String]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        let known: std::collections::HashMap<String, ValueInfoProto> = g
            .output
            .iter()
            .chain(g.value_info.iter())
            .chain(g.input.iter())
            .map(|v| (v.name().to_string(), v.clone()))
            .collect();
        g.output = outputs
            .iter()
            .map(|o| {
                known.get(o).cloned().unwrap_or_else(|| ValueInfoProto {
                    name: Some(o.clone()),
                    ..Default::default()
                })
            })
            .collect();
    }
    m
}

/// The engine that ran a model, as reports name it (JSON `engine`: `"tract"` or
/// `"onnxruntime"`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum EngineKind {
    /// tract, embedded in pare: runs wherever pare runs.
    #[default]
    #[serde(rename = "tract")]
    Tract,
    /// onnxruntime's shared library, loaded at run time.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::OnnxRuntime => "onnxruntime",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for (`--engine`, or `PARE_ENGINE`); [`EngineChoice::resolve`] turns
/// it into the [`EngineKind`] that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// onnxruntime when this build has it and its library loads, else tract.
    #[default]
    Auto,
    Tract,
    /// onnxruntime; an error when it is not available.
    Ort,
}

impl EngineChoice {
    /// `PARE_ENGINE=tract|ort|onnxruntime|auto`, else `Auto`.
    pub fn from_env() -> Self {
        Self::from_env_or(EngineChoice::Auto)
    }

    /// `PARE_ENGINE` when set to an engine, else `default`.
    pub fn from_env_or(default: Self) -> Self {
        match std::env::var("PARE_ENGINE").as_deref() {
            Ok("tract") => EngineChoice::Tract,
            Ok("ort") | Ok("onnxruntime") => EngineChoice::Ort,
            Ok("auto") => EngineChoice::Auto,
            _ => default,
        }
    }

    /// The engine to use, or why the requested one cannot be.
    pub fn resolve(self) -> Result<EngineKind> {
        match self {
            EngineChoice::Tract => Ok(EngineKind::Tract),
            EngineChoice::Auto => Ok(if ort_available().is_ok() {
                EngineKind::OnnxRuntime
            } else {
                EngineKind::Tract
            }),
            EngineChoice::Ort => match ort_available() {
                Ok(()) => Ok(EngineKind::OnnxRuntime),
                Err(why) => Err(PareError::Usage(format!("--engine ort: {why}"))),
            },
        }
    }
}

/// Whether onnxruntime can run here (`Err`: why not).
pub fn ort_available() -> std::result::Result<(), String> {
    #[cfg(feature = "ort")]
    {
        ort::available()
    }
    #[cfg(not(feature = "ort"))]
    {
        Err("this pare was built without the `ort` feature (cargo build --release)".into())
    }
}
