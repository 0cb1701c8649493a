//! Constant folding: `If` nodes whose condition is known (seed Q4), and shape computations
//! whose values pare knows (P11).

use std::collections::{HashMap, HashSet};

use super::{FixAction, Pass, edit};
use crate::error::Result;
use crate::lint::ctx::Origin;
use crate::model::DataType;
use crate::model::proto::{GraphProto, NodeProto};

fn action(nodes: Vec<String>, description: String) -> FixAction {
    FixAction {
        fix: String::new(),
        rules: Vec::new(),
        nodes,
        description,
    }
}

/// Inlines the taken branch of every main-graph `If` whose condition is known. The branch's
/// outputs take the If's output names, so everything downstream is untouched.
pub fn fold_if(p: &mut Pass, g: &mut GraphProto) -> Result<Vec<FixAction>> {
    let mut actions = Vec::new();
    let mut new_nodes: Vec<NodeProto> = Vec::with_capacity(g.node.len());
    let mut new_inits = Vec::new();
    let snapshot = g.clone();
    let old = std::mem::take(&mut g.node);
    for (idx, n) in old.into_iter().enumerate() {
        if n.op_type() != "If" || !n.op_domain().is_empty() {
            new_nodes.push(n);
            continue;
        }
        let cond_name = n.input.first().cloned().unwrap_or_default();
        let cond = p
            .ints(&cond_name)
            .and_then(|v| (v.len() == 1).then(|| v[0] != 0))
            .or_else(|| {
                p.floats(&cond_name)
                    .and_then(|v| (v.len() == 1).then(|| v[0] != 0.0))
            });
        let Some(cond) = cond else {
            new_nodes.push(n);
            continue;
        };
        let attr = if cond { "then_branch" } else { "else_branch" };
        let Some(branch) = n.attr(attr).and_then(|a| a.g.as_deref()).cloned() else {
            new_nodes.push(n);
            continue;
        };
        if !branch.sparse_initializer.is_empty()
            || branch.output.len() < n.output.iter().filter(|o| !o.is_empty()).count()
        {
            new_nodes.push(n);
            continue;
        }
        let if_name = n.display_name();
        let taken = defined_elsewhere(&snapshot, idx);
        let (nodes, inits) = inline_branch(p, &n, branch, &taken);
        let what: Vec<&str> = nodes
            .iter()
            .map(|x| x.op_type())
            .filter(|o| *o != "Constant")
            .collect();
        actions.push(action(
            vec![if_name.clone()],
            format!(
                "inlined the {} branch of If '{if_name}' (condition '{cond_name}' = {cond}{}): {}",
                if cond { "then" } else { "else" },
                {
                    let l = p.cx.lineage(&cond_name, 5);
                    if l.is_empty() {
                        String::new()
                    } else {
                        format!(", from {l}")
                    }
                },
                if what.is_empty() {
                    "pass-through".to_string()
                } else {
                    what.join(" + ")
                }
            ),
        ));
        new_nodes.extend(nodes);
        new_inits.extend(inits);
    }
    g.node = new_nodes;
    g.initializer.extend(new_inits);
    Ok(actions)
}

/// Names defined anywhere in the model except by node `skip` (its outputs and nested graphs).
fn defined_elsewhere(g: &GraphProto, skip: usize) -> HashSet<String> {
    fn add_graph(g: &GraphProto, out: &mut HashSet<String>) {
        out.extend(g.input.iter().map(|i| i.name().to_string()));
        out.extend(g.initializer.iter().map(|t| t.name().to_string()));
        for n in &g.node {
            out.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
            for (_, sub) in n.subgraphs() {
                add_graph(sub, out);
            }
        }
    }
    let mut out = HashSet::new();
    out.extend(g.input.iter().map(|i| i.name().to_string()));
    out.extend(g.initializer.iter().map(|t| t.name().to_string()));
    for (i, n) in g.node.iter().enumerate() {
        if i == skip {
            continue;
        }
        out.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        for (_, sub) in n.subgraphs() {
            add_graph(sub, &mut out);
        }
    }
    out
}

