//! Which node of B is which node of A. Names first (exporters keep them, and every pare
//! command keeps them), then the same name in another scope (an `If` whose branch was inlined
//! by a fix), then topology: an unmatched B node takes the unmatched A node of the same op that
//! reads the same (already matched) producers, weight shapes breaking ties. Q/DQ nodes in B
//! that A does not have are wrappers of the float node they feed, never "added".

use std::collections::HashMap;

use super::flat::Flat;

/// The mapping both ways.
pub struct Matching {
    /// A node → B node.
    pub a_to_b: Vec<Option<usize>>,
    /// B node → A node.
    pub b_to_a: Vec<Option<usize>>,
    /// B nodes that are Q/DQ wrappers (A has no Q/DQ node of that name).
    pub wrapper: Vec<bool>,
}

impl Matching {
    fn link(&mut self, a: usize, b: usize) {
        self.a_to_b[a] = Some(b);
        self.b_to_a[b] = Some(a);
    }
}

/// Matches B's nodes onto A's.
pub fn match_nodes(a: &Flat, b: &Flat) -> Matching {
    let mut m = Matching {
        a_to_b: vec![None; a.nodes.len()],
        b_to_a: vec![None; b.nodes.len()],
        wrapper: vec![false; b.nodes.len()],
    };
    let mut by_name: HashMap<(&str, &str), usize> = HashMap::new();
    let mut by_bare: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, n) in a.nodes.iter().enumerate() {
        if !n.name().is_empty() {
            by_name.insert((n.scope.as_str(), n.name()), k);
            by_bare.entry(n.name()).or_default().push(k);
        }
    }
    // 1. Same scope, same name.
    for (k, n) in b.nodes.iter().enumerate() {
        if n.name().is_empty() {
            continue;
        }
        if let Some(&ak) = by_name.get(&(n.scope.as_str(), n.name()))
            && m.a_to_b[ak].is_none()
        {
            m.link(ak, k);
        }
    }
    // 2. Same name in another scope (inlined or moved into a body).
    for (k, n) in b.nodes.iter().enumerate() {
        if m.b_to_a[k].is_some() || n.name().is_empty() {
            continue;
        }
        if let Some(ak) = by_bare
            .get(n.name())
            .and_then(|v| v.iter().copied().find(|&ak| m.a_to_b[ak].is_none()))
        {
            m.link(ak, k);
        }
    }
    for (k, n) in b.nodes.iter().enumerate() {
        m.wrapper[k] = m.b_to_a[k].is_none() && n.is_qdq();
    }
    match_by_topology(a, b, &mut m);
    m
}

/// Third pass: unmatched B nodes, in order, take an unmatched A node of the same op and scope
/// that reads the A counterparts of their producers; when none of their producers is
/// matched, the next unmatched A node of the same op, scope and weight shapes.
fn match_by_topology(a: &Flat, b: &Flat, m: &mut Matching) {
    let mut buckets: HashMap<Signature, Vec<usize>> = HashMap::new();
    for k in (0..a.nodes.len()).rev() {
        if m.a_to_b[k].is_none() {
            buckets.entry(signature(a, k)).or_default().push(k);
        }
    }
    for k in 0..b.nodes.len() {
        if m.b_to_a[k].is_some() || m.wrapper[k] {
            continue;
        }
        let bn = &b.nodes[k];
        let mut best: Option<(usize, usize)> = None;
        for p in b.data_producers(k).into_iter().flatten() {
            let Some(ap) = m.b_to_a[p] else { continue };
            for c in a.data_consumers(ap) {
                let an = &a.nodes[c];
                if m.a_to_b[c].is_some() || an.op() != bn.op() || an.scope != bn.scope {
                    continue;
                }
                let score = topo_score(a, b, m, c, k);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, c));
                }
            }
        }
        let pick = best.map(|(_, c)| c).or_else(|| {
            let v = buckets.get_mut(&signature(b, k))?;
            while let Some(c) = v.pop() {
                if m.a_to_b[c].is_none() {
                    return Some(c);
                }
            }
            None
        });
        if let Some(c) = pick {
            m.link(c, k);
        }
    }
}

/// How many input slots of A node `ak` and B node `bk` agree (matched producers, weight
/// shapes).
fn topo_score(a: &Flat, b: &Flat, m: &Matching, ak: usize, bk: usize) -> usize {
    let pa = a.data_producers(ak);
    let pb = b.data_producers(bk);
    let mut s = 0;
    for (slot, (x, y)) in pa.iter().zip(&pb).enumerate() {
        match (x, y) {
            (Some(x), Some(y)) if m.b_to_a[*y] == Some(*x) => s += 2,
            _ => {}
        }
        if a.weight_shape(ak, slot).is_some()
            && a.weight_shape(ak, slot) == b.weight_shape(bk, slot)
        {
            s += 1;
        }
    }
    s
}

/// Scope, op and weight shapes: what a node is when its name and neighbours say nothing.
type Signature = (String, String, Vec<Vec<i64>>);

fn signature(f: &Flat, k: usize) -> Signature {
    let n = &f.nodes[k];
    let shapes = (0..n.node.input.len())
        .filter_map(|s| f.weight_shape(k, s).map(<[i64]>::to_vec))
        .collect();
    (n.scope.clone(), n.op().to_string(), shapes)
}
