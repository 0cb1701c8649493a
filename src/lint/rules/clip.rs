//! `Clip` bounds (seed Q5).

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::fix::FixKind;

pub const RULES: &[Rule] = &[Rule {
    id: "L11",
    title: "Clip min/max not an initializer",
    seed_case: Some("Q5"),
    applies: "TensorRT ≤ 7.2: error (the importer asserts); 8.0+ falls back to elementwise ops",
    explanation: "From opset 11 Clip takes min and max as inputs. TensorRT 7.x reads them only from \
        initializers and asserts otherwise — including when an input is present but empty: \
        torch.clamp(x, min=0) without max exports Clip(x, min, \"\") and fails with 'Clip max value \
        must be an initializer!'. pare fix stores the bounds as initializers and drops the empty \
        input (a missing min becomes -inf), which computes exactly the same.",
    snippet: "x = torch.clamp(x, min=0.0, max=float(\"inf\"))   # give clamp an explicit max\n\
        x = torch.relu(x)                                # or, for min=0 only, use relu",
    fix: Some(FixKind::ClipBounds),
    check: clip,
}];

fn clip(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    if v >= 800 || cx.opset < 11 {
        return;
    }
    for nr in cx
        .nodes
        .iter()
        .filter(|n| n.node.op_type() == "Clip" && n.node.op_domain().is_empty())
    {
        let n = nr.node;
        let mut problems = Vec::new();
        let mut fixable = true;
        // The 7.x importer asserts on every bound input position it is given (1 and, with three
        // inputs, 2), whether the name is empty or computed.
        for (i, what) in [(1usize, "min"), (2, "max")] {
            if i >= n.input.len() {
                continue;
            }
            let t = cx.input(n, i);
            if t.is_empty() {
                problems.push(format!(
                    "{what} is an empty input{}",
                    if i == 2 {
                        " (torch.clamp without max)"
                    } else {
                        " (torch.clamp without min)"
                    }
                ));
            } else if !cx.is_weights(t) {
                let known = cx.is_known(t);
                fixable &= known;
                problems.push(format!(
                    "{what} '{t}' is computed ({}){}",
                    cx.lineage(t, 4),
                    if known {
                        ", value known"
                    } else {
                        ", value unknown"
                    }
                ));
            }
        }
        if problems.is_empty() {
            continue;
        }
        let which = if problems.iter().any(|p| p.starts_with("max")) {
            "max"
        } else {
            "min"
        };
        sink.emit(
            Severity::Error,
            vec![n.display_name()],
            format!(
                "Clip {}: {} asserts 'Clip {which} value must be an initializer!'{}",
                problems.join("; "),
                cx.target.short(),
                if fixable {
                    "; `pare fix` materialises the bounds as initializers"
                } else {
                    ""
                }
            ),
            fixable,
        );
    }
}
