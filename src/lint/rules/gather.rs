//! `GatherElements` (seed Q6).

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::fix::FixKind;
use crate::ops::IndexFlow;

pub const RULES: &[Rule] = &[Rule {
    id: "L12",
    title: "GatherElements",
    seed_case: Some("Q6"),
    applies: "TensorRT 7.0/7.1: error (not supported); 7.2–8.0: error with negative indices; 8.2+: fine",
    explanation: "torch.gather exports GatherElements. TensorRT 7.1's parser has no importer for it \
        (7.2 added one, supported in 8.x); until 8.2 it also mis-handles negative indices. On 7.1 the \
        way out is a newer TensorRT, a rewrite in the source, or splitting the model before the gather \
        and running the tail outside TensorRT (pare extract). Negative constant indices are normalised \
        by pare fix.",
    snippet: "# TensorRT 7.1: express the pick without torch.gather, e.g. one-hot + sum\n\
        onehot = F.one_hot(idx.squeeze(1), num_classes=x.shape[1]).permute(0, 3, 1, 2).to(x.dtype)\n\
        picked = (x * onehot).sum(dim=1, keepdim=True)   # == torch.gather(x, 1, idx)\n\
        # and never pass negative indices: idx = idx % x.shape[dim]",
    fix: Some(FixKind::GatherIndices),
    check: gather_elements,
}];

/// True when the indices tensor provably holds no negative values.
pub fn non_negative(cx: &LintCtx, name: &str) -> bool {
    let mut cur = name.to_string();
    for _ in 0..32 {
        if let Some(v) = cx.ints(&cur) {
            return v.iter().all(|&x| x >= 0);
        }
        let Some(p) = cx.producer_of(&cur) else {
            return false;
        };
        let flow = crate::ops::lookup(p.op_type()).map_or(IndexFlow::None, |d| d.index);
        match flow {
            IndexFlow::NonNegative => return true,
            IndexFlow::NonNegativeSecond => return p.output.get(1).is_some_and(|o| *o == cur),
            IndexFlow::Preserves => {
                cur = cx.input(p, 0).to_string();
            }
            IndexFlow::AllInputs => {
                return p
                    .input
                    .iter()
                    .filter(|i| !i.is_empty())
                    .all(|i| non_negative(cx, i));
            }
            // The normalisation `pare fix` inserts: Where(Less(i, 0), Add(i, dim), i).
            IndexFlow::None if p.op_type() == "Where" => {
                let (c, t, e) = (cx.input(p, 0), cx.input(p, 1), cx.input(p, 2));
                let less = cx.producer_of(c).filter(|l| l.op_type() == "Less");
                let add = cx.producer_of(t).filter(|a| a.op_type() == "Add");
                return match (less, add) {
                    (Some(l), Some(a)) => {
                        cx.input(l, 0) == e
                            && cx
                                .ints(cx.input(l, 1))
                                .is_some_and(|z| z.iter().all(|&v| v == 0))
                            && cx.input(a, 0) == e
                            && non_negative(cx, cx.input(a, 1))
                    }
                    _ => false,
                };
            }
            _ => return false,
        }
    }
    false
}

fn gather_elements(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v >= 802 {
        return;
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "GatherElements" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let idx = cx.input(n, 1);
        if v < 702 {
            sink.emit(
                Severity::Error,
                vec![n.display_name()],
                format!(
                    "GatherElements (torch.gather, indices from {}) is not supported by {} (imported from TensorRT 7.2, negative indices from 8.2): upgrade, rewrite it in the source, or split the model before it",
                    {
                        let l = cx.lineage(idx, 3);
                        if l.is_empty() { format!("'{idx}'") } else { l }
                    },
                    cx.target.short()
                ),
                false,
            );
            continue;
        }
        if let Some(vals) = cx.ints(idx) {
            if vals.iter().any(|&x| x < 0) {
                sink.emit(
                    Severity::Error,
                    vec![n.display_name()],
                    format!(
                        "GatherElements has negative constant indices: {} mis-handles them (fixed in 8.2); `pare fix` normalises them (idx < 0 ? idx + dim : idx)",
                        cx.target.short()
                    ),
                    true,
                );
            }
        } else if !non_negative(cx, idx) {
            sink.emit(
                Severity::Warning,
                vec![n.display_name()],
                format!(
                    "GatherElements indices '{idx}' are computed at run time and may be negative: {} mis-handles negative indices (fixed in 8.2); `pare fix` inserts the normalisation",
                    cx.target.short()
                ),
                true,
            );
        }
    }
}
