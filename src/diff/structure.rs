//! The structure half of `pare diff`: nodes added, removed, folded or changed, channel groups
//! whose width changed, and params/MACs per name scope.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::flat::Flat;
use super::matching::{Matching, match_nodes};
use crate::analysis::analyze_channels;
use crate::analysis::channels::Role;
use crate::model::Analysis;
use crate::model::proto::{AttributeProto, attribute_type as at};

/// A node of one model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeRef {
    pub name: String,
    pub op: String,
    /// Empty in the main graph; `IfName/then_branch` inside a body.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// How a node of A that B lacks went away without changing what is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoldKind {
    /// Folded into a neighbour (BatchNorm into its Conv, an Identity dropped).
    Folded,
    /// A control-flow node replaced by its body (a fixed `If`).
    Inlined,
}

/// A node of A that B absorbed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Folded {
    pub name: String,
    pub op: String,
    pub kind: FoldKind,
    /// The B node it went into, when one.
    pub into: Option<String>,
    /// Inlined control flow: nodes of its bodies that B dropped (the branch not taken).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One difference of a matched node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Op {
        before: String,
        after: String,
    },
    Renamed {
        before: String,
    },
    Attribute {
        name: String,
        before: String,
        after: String,
    },
    WeightShape {
        input: usize,
        before: Vec<i64>,
        after: Vec<i64>,
    },
    Inputs {
        before: usize,
        after: usize,
    },
    /// B reads this node's inputs through Q/DQ (A does not).
    Quantized,
    /// B's node came out of a body of A (`scope`).
    MovedFrom {
        scope: String,
    },
}

/// A matched node that differs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeChange {
    pub name: String,
    pub op: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub changes: Vec<Change>,
}

/// A channel group whose width changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupChange {
    pub group: usize,
    /// Nodes producing the group's channels.
    pub members: Vec<String>,
    pub before: i64,
    pub after: i64,
}

/// Params and MACs of one name scope before and after.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScopeCost {
    pub scope: String,
    pub params_before: u64,
    pub params_after: u64,
    pub macs_before: u64,
    pub macs_after: u64,
}

/// Everything the structure comparison found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Structure {
    pub nodes_a: usize,
    pub nodes_b: usize,
    pub matched: usize,
    /// Q/DQ nodes of B wrapping float nodes.
    pub qdq_nodes: usize,
    pub added: Vec<NodeRef>,
    pub removed: Vec<NodeRef>,
    pub folded: Vec<Folded>,
    pub changed: Vec<NodeChange>,
    pub changed_groups: Vec<GroupChange>,
    pub scopes: Vec<ScopeCost>,
    pub params_before: u64,
    pub params_after: u64,
    pub macs_before: u64,
    pub macs_after: u64,
}

/// The structure comparison plus the matching (the numeric half pairs tensors with it).
pub struct Compared<'a> {
    pub structure: Structure,
    pub a: Flat<'a>,
    pub b: Flat<'a>,
    pub matching: Matching,
}

/// Compares B's structure with A's.
pub fn compare<'a>(a: &'a Analysis, b: &'a Analysis) -> Compared<'a> {
    let fa = Flat::new(a.graph(), &a.index.topo);
    let fb = Flat::new(b.graph(), &b.index.topo);
    let m = match_nodes(&fa, &fb);
    let mut s = Structure {
        nodes_a: fa.nodes.len(),
        nodes_b: fb.nodes.len(),
        matched: m.a_to_b.iter().flatten().count(),
        qdq_nodes: m.wrapper.iter().filter(|w| **w).count(),
        ..Default::default()
    };
    for (k, n) in fb.nodes.iter().enumerate() {
        if m.b_to_a[k].is_none() && !m.wrapper[k] {
            s.added.push(node_ref(n));
        }
    }
    for (k, n) in fa.nodes.iter().enumerate() {
        match m.a_to_b[k] {
            Some(bk) => {
                let changes = node_changes(&fa, &fb, k, bk);
                if !changes.is_empty() {
                    let r = node_ref(&fb.nodes[bk]);
                    s.changed.push(NodeChange {
                        name: r.name,
                        op: r.op,
                        scope: r.scope,
                        changes,
                    });
                }
            }
            None => match fold_of(&fa, &fb, &m, k) {
                Some(f) => s.folded.push(f),
                None => s.removed.push(node_ref(n)),
            },
        }
    }
    // A group's width lives in its producers' weights: without a weight shape change no group
    // changed, and the channel analysis (the costliest step on big models) is skipped.
    let reshaped = s.changed.iter().any(|c| {
        c.changes
            .iter()
            .any(|x| matches!(x, Change::WeightShape { .. }))
    });
    if reshaped {
        s.changed_groups = changed_groups(a, &fa, &fb, &m);
    }
    absorb_dropped_bodies(&mut s);
    costs(a, b, &fa, &fb, &mut s);
    Compared {
        structure: s,
        a: fa,
        b: fb,
        matching: m,
    }
}

