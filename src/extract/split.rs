//! Splitting a model in two at a set of tensors (seed Q6: quantize the head, run the tail in
//! float). HEAD computes the cut tensors from the model inputs; TAIL computes the remaining
//! model outputs from them. Tensors that bypass the cut (a residual connection from before
//! the cut to after it) are passed from HEAD to TAIL as well, so no node is computed twice;
//! constants are recomputed where used, never passed. Running HEAD then TAIL, feeding TAIL's
//! inputs by name from HEAD's outputs and the model inputs, equals running the model.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{Piece, const_only_nodes, extract, walk_back};
use crate::error::{PareError, Result};
use crate::model::Analysis;
use crate::runtime::{HostTensor, max_abs_diff};

/// The two halves.
#[derive(Clone, Debug)]
pub struct Split {
    pub head: Piece,
    pub tail: Piece,
    /// Tensors passed from HEAD to TAIL besides the cut (they bypass it).
    pub bypass: Vec<String>,
    /// Model inputs TAIL reads directly (the cut does not separate them from the outputs).
    pub tail_model_inputs: Vec<String>,
    pub notes: Vec<String>,
}

/// Result of checking HEAD∘TAIL against the model on one sample.
#[derive(Clone, Debug, Serialize)]
pub struct SplitCheck {
    /// Per model output: name and max abs difference.
    pub outputs: Vec<(String, f64)>,
    pub max_abs_diff: f64,
    pub log: Vec<String>,
}

/// Splits the model at the tensors `at`.
pub fn split(a: &Analysis, at: &[String]) -> Result<Split> {
    let at = super::dedup(at);
    if at.is_empty() {
        return Err(PareError::Usage("--at needs at least one tensor".into()));
    }
    super::check_tensors(a, &at)?;
    let consts = const_only_nodes(a);
    let is_const = |t: &str| a.index.producer.get(t).is_some_and(|&p| consts[p]);
    for t in &at {
        if a.index.initializers.contains_key(t) {
            return Err(PareError::BadCut {
                at: format!("'{t}'"),
                reason: "it is an initializer (a weight), not an activation".into(),
            });
        }
        if a.index.inputs.contains(t) {
            return Err(PareError::BadCut {
                at: format!("'{t}'"),
                reason: "it is a model input, HEAD would be empty".into(),
            });
        }
        if is_const(t) {
            return Err(PareError::BadCut {
                at: format!("'{t}'"),
                reason: "it is computed from constants alone".into(),
            });
        }
    }
    // HEAD: the ancestors of the cut.
    let hw = walk_back(a, &at, &|_| false);
    let head_inputs: Vec<String> = a
        .index
        .inputs
        .iter()
        .filter(|i| hw.missing.contains(i))
        .cloned()
        .collect();
    let g = a.graph();
    let head_produced: HashSet<&str> = hw
        .nodes
        .iter()
        .filter(|&&i| !consts[i])
        .flat_map(|&i| g.node[i].output.iter().map(String::as_str))
        .filter(|o| !o.is_empty())
        .collect();
    let available = |t: &str| head_produced.contains(t);
    let rest: Vec<String> = a
        .index
        .outputs
        .iter()
        .filter(|o| !available(o) && !a.index.inputs.contains(*o))
        .cloned()
        .collect();
    if rest.is_empty() {
        return Err(PareError::BadCut {
            at: super::quote_list(&at),
            reason: "every model output is computed before it: TAIL would be empty; cut earlier"
                .into(),
        });
    }
    // TAIL: what the remaining outputs need, stopping at anything HEAD computes and at model
    // inputs; constants are walked through (recomputed in TAIL).
    let model_inputs: HashSet<&str> = a.index.inputs.iter().map(String::as_str).collect();
    let tw = walk_back(a, &rest, &|t| {
        (available(t) && !is_const(t)) || model_inputs.contains(t)
    });
    if tw.nodes.is_empty() {
        return Err(PareError::BadCut {
            at: super::quote_list(&at),
            reason: "the cut leaves no node for TAIL".into(),
        });
    }
    let mut notes = Vec::new();
    let cut_used: Vec<String> = at
        .iter()
        .filter(|t| tw.reached.contains(t))
        .cloned()
        .collect();
    for t in at.iter().filter(|t| !tw.reached.contains(t)) {
        if !a.index.outputs.contains(t) {
            notes.push(format!(
                "'{t}' is not used after the cut; TAIL does not take it"
            ));
        }
    }
    // Bypass tensors in topological order of their producers, for a stable interface.
    let pos: HashMap<usize, usize> = a
        .index
        .topo
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, k))
        .collect();
    let mut bypass: Vec<String> = tw
        .reached
        .iter()
        .filter(|t| available(t) && !at.contains(t))
        .cloned()
        .collect();
    bypass.sort_by_key(|t| a.index.producer.get(t).map(|p| pos[p]).unwrap_or(0));
    if !bypass.is_empty() {
        notes.push(format!(
            "{} also read after it (bypassing the cut), so HEAD passes {} to TAIL too: {}",
            if bypass.len() == 1 {
                "1 tensor computed before the cut is".to_string()
            } else {
                format!("{} tensors computed before the cut are", bypass.len())
            },
            if bypass.len() == 1 { "it" } else { "them" },
            bypass.join(", ")
        ));
    }
    let tail_model_inputs: Vec<String> = a
        .index
        .inputs
        .iter()
        .filter(|i| tw.reached.contains(i))
        .cloned()
        .collect();
    if !tail_model_inputs.is_empty() {
        notes.push(format!(
            "TAIL also reads model input(s) {} directly: the cut does not separate them from the outputs",
            tail_model_inputs.join(", ")
        ));
    }
    let mut head_outputs: Vec<String> = at.clone();
    head_outputs.extend(bypass.iter().cloned());
    for o in &a.index.outputs {
        if available(o) && !head_outputs.contains(o) {
            head_outputs.push(o.clone());
            notes.push(format!(
                "model output '{o}' is computed before the cut: HEAD outputs it"
            ));
        }
    }
    let mut tail_inputs = cut_used;
    tail_inputs.extend(bypass.iter().cloned());
    tail_inputs.extend(tail_model_inputs.iter().cloned());
    let head = extract(a, &head_inputs, &head_outputs)?;
    let tail = extract(a, &tail_inputs, &rest)?;
    Ok(Split {
        head,
        tail,
        bypass,
        tail_model_inputs,
        notes,
    })
}

