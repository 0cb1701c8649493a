//! Resize with known scales on a static input → constant `sizes`, when every output size is
//! exactly `input × scale` (then both forms compute the same coordinates).

use super::{FixAction, Pass, edit};
use crate::model::DataType;
use crate::model::proto::GraphProto;

pub fn resize_sizes(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    let opset = p.cx.opset;
    if opset < 11 {
        return Vec::new();
    }
    let mut actions = Vec::new();
    let mut inits = Vec::new();
    for n in &mut g.node {
        if n.op_type() != "Resize" || !n.op_domain().is_empty() {
            continue;
        }
        if n.attr("axes").is_some()
            || n.attr_s("coordinate_transformation_mode").as_deref() == Some("tf_crop_and_resize")
        {
            continue;
        }
        let x = n.input.first().cloned().unwrap_or_default();
        let scales = n.input.get(2).cloned().unwrap_or_default();
        let sizes = n.input.get(3).cloned().unwrap_or_default();
        let empty =
            |p: &Pass, t: &str| t.is_empty() || p.cx.floats(t).is_some_and(|v| v.is_empty());
        if !empty(p, &sizes) || empty(p, &scales) {
            continue;
        }
        let (Some(s), Some(shape)) = (p.cx.floats(&scales), p.cx.static_shape(&x)) else {
            continue;
        };
        if s.len() != shape.len() {
            continue;
        }
        let out: Vec<i64> = shape
            .iter()
            .zip(&s)
            .map(|(&d, &f)| (d as f64 * f).floor() as i64)
            .collect();
        // Exact: out = in * scale, and out / in gives the same f32 scale back.
        let exact = shape.iter().zip(&s).zip(&out).all(|((&d, &f), &o)| {
            (d as f64 * f - o as f64).abs() < 1e-9
                && (d == 0 || ((o as f32) / (d as f32)) == f as f32)
        });
        if !exact {
            continue;
        }
        // Record the pin dependence of what was used.
        p.floats(&scales);
        p.static_shape(&x);
        let name = p.names.fresh(&format!("{}/sizes", n.display_name()));
        let Some(t) = edit::tensor_i64(&name, DataType::INT64, &[out.len() as i64], &out) else {
            continue;
        };
        inits.push(t);
        let roi = n.input.get(1).cloned().unwrap_or_default();
        if opset >= 13 {
            n.input = vec![x.clone(), roi, String::new(), name];
        } else {
            // Opset 11/12 require roi and scales inputs: empty tensors.
            let roi = if roi.is_empty() {
                let r = p.names.fresh(&format!("{}/roi", n.display_name()));
                if let Some(t) = edit::tensor_f64(&r, DataType::FLOAT, &[0], &[]) {
                    inits.push(t);
                }
                r
            } else {
                roi
            };
            let es = p.names.fresh(&format!("{}/no_scales", n.display_name()));
            if let Some(t) = edit::tensor_f64(&es, DataType::FLOAT, &[0], &[]) {
                inits.push(t);
            }
            n.input = vec![x.clone(), roi, es, name];
        }
        actions.push(FixAction {
            fix: String::new(),
            rules: Vec::new(),
            nodes: vec![n.display_name()],
            description: format!(
                "Resize '{}': scales {s:?} on {shape:?} → constant sizes {out:?}",
                n.display_name()
            ),
        });
    }
    g.initializer.extend(inits);
    actions
}