fn node_ref(n: &super::flat::FNode) -> NodeRef {
    NodeRef {
        name: n.node.display_name(),
        op: n.op().to_string(),
        scope: n.scope.clone(),
    }
}

fn node_changes(a: &Flat, b: &Flat, ak: usize, bk: usize) -> Vec<Change> {
    let (na, nb) = (&a.nodes[ak], &b.nodes[bk]);
    let mut out = Vec::new();
    if na.op() != nb.op() {
        out.push(Change::Op {
            before: na.op().into(),
            after: nb.op().into(),
        });
    }
    if na.name() != nb.name() && !na.name().is_empty() {
        out.push(Change::Renamed {
            before: na.name().into(),
        });
    }
    if na.scope != nb.scope {
        out.push(Change::MovedFrom {
            scope: na.scope.clone(),
        });
    }
    if na.node.attribute != nb.node.attribute {
        attribute_changes(&na.node.attribute, &nb.node.attribute, &mut out);
    }
    if na.node.input.len() != nb.node.input.len() {
        out.push(Change::Inputs {
            before: na.node.input.len(),
            after: nb.node.input.len(),
        });
    }
    for slot in 0..na.node.input.len().min(nb.node.input.len()) {
        let (wa, wb) = (a.weight_shape(ak, slot), b.weight_shape(bk, slot));
        if let (Some(wa), Some(wb)) = (wa, wb)
            && wa != wb
        {
            out.push(Change::WeightShape {
                input: slot,
                before: wa.to_vec(),
                after: wb.to_vec(),
            });
        }
    }
    if b.reads_dq(bk) && !a.reads_dq(ak) {
        out.push(Change::Quantized);
    }
    out
}

/// Attribute values as people read them; graphs are compared node by node instead.
fn attr_text(a: &AttributeProto) -> Option<String> {
    let t = a.r#type.unwrap_or(at::UNDEFINED);
    Some(match t {
        at::FLOAT => format!("{}", a.f.unwrap_or_default()),
        at::INT => format!("{}", a.i.unwrap_or_default()),
        at::STRING => String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned(),
        at::FLOATS => format!("{:?}", a.floats),
        at::INTS => format!("{:?}", a.ints),
        at::TENSOR => {
            a.t.as_ref()
                .map(|t| {
                    format!(
                        "tensor {:?} ({} bytes)",
                        t.dims,
                        t.raw_data.as_ref().map_or(0, |r| r.len())
                    )
                })
                .unwrap_or_default()
        }
        at::GRAPH | at::GRAPHS => return None,
        _ => format!("{:?}", a.strings),
    })
}

fn attribute_changes(xa: &[AttributeProto], xb: &[AttributeProto], out: &mut Vec<Change>) {
    let ma: BTreeMap<&str, Option<String>> = xa.iter().map(|a| (a.name(), attr_text(a))).collect();
    let mb: BTreeMap<&str, Option<String>> = xb.iter().map(|a| (a.name(), attr_text(a))).collect();
    let names: std::collections::BTreeSet<&str> = ma.keys().chain(mb.keys()).copied().collect();
    for name in names {
        let (va, vb) = (ma.get(name), mb.get(name));
        if va == vb || va.is_some_and(Option::is_none) || vb.is_some_and(Option::is_none) {
            continue;
        }
        let show =
            |v: Option<&Option<String>>| v.cloned().flatten().unwrap_or_else(|| "(unset)".into());
        out.push(Change::Attribute {
            name: name.to_string(),
            before: show(va),
            after: show(vb),
        });
    }
}

/// A removed A node that B absorbed: a control-flow node whose body nodes B has (inlined), or
/// a node between a matched producer and matched consumers that B wires together directly
/// (a folded BatchNorm, a dropped Identity).
fn fold_of(a: &Flat, b: &Flat, m: &Matching, k: usize) -> Option<Folded> {
    let n = &a.nodes[k];
    let fold = |kind, into: Option<usize>| Folded {
        name: n.node.display_name(),
        op: n.op().to_string(),
        kind,
        into: into.map(|i| b.nodes[i].node.display_name()),
        dropped: 0,
    };
    if n.node.subgraphs().next().is_some() {
        let prefix = format!("{}/", n.node.display_name());
        let inlined = a.nodes.iter().enumerate().any(|(j, x)| {
            x.scope.starts_with(&prefix)
                && m.a_to_b[j].is_some_and(|bj| b.nodes[bj].scope.is_empty())
        });
        if inlined {
            return Some(fold(FoldKind::Inlined, None));
        }
    }
    // The B producer of one of its outputs (a node that now computes it).
    for o in &n.node.output {
        if let Some(p) = b.producer_of(&n.scope, o) {
            return Some(fold(FoldKind::Folded, Some(p)));
        }
    }
    let producers: Vec<usize> = a.data_producers(k).into_iter().flatten().collect();
    let [p] = producers.as_slice() else {
        return None;
    };
    let bp = m.a_to_b[*p]?;
    let consumers = a.data_consumers(k);
    let wired = !consumers.is_empty()
        && consumers
            .iter()
            .all(|&c| m.a_to_b[c].is_some_and(|bc| b.data_producers(bc).contains(&Some(bp))));
    wired.then(|| fold(FoldKind::Folded, Some(bp)))
}

