//! Shapes as tract computes them, keyed by ONNX tensor name: the reference pare's own
//! inference is checked against (tests, `--verify` style tooling).
//!
//! tract's ONNX parser names each tract node after the ONNX node and labels each outlet with
//! the ONNX tensor name, and returns the name → outlet map of its inference model. We run
//! tract's own analysis on that model (declared `value_info` ignored, so tract infers every
//! shape itself rather than echoing the exporter's), read the facts back by name, and then
//! fill what analysis left open from the typed model, whose outlets keep their labels.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::InputPins;

/// Fully concrete shapes tract infers for the tensors of a model's main graph, pinned inputs
/// applied. Tensors whose shape tract leaves symbolic or open are absent. `Err` when tract
/// cannot load or analyse the model.
pub fn tract_shapes(path: &Path, pins: &InputPins) -> Result<HashMap<String, Vec<i64>>, String> {
    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let proto = onnx
        .proto_model_for_path(path)
        .map_err(|e| format!("tract cannot read {}: {e:#}", path.display()))?;
    let dir = path.parent().and_then(Path::to_str);
    let parsed = onnx
        .parse(&proto, dir)
        .map_err(|e| format!("tract cannot parse {}: {e:#}", path.display()))?;
    let mut model = parsed.model;
    let names = parsed.outlets_by_name;
    let inputs = model.input_outlets().map_err(|e| e.to_string())?.to_vec();
    for (i, outlet) in inputs.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        if let Some(p) = pins.get(&name) {
            let fact = model
                .outlet_fact(*outlet)
                .map_err(|e| e.to_string())?
                .clone();
            let shape: TVec<usize> = p.iter().map(|&d| d.max(0) as usize).collect();
            let fact = match fact.datum_type.concretize() {
                Some(dt) => InferenceFact::dt_shape(dt, shape),
                None => InferenceFact::default().with_shape(shape),
            };
            model.set_input_fact(i, fact).map_err(|e| e.to_string())?;
        }
    }
    model
        .analyse(false)
        .map_err(|e| format!("tract cannot analyse {}: {e:#}", path.display()))?;
    let mut out = HashMap::new();
    for (name, outlet) in &names {
        let Ok(fact) = model.outlet_fact(*outlet) else {
            continue;
        };
        if let Some(dims) = fact.shape.concretize()
            && let Some(v) = dims
                .iter()
                .map(|d| d.to_i64().ok())
                .collect::<Option<Vec<_>>>()
        {
            out.insert(name.clone(), v);
        }
    }
    if out.len() < names.len()
        && let Ok(typed) = model.into_typed()
    {
        for node in typed.nodes() {
            for (ix, o) in node.outputs.iter().enumerate() {
                let Some(label) = typed.outlet_label(OutletId::new(node.id, ix)) else {
                    continue;
                };
                if out.contains_key(label) || !names.contains_key(label) {
                    continue;
                }
                if let Some(v) = o.fact.shape.as_concrete() {
                    out.insert(label.to_string(), v.iter().map(|&d| d as i64).collect());
                }
            }
        }
    }
    Ok(out)
}
