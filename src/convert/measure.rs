//! What convert measures by running models: the largest magnitude of every float activation
//! (which decides what stays FP32), and the converted model's outputs against the FP32
//! model's (SQNR, top-1 agreement on class scores). Kept small: the shared fidelity measures
//! (`crate::fidelity`) replace the comparison part once they land.

use std::collections::HashMap;

use serde::Serialize;

use crate::data::SampleSet;
use crate::error::Result;
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

/// One output's agreement with the FP32 model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OutputFidelity {
    pub name: String,
    /// 10·log10(Σref² / Σ(ref−got)²) over all samples; `None` when the reference is all zero.
    pub sqnr_db: Option<f64>,
    /// Share of rows whose argmax matches the reference (class-score outputs `[N, C]`,
    /// `[N, C, 1, 1]`, C ≥ 2).
    pub top1_agreement: Option<f64>,
    pub max_abs_diff: f64,
}

#[derive(Clone, Default)]
struct Acc {
    signal: f64,
    noise: f64,
    rows: usize,
    agree: usize,
    class: bool,
    max_abs: f64,
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
    let mut acc = vec![Acc::default(); output_names.len()];
    let mut runners: Option<(Vec<InputSpec>, Runner, Runner)> = None;
    let mut n = 0;
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
        let (o0, o1) = (r0.run(&s.tensors)?, r1.run(&s.tensors)?);
        for ((a, r), g) in acc.iter_mut().zip(&o0).zip(&o1) {
            add(a, r, g);
        }
        n += 1;
    }
    let out = acc
        .iter()
        .zip(output_names)
        .map(|(a, name)| OutputFidelity {
            name: name.clone(),
            sqnr_db: (a.signal > 0.0).then(|| 10.0 * (a.signal / a.noise.max(1e-30)).log10()),
            top1_agreement: (a.class && a.rows > 0).then(|| a.agree as f64 / a.rows as f64),
            max_abs_diff: a.max_abs,
        })
        .collect();
    Ok((out, n))
}

fn add(a: &mut Acc, r: &HostTensor, g: &HostTensor) {
    let (x, y) = (r.to_f64(), g.to_f64());
    for (p, q) in x.iter().zip(&y) {
        a.signal += p * p;
        a.noise += (p - q) * (p - q);
        let d = (p - q).abs();
        a.max_abs = if d.is_nan() {
            f64::INFINITY
        } else {
            a.max_abs.max(d)
        };
    }
    let s = &r.shape;
    let classes = match s.len() {
        2 => Some(s[1]),
        4 if s[2] == 1 && s[3] == 1 => Some(s[1]),
        _ => None,
    };
    if let Some(c) = classes.filter(|&c| c >= 2 && r.shape == g.shape) {
        a.class = true;
        for (rr, gg) in x.chunks(c).zip(y.chunks(c)) {
            a.rows += 1;
            if argmax(rr) == argmax(gg) {
                a.agree += 1;
            }
        }
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}
