//! onnxruntime as an engine (cargo feature `ort`, on by default).
//!
//! tract runs some vision models several times slower than onnxruntime (DeepLabV3-MobileNetV3
//! about 6x), and calibration runs the float model once per sample, so where that time matters
//! pare can use onnxruntime instead. It is never linked: the shared library is loaded at run
//! time from the `libonnxruntime.so.*` that `pip install onnxruntime` ships in
//! `onnxruntime/capi/` (or the file `PARE_ORT_LIB` names). Without it, or without the feature,
//! everything runs on tract. Boundary data computed this way is what onnxruntime itself gives
//! on the source model (run with the cut opaque to its fusions, see
//! `extract::data::Evaluator::compute_at_cut`), so a piece checked in onnxruntime reproduces
//! it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorRef};

use super::{HostData, HostTensor};
use crate::error::{PareError, Result};
use crate::model::proto::ModelProto;

fn oerr(e: impl std::fmt::Display) -> PareError {
    PareError::Runtime(format!("onnxruntime: {e}"))
}

/// Candidate shared libraries: `PARE_ORT_LIB`, then the `onnxruntime` package of a virtual
/// environment (`$VIRTUAL_ENV`, `./.venv`), then whatever `python3 -c "import onnxruntime"`
/// finds.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for var in ["PARE_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            out.push(PathBuf::from(p));
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(v));
    }
    roots.push(PathBuf::from(".venv"));
    for root in roots {
        let Ok(libs) = std::fs::read_dir(root.join("lib")) else {
            continue;
        };
        for py in libs.flatten() {
            let capi = py.path().join("site-packages/onnxruntime/capi");
            out.extend(libs_in(&capi));
        }
    }
    let pythons = [
        std::env::var_os("PARE_PYTHON").map(PathBuf::from),
        Some(PathBuf::from("python3")),
    ];
    for py in pythons.into_iter().flatten() {
        let o = std::process::Command::new(&py)
            .args([
                "-c",
                "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
            ])
            .stderr(std::process::Stdio::null())
            .output();
        if let Ok(o) = o
            && o.status.success()
        {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            out.extend(libs_in(&Path::new(&dir).join("capi")));
        }
    }
    out
}

fn libs_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    v.sort();
    v.reverse();
    v
}