/// Nodes inside the bodies of an inlined `If` that B does not have are the branch not taken:
/// counted on the inlined node rather than listed one by one as removed.
fn absorb_dropped_bodies(s: &mut Structure) {
    for f in s.folded.iter_mut().filter(|f| f.kind == FoldKind::Inlined) {
        let prefix = format!("{}/", f.name);
        let before = s.removed.len();
        s.removed.retain(|n| !n.scope.starts_with(&prefix));
        f.dropped += before - s.removed.len();
    }
}

/// Groups of A whose producer weights have another width in B.
fn changed_groups(a: &Analysis, fa: &Flat, fb: &Flat, m: &Matching) -> Vec<GroupChange> {
    let ca = analyze_channels(a);
    let by_name: std::collections::HashMap<&str, usize> = fa.nodes[..fa.main]
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.name().is_empty())
        .map(|(k, n)| (n.name(), k))
        .collect();
    let mut out = Vec::new();
    for g in &ca.groups {
        let member = g
            .members
            .iter()
            .filter_map(|&i| ca.members.get(i))
            .min_by_key(|mm| mm.role != Role::ProducerWeight);
        let Some(mm) = member else { continue };
        let Some(&ak) = by_name.get(mm.node.as_str()) else {
            continue;
        };
        let Some(slot) = fa.nodes[ak].node.input.iter().position(|t| *t == mm.tensor) else {
            continue;
        };
        let before = fa
            .weight_shape(ak, slot)
            .and_then(|d| d.get(mm.axis))
            .copied();
        let after = m.a_to_b[ak]
            .and_then(|bk| fb.weight_shape(bk, slot))
            .and_then(|d| d.get(mm.axis))
            .copied();
        if let (Some(before), Some(after)) = (before, after)
            && before != after
        {
            out.push(GroupChange {
                group: g.id,
                members: g.producers.clone(),
                before,
                after,
            });
        }
    }
    out
}

/// The scope of a node name: its first path component (`/layer1/0/conv1/Conv` → `/layer1`).
pub fn scope_of(name: &str) -> &str {
    let Some(rest) = name.strip_prefix('/') else {
        return "(root)";
    };
    match rest.find('/') {
        Some(i) => &name[..=i],
        None => "/",
    }
}

/// Params (every weight element a node reads, INT8 included) and MACs per node of the main
/// graph, summed per scope; only scopes that changed are kept.
fn costs<'a>(a: &Analysis, b: &Analysis, fa: &Flat<'a>, fb: &Flat<'a>, s: &mut Structure) {
    let mut scopes: HashMap<&str, [u64; 4]> = HashMap::new();
    let mut tally = |f: &Flat<'a>, an: &Analysis, off: usize| -> (u64, u64) {
        let mut seen: HashSet<&str> = HashSet::new();
        let (mut tp, mut tm) = (0, 0);
        for (k, n) in f.nodes[..f.main].iter().enumerate() {
            let mut p = 0u64;
            for (slot, t) in n.node.input.iter().enumerate() {
                if let Some(d) = f.weight_shape(k, slot)
                    && seen.insert(f.unwrap_qdq("", t))
                    && n.op() != "Constant"
                {
                    p += d.iter().map(|&x| x.max(0) as u64).product::<u64>();
                }
            }
            let mac = crate::model::stats::node_macs(n.node, &an.shapes).unwrap_or(0);
            let e = scopes.entry(scope_of(n.node.name())).or_default();
            e[off] += p;
            e[off + 2] += mac;
            tp += p;
            tm += mac;
        }
        (tp, tm)
    };
    (s.params_before, s.macs_before) = tally(fa, a, 0);
    (s.params_after, s.macs_after) = tally(fb, b, 1);
    let mut changed: Vec<(&str, [u64; 4])> = scopes
        .into_iter()
        .filter(|(_, v)| v[0] != v[1] || v[2] != v[3])
        .collect();
    changed.sort_unstable_by_key(|(k, _)| *k);
    s.scopes = changed
        .into_iter()
        .map(|(scope, v)| ScopeCost {
            scope: scope.to_string(),
            params_before: v[0],
            params_after: v[1],
            macs_before: v[2],
            macs_after: v[3],
        })
        .collect();
}