/// Runs the model, then HEAD and TAIL in sequence (TAIL fed by name from HEAD's outputs and
/// the model inputs), on one input sample; compares every model output.
pub fn check_split(a: &Analysis, s: &Split, sample: &[HostTensor]) -> Result<SplitCheck> {
    let mut log = Vec::new();
    let mut r = super::data::Evaluator::new(a, sample);
    r.compute(&a.index.outputs)?;
    log.append(&mut r.log);
    let mut values: HashMap<String, HostTensor> = a
        .index
        .inputs
        .iter()
        .cloned()
        .zip(sample.iter().cloned())
        .collect();
    let run_piece = |p: &Piece,
                     values: &HashMap<String, HostTensor>,
                     log: &mut Vec<String>|
     -> Result<Vec<HostTensor>> {
        let pa = Analysis::new(p.model.clone(), &Default::default())?;
        let feeds: Vec<HostTensor> = pa
            .index
            .inputs
            .iter()
            .map(|n| {
                values.get(n).cloned().ok_or_else(|| PareError::Tensor {
                    tensor: n.clone(),
                    message: "no value to feed".into(),
                })
            })
            .collect::<Result<_>>()?;
        let mut pr = super::data::Evaluator::new(&pa, &feeds);
        pr.compute(&p.outputs)?;
        log.append(&mut pr.log);
        Ok(p.outputs
            .iter()
            .map(|o| pr.get(o).cloned().expect("computed"))
            .collect())
    };
    let head_out = run_piece(&s.head, &values, &mut log)?;
    values.extend(s.head.outputs.iter().cloned().zip(head_out));
    let tail_out = run_piece(&s.tail, &values, &mut log)?;
    values.extend(s.tail.outputs.iter().cloned().zip(tail_out));
    let mut outputs = Vec::new();
    let mut worst = 0f64;
    for o in &a.index.outputs {
        let want = r.get(o).ok_or_else(|| PareError::Tensor {
            tensor: o.clone(),
            message: "model output not computed".into(),
        })?;
        let got = values.get(o).ok_or_else(|| PareError::Tensor {
            tensor: o.clone(),
            message: "HEAD∘TAIL does not compute it".into(),
        })?;
        let d = max_abs_diff(want, got).unwrap_or(f64::INFINITY);
        worst = worst.max(d);
        outputs.push((o.clone(), d));
    }
    Ok(SplitCheck {
        outputs,
        max_abs_diff: worst,
        log,
    })
}
