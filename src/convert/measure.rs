//! What convert measures by running models: the largest magnitude of every float activation
//! (which decides what stays FP32), and the converted model's outputs against the FP32
//! model's, with the shared measures of [`crate::fidelity`] (SQNR, cosine, top-1 agreement,
//! mask IoU / pixel agreement where the output shape calls for them).

use std::collections::HashMap;

use crate::data::SampleSet;
use crate::error::Result;
use crate::fidelity::{Accumulator, OutputFidelity};
use crate::model::proto::ModelProto;
use crate::runtime::{EngineKind, HostTensor, InputSpec, Runner, RunnerOptions};

fn specs(names: &[String], inputs: &[HostTensor]) -> Vec<InputSpec> {
    names
        .iter()
        .zip(inputs)
        .map(|(n, t)| InputSpec {
            name: n.clone(),
            dtype: t.dtype(),
            shape: t.shape.clone(),
        })
        .collect()
}

/// Largest |value| of each of `watched` over samples `range` of `set`. tract streams the
/// activations (freeing each after its readers); onnxruntime is the fallback when tract
/// cannot run the model. Returns the ranges and the engine that measured them.
pub fn activation_ranges(
    model: &ModelProto,
    input_names: &[String],
    watched: &[String],
    set: &SampleSet,
    range: std::ops::Range<usize>,
) -> Result<(HashMap<String, f32>, EngineKind)> {
    let mut max = vec![0f32; watched.len()];
    let mut runner: Option<(Vec<InputSpec>, Runner)> = None;
    let mut engine = EngineKind::Tract;
    for k in range {
        let s = set.load(k)?;
        let sp = specs(input_names, &s.tensors);
        if runner.as_ref().is_none_or(|(p, _)| *p != sp) {
            let opts = RunnerOptions::default();
            let r = match Runner::watching(EngineKind::Tract, model, watched, &sp, &opts) {
                Ok(r) => r,
                Err(_) => Runner::watching(EngineKind::OnnxRuntime, model, watched, &sp, &opts)?,
            };
            engine = r.engine();
            runner = Some((sp, r));
        }
        let Some((_, r)) = &runner else { continue };
        r.run_f32(&s.tensors, &mut |i, v| {
            let m = v.iter().fold(0f32, |m, x| {
                if x.is_finite() {
                    m.max(x.abs())
                } else {
                    f32::INFINITY
                }
            });
            if let Some(slot) = max.get_mut(i) {
                *slot = slot.max(m);
            }
            Ok(())
        })?;
    }
    Ok((watched.iter().cloned().zip(max).collect(), engine))
}

/// Runs `reference` and `candidate` on samples `range` of `set` with `engine`; the
/// per-output fidelity and the number of samples compared.
pub fn fidelity(
    reference: &ModelProto,
    candidate: &ModelProto,
    input_names: &[String],
    output_names: &[String],
    set: &SampleSet,
    range: std::ops::Range<usize>,
    engine: EngineKind,
) -> Result<(Vec<OutputFidelity>, usize)> {
    let mut acc = Accumulator::new(output_names.to_vec());
    let mut runners: Option<(Vec<InputSpec>, Runner, Runner)> = None;
    for k in range {
        let s = set.load(k)?;
        let sp = specs(input_names, &s.tensors);
        if runners.as_ref().is_none_or(|(p, _, _)| *p != sp) {
            let r0 = Runner::new(engine, reference, &sp)?;
            let r1 = Runner::new(engine, candidate, &sp)?;
            runners = Some((sp, r0, r1));
        }
        let Some((_, r0, r1)) = &runners else {
            continue;
        };
        acc.add(&r0.run(&s.tensors)?, &r1.run(&s.tensors)?)?;
    }
    Ok((acc.outputs(), acc.samples()))
}
