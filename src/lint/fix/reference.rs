//! Running a model for verification — whole in tract when tract accepts it, else in pieces:
//! tract runs every node up to the next `If`, the condition's computed value picks the
//! branch, the branch runs as a model of its own (recursively), and the rest continues. The
//! condition is thus decided by the real data, as any runtime would, not by pare's inference.

use std::collections::{HashMap, HashSet};

use crate::error::{PareError, Result};
use crate::model::DataType;
use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::runtime::{EngineKind, HostTensor, InputSpec, Runner};

/// The engine verification runs on.
pub const ENGINE: EngineKind = EngineKind::Tract;

use super::edit::{host_to_proto, proto_to_host, reads_of};

pub use crate::data::random_inputs;

/// Runs `model` on `inputs` (in `specs` order); returns its outputs in graph-output order and
/// how it ran.
pub fn run_model(
    model: &ModelProto,
    specs: &[InputSpec],
    inputs: &[HostTensor],
) -> Result<(Vec<HostTensor>, String)> {
    let (mut outs, how) = run_many(model, specs, std::slice::from_ref(&inputs.to_vec()))?;
    Ok((outs.pop().unwrap_or_default(), how))
}

/// Runs `model` on several input sets, preparing tract once when it takes the whole model.
pub fn run_many(
    model: &ModelProto,
    specs: &[InputSpec],
    sets: &[Vec<HostTensor>],
) -> Result<(Vec<Vec<HostTensor>>, String)> {
    // Node names do not change what a model computes, but tract refuses duplicates.
    let model = &unique_node_names(model);
    let whole = Runner::new(ENGINE, model, specs)
        .and_then(|e| sets.iter().map(|i| e.run(i)).collect::<Result<Vec<_>>>());
    match whole {
        Ok(out) => Ok((out, "tract".into())),
        Err(e) => {
            let has_if = model
                .graph()
                .is_some_and(|g| g.node.iter().any(|n| n.op_type() == "If"));
            if !has_if {
                return Err(e);
            }
            let out = sets
                .iter()
                .map(|i| run_piecewise(model, specs, i))
                .collect::<Result<Vec<_>>>()
                .map_err(|pe| PareError::Runtime(format!("{e}; in pieces: {pe}")))?;
            Ok((
                out,
                "tract, in pieces around If nodes (tract refuses the whole model)".into(),
            ))
        }
    }
}

/// Runs a model in pieces split at its `If` nodes.
pub fn run_piecewise(
    model: &ModelProto,
    specs: &[InputSpec],
    inputs: &[HostTensor],
) -> Result<Vec<HostTensor>> {
    let g = model
        .graph()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let mut env: HashMap<String, HostTensor> = HashMap::new();
    for (s, t) in specs.iter().zip(inputs) {
        env.insert(s.name.clone(), t.clone());
    }
    let consts: HashMap<String, &TensorProto> = HashMap::new();
    run_graph(model, g, &mut env, &consts, 0)?;
    g.output
        .iter()
        .map(|o| {
            env.get(o.name()).cloned().ok_or_else(|| {
                PareError::Runtime(format!("output '{}' was not computed", o.name()))
            })
        })
        .collect()
}

fn run_graph<'a>(
    model: &ModelProto,
    g: &'a GraphProto,
    env: &mut HashMap<String, HostTensor>,
    outer: &HashMap<String, &'a TensorProto>,
    depth: usize,
) -> Result<()> {
    if depth > 16 {
        return Err(PareError::Runtime("If nesting deeper than 16".into()));
    }
    let mut consts = outer.clone();
    for t in &g.initializer {
        consts.insert(t.name().to_string(), t);
    }
    let mut remaining: Vec<usize> = (0..g.node.len()).collect();
    while !remaining.is_empty() {
        let mut blocked: HashSet<String> = HashSet::new();
        let (mut piece, mut rest) = (Vec::new(), Vec::new());
        for &i in &remaining {
            let n = &g.node[i];
            if n.op_type() == "If" || reads_of(n).iter().any(|r| blocked.contains(r)) {
                blocked.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
                rest.push(i);
            } else {
                piece.push(i);
            }
        }
        if !piece.is_empty() {
            let later: HashSet<String> = rest
                .iter()
                .flat_map(|&i| reads_of(&g.node[i]))
                .chain(g.output.iter().map(|o| o.name().to_string()))
                .collect();
            run_piece(model, g, &piece, &later, env, &consts)?;
        }
        let Some(pos) = rest.iter().position(|&i| g.node[i].op_type() == "If") else {
            if piece.is_empty() {
                return Err(PareError::Runtime("piecewise run made no progress".into()));
            }
            remaining = rest;
            continue;
        };
        let if_node = &g.node[rest[pos]];
        run_if(model, if_node, env, &consts, depth)?;
        rest.remove(pos);
        remaining = rest;
    }
    // Graph outputs that are constants or outer values.
    for o in &g.output {
        if !env.contains_key(o.name())
            && let Some(t) = consts.get(o.name())
        {
            env.insert(o.name().to_string(), proto_to_host(t)?);
        }
    }
    Ok(())
}

