//! Running models. Everything in pare that executes a model (validation after pruning,
//! calibration, boundary data for extraction, fix verification) goes through [`Engine`], so the
//! execution backend can change without touching the analyses. tract is the default and always
//! available.

use std::sync::Arc;

use crate::error::{PareError, Result};
use crate::model::proto::{ModelProto, ValueInfoProto};
use crate::model::tensor::DataType;
use crate::rng::Rng;

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

/// An execution engine prepared for one model and fixed input shapes.
pub trait Engine: Send + Sync {
    /// Which backend ("tract", …), for reports.
    fn backend(&self) -> &'static str;
    /// Names of the tensors `run` returns, in order.
    fn output_names(&self) -> &[String];
    /// Runs the model on inputs given in the model's input order.
    fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>>;
}

/// The concrete input signature an engine is prepared for.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<usize>,
}

/// Returns a copy of `model` whose graph outputs are `outputs` (any tensor names, e.g.
/// intermediate activations), so an engine computes them.
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

#[cfg(feature = "ort")]
pub mod ort;

/// The engine that runs a model where speed matters (calibration). tract is always there;
/// onnxruntime only in builds with the `ort` feature and where its library loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Tract,
    Ort,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Ort => "onnxruntime",
        }
    }
}

/// What the user asked for (`--engine`, or `PARE_ENGINE`).
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
    /// `PARE_ENGINE=tract|ort|auto`, else `Auto`.
    pub fn from_env() -> Self {
        match std::env::var("PARE_ENGINE").as_deref() {
            Ok("tract") => EngineChoice::Tract,
            Ok("ort") | Ok("onnxruntime") => EngineChoice::Ort,
            _ => EngineChoice::Auto,
        }
    }

    /// `PARE_ENGINE` when set, else `default`.
    pub fn from_env_or(default: Self) -> Self {
        match std::env::var("PARE_ENGINE") {
            Ok(_) => Self::from_env(),
            Err(_) => default,
        }
    }

    /// The backend to use, or why the requested one cannot be.
    pub fn resolve(self) -> Result<Backend> {
        match self {
            EngineChoice::Tract => Ok(Backend::Tract),
            EngineChoice::Auto => Ok(if ort_available().is_ok() {
                Backend::Ort
            } else {
                Backend::Tract
            }),
            EngineChoice::Ort => match ort_available() {
                Ok(()) => Ok(Backend::Ort),
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
        Err(
            "this pare was built without the `ort` feature (cargo build --release --features ort)"
                .into(),
        )
    }
}

/// Prepares `model` on `backend` for the given inputs (onnxruntime with all cores; it takes
/// the shapes from the inputs it is given).
pub fn prepare(
    backend: Backend,
    model: &ModelProto,
    inputs: &[InputSpec],
) -> Result<Box<dyn Engine>> {
    match backend {
        Backend::Tract => Ok(Box::new(TractEngine::new(model, inputs)?)),
        #[cfg(feature = "ort")]
        Backend::Ort => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok(Box::new(ort::OrtEngine::new(model, threads)?))
        }
        #[cfg(not(feature = "ort"))]
        Backend::Ort => Err(PareError::Runtime(
            ort_available().err().unwrap_or_default(),
        )),
    }
}

/// tract-backed engine.
pub struct TractEngine {
    plan: Arc<tract_onnx::prelude::TypedRunnableModel>,
    outputs: Vec<String>,
}

impl TractEngine {
    /// Prepares `model` for the given inputs. Errors carry tract's own explanation, which
    /// usually names the node tract could not handle.
    pub fn new(model: &ModelProto, inputs: &[InputSpec]) -> Result<Self> {
        use tract_onnx::prelude::*;
        // Value infos describing intermediate tensors can contradict what tract infers on
        // edited models; outputs keep only their names so tract decides their facts.
        let mut m = model.clone();
        if let Some(g) = m.graph.as_mut() {
            g.value_info.clear();
            for o in &mut g.output {
                o.r#type = None;
            }
        }
        let bytes = crate::model::io::encode_model(&m);
        let outputs: Vec<String> = m
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
            .unwrap_or_default();
        let err = |e: anyhow_like::AnyErr| PareError::Runtime(format!("tract: {}", e.0));
        let mut im = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| err(e.into()))?;
        for (i, spec) in inputs.iter().enumerate() {
            let dt = datum_type(spec.dtype)?;
            im = im
                .with_input_fact(i, InferenceFact::dt_shape(dt, spec.shape.clone()))
                .map_err(|e| err(e.into()))?;
        }
        let plan = im
            .into_optimized()
            .map_err(|e| err(e.into()))?
            .into_runnable()
            .map_err(|e| err(e.into()))?;
        Ok(Self { plan, outputs })
    }
}

