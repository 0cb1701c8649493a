//! Graph inputs: dynamic dims (seed Q11) and pinned shapes that contradict the model (Q8).

use super::{LintCtx, Rule, Severity, Sink};
use crate::lint::ctx::dims_str;
use crate::model::shape::Dim;
use crate::model::shape::TensorInfo;

pub const RULES: &[Rule] = &[
    Rule {
        id: "G4",
        title: "Input shape differs from the model's declared input",
        seed_case: Some("Q8"),
        applies: "all targets: error",
        explanation: "The shape given for an input (--input-shape, i.e. the shape you will feed) \
            contradicts a static dim or the rank the model declares. An engine built for one \
            shape and fed another fails at run time — TensorRT reports 'cuMemcpyHtoDAsync failed: \
            invalid argument' — so build and infer with one shape, or export with dynamic axes.",
        snippet: "# export with the shape you deploy, or declare the dim dynamic\n\
            torch.onnx.export(model, torch.randn(1, 3, 256, 512), \"model.onnx\",\n    \
            input_names=[\"input\"], dynamic_axes={\"input\": {2: \"height\", 3: \"width\"}})",
        fix: None,
        check: pin_mismatch,
    },
    Rule {
        id: "G3",
        title: "Dynamic input dimensions",
        seed_case: Some("Q11"),
        applies: "TensorRT: warning (needs optimization profiles); onnxruntime, tract: info",
        explanation: "Inputs with symbolic or unknown dims make TensorRT build for a range of \
            shapes: the builder needs an optimization profile (min/opt/max per input) and INT8 \
            calibration needs a calibration profile, else it calibrates one shape only. A \
            static-shape engine cannot serve inputs of other sizes.",
        snippet: "# static export (one engine per input size) ...\n\
            torch.onnx.export(model, torch.randn(1, 3, 256, 256), \"model.onnx\")  # no dynamic_axes\n\
            # ... or keep dynamic axes and give TensorRT a profile:\n\
            # trtexec --onnx=model.onnx --minShapes=img:1x3x128x128 \\\n\
            #         --optShapes=img:1x3x256x256 --maxShapes=img:4x3x512x512",
        fix: None,
        check: dynamic_dims,
    },
];

fn declared(cx: &LintCtx, name: &str) -> Option<TensorInfo> {
    let vi = cx.a.graph().input.iter().find(|v| v.name() == name)?;
    Some(crate::lint::ctx::declared_info(vi))
}

fn pin_mismatch(cx: &LintCtx, sink: &mut Sink) {
    for name in cx.graph_inputs() {
        let Some(pin) = cx.a.pins.get(name) else {
            continue;
        };
        let Some(decl) = declared(cx, name).and_then(|d| d.shape) else {
            continue;
        };
        let pin_s = pin
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let what = if decl.len() != pin.len() {
            Some(format!(
                "rank {} vs the declared rank {}",
                pin.len(),
                decl.len()
            ))
        } else {
            let diffs: Vec<String> = decl
                .iter()
                .zip(pin)
                .enumerate()
                .filter_map(|(k, (d, p))| match d {
                    Dim::Known(v) if v != p => Some(format!("dim {k}: declared {v}, given {p}")),
                    _ => None,
                })
                .collect();
            (!diffs.is_empty()).then(|| diffs.join("; "))
        };
        if let Some(what) = what {
            sink.emit_tensors(
                Severity::Error,
                vec![name.clone()],
                format!(
                    "input '{name}' is declared {} but --input-shape gives {pin_s} ({what}); build and run with one shape",
                    dims_str(&decl)
                ),
                false,
            );
        }
    }
}

fn dynamic_dims(cx: &LintCtx, sink: &mut Sink) {
    let mut dyn_inputs = Vec::new();
    let mut parts = Vec::new();
    let mut profile = Vec::new();
    for name in cx.graph_inputs() {
        let Some(decl) = declared(cx, name).and_then(|d| d.shape) else {
            dyn_inputs.push(name.clone());
            parts.push(format!("{name} (no declared shape)"));
            continue;
        };
        let dyn_dims: Vec<String> = decl
            .iter()
            .enumerate()
            .filter(|(_, d)| !matches!(d, Dim::Known(_)))
            .map(|(k, d)| match d {
                Dim::Sym(s) => format!("{k} ({s})"),
                _ => format!("{k} (?)"),
            })
            .collect();
        if dyn_dims.is_empty() {
            continue;
        }
        dyn_inputs.push(name.clone());
        parts.push(format!(
            "{name} {} — dims {}",
            dims_str(&decl),
            dyn_dims.join(", ")
        ));
        // A concrete example profile: pinned dims as opt, else 1 for batch and the declared value.
        let opt: Vec<i64> = match cx.a.pins.get(name) {
            Some(p) if p.len() == decl.len() => p.clone(),
            _ => decl
                .iter()
                .enumerate()
                .map(|(k, d)| d.known().unwrap_or(if k == 0 { 1 } else { 256 }))
                .collect(),
        };
        let scale = |f: f64| -> String {
            decl.iter()
                .zip(&opt)
                .enumerate()
                .map(|(k, (d, &o))| match d {
                    Dim::Known(v) => v.to_string(),
                    _ if k == 0 => (if f < 1.0 {
                        1
                    } else {
                        (o as f64 * f).round() as i64
                    })
                    .to_string(),
                    _ => ((o as f64 * f).round() as i64).max(1).to_string(),
                })
                .collect::<Vec<_>>()
                .join("x")
        };
        profile.push((name.clone(), scale(0.5), scale(1.0), scale(2.0)));
    }
    if dyn_inputs.is_empty() {
        return;
    }
    match cx.target {
        crate::lint::Target::TensorRt(_) => {
            let arg = |i: usize| {
                profile
                    .iter()
                    .map(|p| format!("{}:{}", p.0, [&p.1, &p.2, &p.3][i]))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            sink.emit_tensors(
                Severity::Warning,
                dyn_inputs,
                format!(
                    "dynamic input dims: {}. {} needs an optimization profile for them (e.g. trtexec --minShapes={} --optShapes={} --maxShapes={}); INT8 calibration covers only the shapes it is given — calibrate over several sizes",
                    parts.join("; "),
                    cx.target.short(),
                    arg(0),
                    arg(1),
                    arg(2)
                ),
                false,
            );
        }
        _ => sink.emit_tensors(
            Severity::Info,
            dyn_inputs,
            format!(
                "dynamic input dims: {}; {} handles them, pin them (--input-shape) to check shape-dependent rules",
                parts.join("; "),
                cx.target.short()
            ),
            false,
        ),
    }
}