/// The branch's nodes and initializers, renamed into the parent graph.
fn inline_branch(
    p: &mut Pass,
    ifn: &NodeProto,
    mut branch: GraphProto,
    taken: &HashSet<String>,
) -> (Vec<NodeProto>, Vec<crate::model::proto::TensorProto>) {
    let prefix = ifn.display_name();
    let produced: Vec<String> = branch
        .node
        .iter()
        .flat_map(|x| x.output.iter().cloned())
        .filter(|o| !o.is_empty())
        .collect();
    let local_inits: Vec<String> = branch
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let mut map: HashMap<String, String> = HashMap::new();
    // Branch outputs produced inside the branch take the If's output names.
    for (k, out) in ifn.output.iter().enumerate() {
        if out.is_empty() {
            continue;
        }
        let bo = branch.output[k].name().to_string();
        if produced.contains(&bo) && !map.contains_key(&bo) {
            map.insert(bo, out.clone());
        }
    }
    // Other names defined in the branch keep theirs unless something else defines them.
    for name in produced.iter().chain(local_inits.iter()) {
        if !map.contains_key(name) && taken.contains(name) {
            let fresh = p.names.fresh(&format!("{prefix}/{name}"));
            map.insert(name.clone(), fresh);
        }
    }
    edit::rename_in_graph(&mut branch, &map);
    // Outputs not produced by a branch node (outer values, constants, an output repeated)
    // need an Identity to carry the If's output name.
    let mut extra = Vec::new();
    for (k, out) in ifn.output.iter().enumerate() {
        if out.is_empty() {
            continue;
        }
        let bo = branch.output[k].name().to_string();
        if &bo != out {
            let name = p.names.fresh(&format!("{prefix}/output_{k}"));
            extra.push(edit::node(&name, "Identity", &[&bo], &[out], Vec::new()));
        }
    }
    let mut nodes = branch.node;
    nodes.extend(extra);
    (nodes, branch.initializer)
}

/// Replaces shape computations whose values are known by constants: every main-graph node
/// (not Constant, If, Loop or Scan) whose outputs pare knows in full and that computes shapes
/// or integers is removed, and the tensors its consumers read become initializers of the
/// same name.
pub fn fold_shapes(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    let mut fold: HashSet<usize> = HashSet::new();
    for (i, n) in g.node.iter().enumerate() {
        if !n.op_domain().is_empty() || matches!(n.op_type(), "Constant" | "If" | "Loop" | "Scan") {
            continue;
        }
        let outs: Vec<&String> = n.output.iter().filter(|o| !o.is_empty()).collect();
        if outs.is_empty() || outs.iter().any(|o| outputs.contains(o.as_str())) {
            continue;
        }
        let ok = outs.iter().all(|o| {
            p.cx.is_known(o)
                && (p.cx.origin(o) == Origin::Shape
                    || p.cx
                        .dtype(o)
                        .is_some_and(|d| d.is_integer() || d == DataType::BOOL))
        });
        if ok {
            fold.insert(i);
        }
    }
    if fold.is_empty() {
        return Vec::new();
    }
    // Tensors of folded nodes that something outside the folded set reads.
    let mut needed: Vec<String> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if fold.contains(&i) {
            continue;
        }
        for r in edit::reads_of(n) {
            if let Some(&pi) = p.cx.producer.get(r.as_str())
                && p.cx.nodes[pi].depth == 0
                && fold.contains(&p.cx.nodes[pi].pos)
                && !needed.contains(&r)
            {
                needed.push(r);
            }
        }
    }
    let mut inits = Vec::new();
    let mut failed: HashSet<String> = HashSet::new();
    for t in &needed {
        match p.constant_of(t, t) {
            Some(c) => inits.push(c),
            None => {
                failed.insert(t.clone());
            }
        }
    }
    // Keep the producers of anything we could not materialise.
    let keep: HashSet<usize> = g
        .node
        .iter()
        .enumerate()
        .filter(|(i, n)| fold.contains(i) && n.output.iter().any(|o| failed.contains(o)))
        .map(|(i, _)| i)
        .collect();
    let mut removed = Vec::new();
    let mut ops: Vec<String> = Vec::new();
    let old = std::mem::take(&mut g.node);
    for (i, n) in old.into_iter().enumerate() {
        if fold.contains(&i) && !keep.contains(&i) {
            if !ops.iter().any(|o| o == n.op_type()) {
                ops.push(n.op_type().to_string());
            }
            removed.push(n.display_name());
        } else {
            g.node.push(n);
        }
    }
    if removed.is_empty() {
        return Vec::new();
    }
    let produced_inits: Vec<String> = inits.iter().map(|t| t.name().to_string()).collect();
    g.initializer.extend(inits);
    vec![action(
        removed.clone(),
        format!(
            "folded {} shape-computation node(s) ({}) into {} constant(s): {}",
            removed.len(),
            ops.join(", "),
            produced_inits.len(),
            crate::lint::rules::list(&produced_inits, 4)
        ),
    )]
}
