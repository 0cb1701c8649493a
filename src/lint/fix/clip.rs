//! Clip bounds as initializers (seed Q5): computed or Constant-node bounds become
//! initializers, a trailing empty input is dropped, an empty min before a max becomes the
//! lowest value of the type. Exactly the same computation.

use super::{FixAction, Pass, edit};
use crate::model::DataType;
use crate::model::proto::GraphProto;

fn lowest(dtype: DataType) -> Option<f64> {
    Some(match dtype {
        d if d.is_float() => f64::NEG_INFINITY,
        DataType::INT64 => i64::MIN as f64,
        DataType::INT32 => i32::MIN as f64,
        DataType::INT8 => i8::MIN as f64,
        DataType::UINT8 | DataType::UINT16 | DataType::UINT32 | DataType::UINT64 => 0.0,
        DataType::INT16 => i16::MIN as f64,
        _ => return None,
    })
}

pub fn clip_bounds(p: &mut Pass, g: &mut GraphProto) -> Vec<FixAction> {
    if p.cx.opset < 11 {
        return Vec::new();
    }
    let mut actions = Vec::new();
    let mut inits = Vec::new();
    for n in &mut g.node {
        if n.op_type() != "Clip" || !n.op_domain().is_empty() {
            continue;
        }
        let x = n.input.first().cloned().unwrap_or_default();
        let dtype = p.cx.dtype(&x).unwrap_or(DataType::FLOAT);
        let mut done = Vec::new();
        let mut unknown = false;
        for (i, what) in [(1usize, "min"), (2, "max")] {
            let Some(t) = n.input.get(i).cloned() else {
                continue;
            };
            if t.is_empty() || p.cx.is_initializer(&t) {
                continue;
            }
            let name = p.names.fresh(&format!("{}/{what}", n.display_name()));
            match p.constant_of(&t, &name) {
                Some(c) => {
                    inits.push(c);
                    n.input[i] = name;
                    done.push(format!("{what} as initializer"));
                }
                None => unknown = true,
            }
        }
        if unknown {
            continue; // a bound computed at run time cannot be made constant
        }
        // Drop trailing empty inputs: Clip(x, min, "") == Clip(x, min).
        while n.input.len() > 1 && n.input.last().is_some_and(String::is_empty) {
            n.input.pop();
            done.push("empty max input removed".to_string());
        }
        // An empty min followed by a max: the lowest value of the type.
        if n.input.len() == 3 && n.input[1].is_empty() {
            let name = p.names.fresh(&format!("{}/min", n.display_name()));
            if let Some(c) = lowest(dtype).and_then(|v| edit::tensor_f64(&name, dtype, &[], &[v])) {
                inits.push(c);
                n.input[1] = name;
                done.push("empty min replaced by -inf".to_string());
            }
        }
        if !done.is_empty() {
            actions.push(FixAction {
                fix: String::new(),
                rules: Vec::new(),
                nodes: vec![n.display_name()],
                description: format!("Clip '{}': {}", n.display_name(), done.join(", ")),
            });
        }
    }
    g.initializer.extend(inits);
    actions
}