mod anyhow_like {
    /// tract errors formatted with their whole context chain.
    pub struct AnyErr(pub String);
    impl From<tract_onnx::prelude::TractError> for AnyErr {
        fn from(e: tract_onnx::prelude::TractError) -> Self {
            AnyErr(format!("{e:#}"))
        }
    }
}

fn datum_type(dt: DataType) -> Result<tract_onnx::prelude::DatumType> {
    use tract_onnx::prelude::DatumType as T;
    Ok(match dt {
        DataType::FLOAT => T::F32,
        DataType::DOUBLE => T::F64,
        DataType::INT64 => T::I64,
        DataType::INT32 => T::I32,
        DataType::INT8 => T::I8,
        DataType::UINT8 => T::U8,
        DataType::BOOL => T::Bool,
        DataType::FLOAT16 => T::F16,
        other => {
            return Err(PareError::Runtime(format!(
                "inputs of type {other} are not supported by the tract backend"
            )));
        }
    })
}

fn to_tract(t: &HostTensor) -> Result<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::Tensor;
    let r = match &t.data {
        HostData::F32(v) => Tensor::from_shape(&t.shape, v),
        HostData::F64(v) => Tensor::from_shape(&t.shape, v),
        HostData::I64(v) => Tensor::from_shape(&t.shape, v),
        HostData::I32(v) => Tensor::from_shape(&t.shape, v),
        HostData::I8(v) => Tensor::from_shape(&t.shape, v),
        HostData::U8(v) => Tensor::from_shape(&t.shape, v),
        HostData::Bool(v) => Tensor::from_shape(&t.shape, v),
    };
    r.map_err(|e| PareError::Runtime(format!("tract input: {e:#}")))
}

fn from_tract(t: &tract_onnx::prelude::Tensor) -> Result<HostTensor> {
    use tract_onnx::prelude::DatumType as T;
    let shape = t.shape().to_vec();
    let e = |e: tract_onnx::prelude::TractError| PareError::Runtime(format!("tract output: {e:#}"));
    macro_rules! take {
        ($ty:ty) => {
            t.to_plain_array_view::<$ty>()
                .map_err(e)?
                .iter()
                .copied()
                .collect()
        };
    }
    let data = match t.datum_type() {
        T::F32 => HostData::F32(take!(f32)),
        T::F64 => HostData::F64(take!(f64)),
        T::I64 => HostData::I64(take!(i64)),
        T::I32 => HostData::I32(take!(i32)),
        T::I8 => HostData::I8(take!(i8)),
        T::U8 => HostData::U8(take!(u8)),
        T::Bool => HostData::Bool(take!(bool)),
        _ => {
            let c = t.cast_to::<f32>().map_err(e)?;
            HostData::F32(
                c.to_plain_array_view::<f32>()
                    .map_err(e)?
                    .iter()
                    .copied()
                    .collect(),
            )
        }
    };
    Ok(HostTensor { shape, data })
}

impl Engine for TractEngine {
    fn backend(&self) -> &'static str {
        "tract"
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        use tract_onnx::prelude::*;
        let tv: TVec<TValue> = inputs
            .iter()
            .map(|t| to_tract(t).map(|x| x.into()))
            .collect::<Result<_>>()?;
        let out = self
            .plan
            .run(tv)
            .map_err(|e| PareError::Runtime(format!("tract: {e:#}")))?;
        out.iter().map(|v| from_tract(v)).collect()
    }
}
