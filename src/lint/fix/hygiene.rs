//! Hygiene fixes: contradicting value_info, unused initializers, node names.

use std::collections::HashSet;

use super::{FixAction, Pass, edit};
use crate::lint::ctx::declared_info;
use crate::model::proto::GraphProto;
use crate::model::shape::Dim;

fn act(nodes: Vec<String>, description: String) -> FixAction {
    FixAction {
        fix: String::new(),
        rules: Vec::new(),
        nodes,
        description,
    }
}

pub fn value_info(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let mut dropped = Vec::new();
    g.value_info.retain(|vi| {
        let decl = declared_info(vi);
        let Some(inf) = p.un.shapes.get(vi.name()) else {
            return true;
        };
        let bad_dtype = matches!((decl.dtype, inf.dtype), (Some(a), Some(b)) if a != b);
        let bad_shape = match (&decl.shape, &inf.shape) {
            (Some(a), Some(b)) => {
                a.len() != b.len()
                    || a.iter()
                        .zip(b)
                        .any(|(x, y)| matches!((x, y), (Dim::Known(p), Dim::Known(q)) if p != q))
            }
            _ => false,
        };
        if bad_dtype || bad_shape {
            dropped.push(vi.name().to_string());
            false
        } else {
            true
        }
    });
    if dropped.is_empty() {
        return Vec::new();
    }
    vec![act(
        Vec::new(),
        format!(
            "dropped {} contradicting value_info entr{}: {}",
            dropped.len(),
            if dropped.len() == 1 { "y" } else { "ies" },
            crate::lint::rules::list(&dropped, 4)
        ),
    )]
}

pub fn drop_unused(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let unused: HashSet<String> = g
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| !p.cx.used.contains(n.as_str()))
        .collect();
    if unused.is_empty() {
        return Vec::new();
    }
    g.initializer.retain(|t| !unused.contains(t.name()));
    g.input.retain(|i| !unused.contains(i.name()));
    let mut names: Vec<String> = unused.into_iter().collect();
    names.sort();
    vec![act(
        Vec::new(),
        format!(
            "dropped {} unused initializer(s): {}",
            names.len(),
            crate::lint::rules::list(&names, 4)
        ),
    )]
}

pub fn names(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    fn walk(
        g: &mut GraphProto,
        p: &mut Pass,
        seen: &mut HashSet<String>,
        renamed: &mut Vec<String>,
        named: &mut usize,
    ) {
        for n in &mut g.node {
            if n.name().is_empty() {
                let base = format!("{}_{}", n.op_type(), *named);
                let fresh = p.names.fresh(&base);
                n.name = Some(fresh.clone());
                seen.insert(fresh);
                *named += 1;
            } else if !seen.insert(n.name().to_string()) {
                let fresh = p.names.fresh(n.name());
                renamed.push(format!("{} → {fresh}", n.name()));
                n.name = Some(fresh.clone());
                seen.insert(fresh);
            }
            for sub in n.subgraphs_mut() {
                walk(sub, p, seen, renamed, named);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut renamed = Vec::new();
    let mut named = 0;
    walk(g, p, &mut seen, &mut renamed, &mut named);
    let mut out = Vec::new();
    if named > 0 {
        out.push(act(
            Vec::new(),
            format!("named {named} unnamed node(s) <op>_<n>"),
        ));
    }
    if !renamed.is_empty() {
        out.push(act(
            Vec::new(),
            format!(
                "renamed {} duplicate node name(s): {}",
                renamed.len(),
                crate::lint::rules::list(&renamed, 4)
            ),
        ));
    }
    let _ = edit::prune_value_info;
    out
}