/// The process-wide onnxruntime environment, loaded once; `Err` says why it is unavailable.
fn environment() -> std::result::Result<&'static Environment, String> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let libs = candidates();
        let Some(lib) = libs.iter().find(|p| p.is_file()) else {
            return Err("no libonnxruntime.so found (pip install onnxruntime, or set PARE_ORT_LIB to the library)".into());
        };
        let builder = ort::init_from(lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        builder
            .with_name("pare")
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// Whether onnxruntime can be used in this process (`Err`: why not).
pub fn available() -> std::result::Result<(), String> {
    environment().map(|_| ())
}

/// A model prepared in onnxruntime: a few sessions (one per worker thread, one intra-op
/// thread each, or one session with several) that return the graph outputs.
pub struct OrtPlan {
    sessions: Vec<Mutex<Session>>,
    outputs: Vec<String>,
}

impl OrtPlan {
    /// Prepares `model` (its graph outputs are what a run hands over) in `sessions` sessions
    /// of `intra` threads each. Several single-threaded sessions let workers fold one sample's
    /// activations while another sample runs; one session holds one sample's intermediates at
    /// a time (less memory on large graphs).
    pub fn new(model: &ModelProto, sessions: usize, intra: usize) -> Result<Self> {
        let bytes = session_bytes(model);
        let level = optimization_level(model);
        let mut all = Vec::new();
        for _ in 0..sessions.max(1) {
            all.push(Mutex::new(session(&bytes, intra, level)?));
        }
        let outputs = output_names(&*all[0].lock().map_err(|_| oerr("session poisoned"))?);
        Ok(OrtPlan {
            sessions: all,
            outputs,
        })
    }

    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// A free session if there is one, else the first once it is free.
    fn free_session(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        for s in &self.sessions {
            if let Ok(g) = s.try_lock() {
                return Ok(g);
            }
        }
        self.sessions[0]
            .lock()
            .map_err(|_| oerr("session poisoned"))
    }

    /// Runs on `inputs` (model input order); `f(k, value)` sees output `k`.
    fn run_with(
        &self,
        inputs: &[HostTensor],
        f: &mut dyn FnMut(usize, &DynValue) -> Result<()>,
    ) -> Result<()> {
        let mut session = self.free_session()?;
        let values: Vec<ort::session::SessionInputValue<'_>> =
            inputs.iter().map(to_value).collect::<Result<_>>()?;
        let outs = session.run(values.as_slice()).map_err(oerr)?;
        for k in 0..self.outputs.len() {
            f(k, &outs[k])?;
        }
        Ok(())
    }

    /// Every output with its own type and shape.
    pub fn run(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>> {
        let mut res = Vec::with_capacity(self.outputs.len());
        self.run_with(inputs, &mut |k, v| {
            res.push(to_host(v).ok_or_else(|| self.unreadable(k))?);
            Ok(())
        })?;
        Ok(res)
    }

    /// `f(k, values)` sees output `k` as f32 (float32 outputs without a copy).
    pub fn run_f32(
        &self,
        inputs: &[HostTensor],
        f: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        self.run_with(inputs, &mut |k, v| {
            if let Ok((_, data)) = v.try_extract_tensor::<f32>() {
                return f(k, data);
            }
            let h = to_host(v)
                .filter(|h| !matches!(h.data, HostData::Bool(_)))
                .ok_or_else(|| self.unreadable(k))?;
            let c: Vec<f32> = h.to_f64().iter().map(|&x| x as f32).collect();
            f(k, &c)
        })
    }

    fn unreadable(&self, k: usize) -> PareError {
        oerr(format!(
            "output '{}' is not a tensor type pare can read",
            self.outputs[k]
        ))
    }
}

/// The model as onnxruntime gets it: without stored intermediate types, which can contradict
/// edited graphs (onnxruntime infers them).
fn session_bytes(model: &ModelProto) -> Vec<u8> {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        g.value_info.clear();
    }
    crate::model::io::encode_model(&m)
}

/// Full graph optimization, except for Q/DQ models with FP16/BF16 scales (what
/// `pare quantize --precision fp16` writes for TensorRT 11): onnxruntime's CPU Q/DQ fusions
/// rewrite those into kernels that miscompute the reduced-precision scales (measured on
/// MobileNetV2: top-1 agreement 0.00 with basic or full optimization, 0.69 with none, as the
/// FP32-scale file), so pare runs them unoptimized and measures what the file means.
fn optimization_level(model: &ModelProto) -> GraphOptimizationLevel {
    if has_reduced_precision_qdq(model) {
        GraphOptimizationLevel::Disable
    } else {
        GraphOptimizationLevel::Level3
    }
}

/// Whether a (De)QuantizeLinear of the main graph takes an FP16/BF16 scale initializer.
pub fn has_reduced_precision_qdq(model: &ModelProto) -> bool {
    use crate::model::DataType;
    let Some(g) = model.graph.as_ref() else {
        return false;
    };
    let reduced: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .filter(|t| {
            let d = t.data_type();
            d == DataType::FLOAT16.0 || d == DataType::BFLOAT16.0
        })
        .map(|t| t.name())
        .collect();
    g.node.iter().any(|n| {
        matches!(n.op_type(), "QuantizeLinear" | "DequantizeLinear")
            && n.input.get(1).is_some_and(|s| reduced.contains(s.as_str()))
    })
}

fn session(bytes: &[u8], intra: usize, level: GraphOptimizationLevel) -> Result<Session> {
    let env = environment().map_err(oerr)?;
    Session::builder(env)
        .map_err(oerr)?
        .with_optimization_level(level)
        .map_err(oerr)?
        .with_intra_threads(intra.max(1))
        .map_err(oerr)?
        // The pattern pre-plans one block for all intermediates: more peak memory.
        .with_memory_pattern(false)
        .map_err(oerr)?
        // Prepacked copies of the weights, per session: memory for little speed here.
        .with_prepacking(false)
        .map_err(oerr)?
        .commit_from_memory(bytes)
        .map_err(oerr)
}

fn output_names(s: &Session) -> Vec<String> {
    s.outputs().iter().map(|o| o.name().to_string()).collect()
}

fn to_host(v: &DynValue) -> Option<HostTensor> {
    fn dims(s: &ort::value::Shape) -> Vec<usize> {
        s.iter().map(|&d| d.max(0) as usize).collect()
    }
    macro_rules! try_as {
        ($t:ty, $variant:ident) => {
            if let Ok((s, d)) = v.try_extract_tensor::<$t>() {
                return Some(HostTensor {
                    shape: dims(s),
                    data: HostData::$variant(d.to_vec()),
                });
            }
        };
    }
    try_as!(f32, F32);
    try_as!(f64, F64);
    try_as!(i64, I64);
    try_as!(i32, I32);
    try_as!(i8, I8);
    try_as!(u8, U8);
    try_as!(bool, Bool);
    None
}

fn to_value(t: &HostTensor) -> Result<ort::session::SessionInputValue<'_>> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, &$v[..]))
                .map_err(oerr)?
                .into()
        };
    }
    Ok(match &t.data {
        HostData::F32(v) => view!(v),
        HostData::F64(v) => view!(v),
        HostData::I64(v) => view!(v),
        HostData::I32(v) => view!(v),
        HostData::I8(v) => view!(v),
        HostData::U8(v) => view!(v),
        HostData::Bool(v) => view!(v),
    })
}

#[cfg(test)]
mod tests {
    use super::has_reduced_precision_qdq;
    use crate::model::DataType;
    use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};

    fn dq_model(scale_type: DataType) -> ModelProto {
        let init = |name: &str, dt: DataType| TensorProto {
            name: Some(name.into()),
            data_type: Some(dt.0),
            ..Default::default()
        };
        ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: Some("DequantizeLinear".into()),
                    input: vec!["q".into(), "s".into(), "z".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                initializer: vec![
                    init("q", DataType::INT8),
                    init("s", scale_type),
                    init("z", DataType::INT8),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fp16_qdq_scales_are_detected_fp32_ones_are_not() {
        assert!(has_reduced_precision_qdq(&dq_model(DataType::FLOAT16)));
        assert!(has_reduced_precision_qdq(&dq_model(DataType::BFLOAT16)));
        assert!(!has_reduced_precision_qdq(&dq_model(DataType::FLOAT)));
        assert!(!has_reduced_precision_qdq(&ModelProto::default()));
    }
}
