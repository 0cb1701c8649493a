//! Proof that a pruned model still works: run the original and the pruned model on the same
//! inputs, on one engine, and compare output shapes and finiteness (and latency). Only a run
//! counts: when no engine can run the pruned model the result is "not validated" with the
//! engine's reason, never a comparison of inferred shapes (a model whose inferred shapes
//! match can still be rejected by every runtime).

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::model::Analysis;
use crate::model::proto::ModelProto;
use crate::runtime::{EngineChoice, EngineKind, HostTensor, InputSpec, Runner};

/// What validation found.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Validation {
    /// Both models ran on one engine, output shapes are identical and values finite.
    pub passed: bool,
    /// The engine that ran both models (`"onnxruntime"`, `"tract"`), or `"none"` when no
    /// engine ran them (then `passed` is false and `notes` say why).
    pub method: String,
    /// The engine that ran both models; `None` when none did.
    pub engine: Option<EngineKind>,
    pub output_shapes_before: Vec<Vec<usize>>,
    pub output_shapes_after: Vec<Vec<usize>>,
    pub all_finite: bool,
    pub latency_ms_before: Option<f64>,
    pub latency_ms_after: Option<f64>,
    /// Problems found, or why running was impossible (one line per engine tried).
    pub notes: Vec<String>,
    /// The original's and the pruned model's outputs on the validation input (a prune
    /// without `--calib` reports fidelity from them instead of running both models again).
    #[serde(skip)]
    pub outputs: Option<(Vec<HostTensor>, Vec<HostTensor>)>,
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

/// Validates on `inputs` (model-input order) when given, else on random inputs from `seed`,
/// on the engine `PARE_ENGINE` names (default: onnxruntime when it loads, else tract).
pub fn validate_with(
    original: &Analysis,
    pruned: &ModelProto,
    _pruned_analysis: &Analysis,
    seed: u64,
    inputs: Option<&[HostTensor]>,
) -> Validation {
    validate_on(EngineChoice::from_env(), original, pruned, seed, inputs)
}

/// What one engine made of the pair.
enum Attempt {
    /// Both ran: outputs and best-of-3 latency of each.
    Ran(Vec<HostTensor>, f64, Vec<HostTensor>, f64),
    /// The original did not run here (another engine may).
    OriginalFailed(String),
    /// The original ran and the pruned model did not: the pruning broke it.
    PrunedFailed(String),
}

fn attempt(
    engine: EngineKind,
    original: &ModelProto,
    pruned: &ModelProto,
    specs: &[InputSpec],
    inputs: &[HostTensor],
) -> Attempt {
    let before = Runner::new(engine, original, specs).and_then(|r| time_runs(&r, inputs));
    let (o0, t0) = match before {
        Ok(x) => x,
        Err(e) => return Attempt::OriginalFailed(e.to_string()),
    };
    match Runner::new(engine, pruned, specs).and_then(|r| time_runs(&r, inputs)) {
        Ok((o1, t1)) => Attempt::Ran(o0, t0, o1, t1),
        Err(e) => Attempt::PrunedFailed(e.to_string()),
    }
}

/// The engines to try, in order: the chosen one, then tract (which runs wherever pare runs)
/// for originals the chosen engine refuses.
fn engines(choice: EngineChoice, notes: &mut Vec<String>) -> Vec<EngineKind> {
    let first = match choice.resolve() {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("{e}; validating with tract"));
            EngineKind::Tract
        }
    };
    let mut v = vec![first];
    if first != EngineKind::Tract && choice != EngineChoice::Ort {
        v.push(EngineKind::Tract);
    }
    v
}

/// Validates on `choice`'s engine. The pruned model must run wherever the original runs: a
/// pruned model the first engine that runs the original rejects fails validation, with that
/// engine's message.
pub fn validate_on(
    choice: EngineChoice,
    original: &Analysis,
    pruned: &ModelProto,
    seed: u64,
    inputs: Option<&[HostTensor]>,
) -> Validation {
    let mut v = Validation {
        method: "none".into(),
        ..Default::default()
    };
    let (specs, inputs) = match prepare_inputs(original, seed, inputs, &mut v.notes) {
        Ok(x) => x,
        Err(e) => {
            v.notes.push(format!("no inputs to validate with: {e}"));
            return v;
        }
    };
    for engine in engines(choice, &mut v.notes) {
        match attempt(engine, &original.model.proto, pruned, &specs, &inputs) {
            Attempt::Ran(o0, t0, o1, t1) => {
                compare(&mut v, engine, &o0, &o1);
                v.latency_ms_before = Some(t0);
                v.latency_ms_after = Some(t1);
                v.outputs = Some((o0, o1));
                return v;
            }
            Attempt::PrunedFailed(e) => {
                v.engine = Some(engine);
                v.method = engine.name().into();
                v.notes.push(format!(
                    "{engine} runs the original but not the pruned model: {e}"
                ));
                return v;
            }
            Attempt::OriginalFailed(e) => {
                v.notes
                    .push(format!("{engine} cannot run the original model: {e}"));
            }
        }
    }
    v.notes.push(
        "no engine ran the original model, so the pruned one was not run: not validated".into(),
    );
    v
}

/// The input specs and values: the given ones, else seeded random inputs.
fn prepare_inputs(
    original: &Analysis,
    seed: u64,
    inputs: Option<&[HostTensor]>,
    notes: &mut Vec<String>,
) -> Result<(Vec<InputSpec>, Vec<HostTensor>)> {
    if let Some(given) = inputs {
        let specs = original
            .index
            .inputs
            .iter()
            .zip(given)
            .map(|(name, t)| InputSpec {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape.clone(),
            })
            .collect();
        return Ok((specs, given.to_vec()));
    }
    let (specs, spec_notes) = input_specs(original)?;
    notes.extend(spec_notes);
    let values = random_inputs(&specs, seed)?;
    Ok((specs, values))
}

/// Output shapes equal and pruned outputs finite.
fn compare(v: &mut Validation, engine: EngineKind, o0: &[HostTensor], o1: &[HostTensor]) {
    v.method = engine.name().into();
    v.engine = Some(engine);
    v.output_shapes_before = o0.iter().map(|t| t.shape.clone()).collect();
    v.output_shapes_after = o1.iter().map(|t| t.shape.clone()).collect();
    v.all_finite = o1.iter().all(|t| t.to_f64().iter().all(|x| x.is_finite()));
    if v.output_shapes_before != v.output_shapes_after {
        v.notes.push("output shapes differ".into());
    }
    if !v.all_finite {
        v.notes
            .push("pruned outputs contain NaN or infinity".into());
    }
    v.passed = v.output_shapes_before == v.output_shapes_after && v.all_finite;
}
