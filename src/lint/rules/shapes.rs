//! Shape computations: subgraphs pare can fold under the known shapes (P11), shapes taken
//! from tensor values (Q2), and nodes pare's own shape inference could not handle.

use super::{LintCtx, Rule, Severity, Sink, list};
use crate::lint::ctx::Origin;
use crate::lint::fix::FixKind;
use crate::model::DataType;

pub const RULES: &[Rule] = &[
    Rule {
        id: "G12",
        title: "Shape taken from tensor values (data-dependent shape)",
        seed_case: Some("Q2"),
        applies: "TensorRT < 8.5: error; 8.5+: warning",
        explanation: "Slicing, reshaping or resizing with bounds computed from tensor *values* (an argmax, a \
            count, a mask) gives an output shape known only at run time. TensorRT before 8.5 cannot build \
            that; later versions can, with an output allocator and fewer optimisations. Quantizers and \
            calibrators often cannot handle such nodes either.",
        snippet: "# keep shapes static: slice with Python ints, mask instead of indexing with tensors\n\
            y = x[:, :k]                   # k a Python int, not k = int(t.argmax()) traced as a tensor\n\
            y = torch.where(mask, x, torch.zeros_like(x))",
        fix: None,
        check: data_dependent,
    },
    Rule {
        id: "G11",
        title: "Shape computations that fold to constants",
        seed_case: Some("P11"),
        applies: "all targets: info (TensorRT 7.x needs many of these as constants)",
        explanation: "Exporters compute sizes at run time: Shape → Gather → Div → Concat → Reshape, or \
            F.pad's ConstantOfShape → Concat → Reshape → Slice → Cast chain. Under known input shapes \
            pare evaluates them; pare fix replaces them by constants, which older parsers require and \
            every runtime builds faster.",
        snippet: "# use Python ints for sizes in forward():\n\
            h, w = int(x.shape[2]), int(x.shape[3])\n\
            y = F.interpolate(y, size=(h, w), mode=\"bilinear\")",
        fix: Some(FixKind::FoldShapes),
        check: foldable,
    },
    Rule {
        id: "G10",
        title: "Nodes pare's shape inference could not resolve",
        seed_case: Some("P12"),
        applies: "all targets: info",
        explanation: "pare infers shapes itself (without running the model). Where it could not — an unknown \
            or custom op, a missing input shape — rules that need shapes skip those nodes; pin input shapes \
            with --input-shape to resolve more.",
        snippet: "# give every graph input a shape when exporting:\n\
            torch.onnx.export(model, example_input, \"model.onnx\", input_names=[\"input\"])",
        fix: None,
        check: inference_gaps,
    },
];

/// Inputs that set an output's shape, per op.
fn shape_inputs(op: &str) -> &'static [(usize, &'static str)] {
    match op {
        "Slice" => &[(1, "starts"), (2, "ends"), (4, "steps")],
        "Reshape" => &[(1, "shape")],
        "Expand" => &[(1, "shape")],
        "Tile" => &[(1, "repeats")],
        "ConstantOfShape" => &[(0, "shape")],
        "Range" => &[(0, "start"), (1, "limit"), (2, "delta")],
        "Resize" => &[(2, "scales"), (3, "sizes")],
        "Pad" => &[(1, "pads")],
        "TopK" => &[(1, "K")],
        "OneHot" => &[(1, "depth")],
        _ => &[],
    }
}

fn data_dependent(cx: &LintCtx, sink: &mut Sink) {
    let Some(v) = cx.target.trt() else { return };
    for nr in &cx.nodes {
        let n = nr.node;
        if !n.op_domain().is_empty() {
            continue;
        }
        let hits: Vec<String> = shape_inputs(n.op_type())
            .iter()
            .filter_map(|&(i, what)| {
                let t = cx.input(n, i);
                (!t.is_empty() && cx.origin(t) == Origin::Data)
                    .then(|| format!("{what} from {}", cx.lineage(t, 4)))
            })
            .collect();
        if hits.is_empty() {
            continue;
        }
        let construct = if n.op_type() == "Slice" {
            "tensor slicing with data-dependent bounds"
        } else {
            "a data-dependent shape"
        };
        sink.emit(
            if v < 805 { Severity::Error } else { Severity::Warning },
            vec![n.display_name()],
            format!(
                "{} takes its {} — {construct}: {}",
                n.op_type(),
                hits.join(", "),
                if v < 805 {
                    format!("{} needs output shapes computable from input shapes (data-dependent shapes from 8.5)", cx.target.short())
                } else {
                    format!("{} supports it with an output allocator, at the cost of optimisations", cx.target.short())
                }
            ),
            false,
        );
    }
}

fn foldable(cx: &LintCtx, sink: &mut Sink) {
    let mut nodes = Vec::new();
    let mut ops: Vec<&str> = Vec::new();
    for nr in cx.nodes.iter().filter(|n| n.depth == 0) {
        let n = nr.node;
        if !n.op_domain().is_empty() || matches!(n.op_type(), "Constant" | "If" | "Loop" | "Scan") {
            continue;
        }
        let outs: Vec<&String> = n.output.iter().filter(|o| !o.is_empty()).collect();
        if outs.is_empty() || !outs.iter().all(|o| cx.is_known(o)) {
            continue;
        }
        let shapeish = outs.iter().all(|o| {
            cx.origin(o) == Origin::Shape
                || cx
                    .dtype(o)
                    .is_some_and(|d| d.is_integer() || d == DataType::BOOL)
        });
        if !shapeish {
            continue;
        }
        nodes.push(n.display_name());
        if !ops.contains(&n.op_type()) {
            ops.push(n.op_type());
        }
    }
    if nodes.is_empty() {
        return;
    }
    sink.emit(
        Severity::Info,
        nodes.clone(),
        format!(
            "{} node(s) compute values pare knows under these input shapes ({}): `pare fix` folds them into constants",
            nodes.len(),
            ops.join(", ")
        ),
        true,
    );
}

fn inference_gaps(cx: &LintCtx, sink: &mut Sink) {
    let d = &cx.a.shapes.diagnostics;
    if d.is_empty() {
        return;
    }
    let mut nodes: Vec<String> = d.iter().map(|x| x.node.clone()).collect();
    nodes.dedup();
    let first: Vec<String> = d
        .iter()
        .take(3)
        .map(|x| format!("{} ({}): {}", x.node, x.op_type, x.message))
        .collect();
    sink.emit(
        Severity::Info,
        nodes.clone(),
        format!(
            "shape inference left {} node(s) partly unresolved — {}",
            nodes.len(),
            list(&first, 3)
        ),
        false,
    );
}