fn run_if(
    model: &ModelProto,
    n: &NodeProto,
    env: &mut HashMap<String, HostTensor>,
    consts: &HashMap<String, &TensorProto>,
    depth: usize,
) -> Result<()> {
    let cond_name = n.input.first().map(String::as_str).unwrap_or("");
    let cond = match env.get(cond_name) {
        Some(t) => t.clone(),
        None => proto_to_host(consts.get(cond_name).ok_or_else(|| {
            PareError::Runtime(format!(
                "If '{}': condition '{cond_name}' not computed",
                n.display_name()
            ))
        })?)?,
    };
    let c = cond.to_f64().first().copied().unwrap_or(0.0) != 0.0;
    let attr = if c { "then_branch" } else { "else_branch" };
    let branch = n
        .attr(attr)
        .and_then(|a| a.g.as_deref())
        .ok_or_else(|| PareError::Runtime(format!("If '{}' has no {attr}", n.display_name())))?;
    run_graph(model, branch, env, consts, depth + 1)?;
    for (k, out) in n.output.iter().enumerate() {
        if out.is_empty() {
            continue;
        }
        let bo = branch.output.get(k).map(|o| o.name()).unwrap_or("");
        let v = match env.get(bo) {
            Some(v) => v.clone(),
            None => proto_to_host(consts.get(bo).ok_or_else(|| {
                PareError::Runtime(format!(
                    "If '{}': branch output '{bo}' not computed",
                    n.display_name()
                ))
            })?)?,
        };
        env.insert(out.clone(), v);
    }
    Ok(())
}

/// Small integer tensors become constants of the piece (tract needs shape values at build
/// time); everything else is an input.
fn as_constant(t: &HostTensor) -> bool {
    !matches!(t.dtype(), DataType::FLOAT | DataType::DOUBLE) && t.len() <= 1 << 16
}

fn run_piece(
    model: &ModelProto,
    g: &GraphProto,
    piece: &[usize],
    later: &HashSet<String>,
    env: &mut HashMap<String, HostTensor>,
    consts: &HashMap<String, &TensorProto>,
) -> Result<()> {
    let nodes: Vec<NodeProto> = piece.iter().map(|&i| g.node[i].clone()).collect();
    let produced: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let mut reads: Vec<String> = Vec::new();
    for n in &nodes {
        for r in reads_of(n) {
            if !produced.contains(r.as_str()) && !reads.contains(&r) {
                reads.push(r);
            }
        }
    }
    let mut sub = GraphProto {
        name: Some("piece".into()),
        ..Default::default()
    };
    let mut specs = Vec::new();
    let mut inputs = Vec::new();
    for r in &reads {
        if let Some(t) = env.get(r) {
            if as_constant(t) {
                sub.initializer.push(host_to_proto(r, t));
            } else {
                specs.push(InputSpec {
                    name: r.clone(),
                    dtype: t.dtype(),
                    shape: t.shape.clone(),
                });
                sub.input
                    .push(crate::model::builder::value_info(r, t.dtype(), None));
                inputs.push(t.clone());
            }
        } else if let Some(t) = consts.get(r) {
            sub.initializer.push((*t).clone());
        } else {
            return Err(PareError::Runtime(format!(
                "tensor '{r}' is needed but was not computed"
            )));
        }
    }
    let outs: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty() && later.contains(o.as_str()))
        .cloned()
        .collect();
    if outs.is_empty() {
        return Ok(());
    }
    sub.output = outs
        .iter()
        .map(|o| crate::model::builder::value_info(o, DataType::FLOAT, None))
        .collect();
    sub.node = nodes;
    let m = ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        graph: Some(sub),
        functions: model.functions.clone(),
        ..Default::default()
    };
    let results = Runner::new(ENGINE, &m, &specs)?.run(&inputs)?;
    for (name, t) in outs.into_iter().zip(results) {
        env.insert(name, t);
    }
    Ok(())
}

/// A copy of `model` whose nodes (nested graphs included) have unique, non-empty names.
fn unique_node_names(model: &ModelProto) -> ModelProto {
    fn walk(g: &mut GraphProto, seen: &mut HashSet<String>, k: &mut usize) {
        for n in &mut g.node {
            if n.name().is_empty() || seen.contains(n.name()) {
                let base = if n.name().is_empty() {
                    n.op_type().to_string()
                } else {
                    n.name().to_string()
                };
                let mut name = format!("{base}#{k}");
                while seen.contains(&name) {
                    *k += 1;
                    name = format!("{base}#{k}");
                }
                *k += 1;
                n.name = Some(name);
            }
            seen.insert(n.name().to_string());
            for sub in n.subgraphs_mut() {
                walk(sub, seen, k);
            }
        }
    }
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        walk(g, &mut HashSet::new(), &mut 0);
    }
    m
}
