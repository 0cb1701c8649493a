//! Proof that a pruned model still works: run the original and the pruned model on the same
//! seeded inputs and compare output shapes, finiteness and latency. Where tract cannot run the
//! original (a data-dependent `If`), fall back to pare's own shape inference and say so.

use std::time::Instant;

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::model::Analysis;
use crate::model::proto::ModelProto;
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

pub use crate::data::{input_specs, random_inputs};

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

/// Validates `pruned` against the analysed original on seeded random inputs.
pub fn validate(
    original: &Analysis,
    pruned: &ModelProto,
    pruned_analysis: &Analysis,
    seed: u64,
) -> Validation {
    validate_with(original, pruned, pruned_analysis, seed, None)
}

/// Validates on `inputs` (model-input order) when given, else on random inputs from `seed`.
pub fn validate_with(
    original: &Analysis,
    pruned: &ModelProto,
    pruned_analysis: &Analysis,
    seed: u64,
    inputs: Option<&[HostTensor]>,
) -> Validation {
    let mut v = Validation::default();
    let specs_of = |given: &[HostTensor]| -> Vec<InputSpec> {
        original
            .index
            .inputs
            .iter()
            .zip(given)
            .map(|(name, t)| InputSpec {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape.clone(),
            })
            .collect()
    };
    let (specs, notes) = match inputs {
        Some(given) => (specs_of(given), Vec::new()),
        None => match input_specs(original) {
            Ok(x) => x,
            Err(e) => {
                v.notes.push(e.to_string());
                return v;
            }
        },
    };
    v.notes.extend(notes);
    let run_both = || -> Result<_> {
        let inputs = match inputs {
            Some(given) => given.to_vec(),
            None => random_inputs(&specs, seed)?,
        };
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
