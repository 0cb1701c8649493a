//! Proof that a pruned model still works: run the original and the pruned model on the same
//! seeded inputs and compare output shapes, finiteness and latency. Where tract cannot run the
//! original (a data-dependent `If`), fall back to pare's own shape inference and say so.

use std::time::Instant;

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::model::proto::ModelProto;
use crate::model::shape::Dim;
use crate::model::{Analysis, DataType};
use crate::rng::Rng;
use crate::runtime::{EngineKind, HostTensor, InputSpec, Runner};

/// What validation found.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Validation {
    /// Output shapes identical and values finite, checked by running both models.
    pub passed: bool,
    /// "tract" when both models ran, "shapes" when only pare's shape inference could check.
    pub method: String,
    /// The engine that ran both models (`None`: only shapes were compared). Validation runs
    /// on tract, whose refusals (a data-dependent `If`) are what the shape fallback covers.
    pub engine: Option<EngineKind>,
    pub output_shapes_before: Vec<Vec<usize>>,
    pub output_shapes_after: Vec<Vec<usize>>,
    pub all_finite: bool,
    pub latency_ms_before: Option<f64>,
    pub latency_ms_after: Option<f64>,
    /// Problems found, or why running was impossible.
    pub notes: Vec<String>,
}

/// Concrete input specs: pinned/static dims, symbolic dims as 1 (first axis) or 64.
pub fn input_specs(a: &Analysis) -> Result<(Vec<InputSpec>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut specs = Vec::new();
    for name in &a.index.inputs {
        let info = a.shapes.get(name).cloned().unwrap_or_default();
        let shape = info.shape.ok_or_else(|| {
            PareError::Usage(format!(
                "input '{name}' has no declared shape; pin it with --input-shape"
            ))
        })?;
        let dims: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(k, d)| match d {
                Dim::Known(v) => (*v).max(0) as usize,
                other => {
                    let v = if k == 0 { 1 } else { 64 };
                    notes.push(format!("input '{name}' dim {k} ({other}) set to {v} for validation; pin it with --input-shape"));
                    v
                }
            })
            .collect();
        specs.push(InputSpec {
            name: name.clone(),
            dtype: info.dtype.unwrap_or(DataType::FLOAT),
            shape: dims,
        });
    }
    Ok((specs, notes))
}

/// Seeded random inputs for the specs.
pub fn random_inputs(specs: &[InputSpec], seed: u64) -> Result<Vec<HostTensor>> {
    let mut rng = Rng::new(seed);
    specs
        .iter()
        .map(|s| HostTensor::random(s.dtype, &s.shape, &mut rng))
        .collect()
}

fn time_runs(runner: &Runner, inputs: &[HostTensor]) -> Result<(Vec<HostTensor>, f64)> {
    let out = runner.run(inputs)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        runner.run(inputs)?;
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((out, best))
}

/// Validates `pruned` against the analysed original.
pub fn validate(
    original: &Analysis,
    pruned: &ModelProto,
    pruned_analysis: &Analysis,
    seed: u64,
) -> Validation {
    let mut v = Validation::default();
    let (specs, notes) = match input_specs(original) {
        Ok(x) => x,
        Err(e) => {
            v.notes.push(e.to_string());
            return v;
        }
    };
    v.notes.extend(notes);
    let run_both = || -> Result<_> {
        let inputs = random_inputs(&specs, seed)?;
        let e0 = Runner::tract(&original.model.proto, &specs)?;
        let (o0, t0) = time_runs(&e0, &inputs)?;
        let e1 = Runner::tract(pruned, &specs)
            .map_err(|e| PareError::Runtime(format!("pruned model: {e}")))?;
        let (o1, t1) = time_runs(&e1, &inputs)?;
        Ok((o0, t0, o1, t1, e1.engine()))
    };
    match run_both() {
        Ok((o0, t0, o1, t1, engine)) => {
            v.method = engine.name().into();
            v.engine = Some(engine);
            v.output_shapes_before = o0.iter().map(|t| t.shape.clone()).collect();
            v.output_shapes_after = o1.iter().map(|t| t.shape.clone()).collect();
            v.all_finite = o1.iter().all(|t| t.to_f64().iter().all(|x| x.is_finite()));
            v.latency_ms_before = Some(t0);
            v.latency_ms_after = Some(t1);
            if v.output_shapes_before != v.output_shapes_after {
                v.notes.push("output shapes differ".into());
            }
            if !v.all_finite {
                v.notes
                    .push("pruned outputs contain NaN or infinity".into());
            }
            v.passed = v.output_shapes_before == v.output_shapes_after && v.all_finite;
        }
        Err(e) => {
            // tract refuses some models users most need help with; compare inferred shapes.
            v.method = "shapes".into();
            v.notes.push(format!(
                "could not run with tract ({e}); compared inferred output shapes instead"
            ));
            let shapes = |a: &Analysis| -> Vec<Option<Vec<i64>>> {
                a.index
                    .outputs
                    .iter()
                    .map(|o| a.shapes.static_shape(o))
                    .collect()
            };
            let (s0, s1) = (shapes(original), shapes(pruned_analysis));
            v.output_shapes_before = s0
                .iter()
                .map(|s| {
                    s.clone()
                        .unwrap_or_default()
                        .iter()
                        .map(|&d| d as usize)
                        .collect()
                })
                .collect();
            v.output_shapes_after = s1
                .iter()
                .map(|s| {
                    s.clone()
                        .unwrap_or_default()
                        .iter()
                        .map(|&d| d as usize)
                        .collect()
                })
                .collect();
            v.passed = s0 == s1 && s0.iter().all(Option::is_some);
            if !v.passed {
                v.notes
                    .push("inferred output shapes differ or are unknown".into());
            }
        }
    }
    v
}
