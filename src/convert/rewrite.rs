//! The graph rewrite: decides per node whether it runs in the low precision or stays FP32,
//! then retypes tensors and inserts the Casts at the boundaries — one Cast per tensor and
//! precision, placed before its first reader so the node order stays topological, and never
//! a Cast of a Cast. Nested graphs (If/Loop/Scan bodies) are rewritten the same way with
//! their inputs and outputs kept FP32, reading outer-scope tensors through Casts of their own.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::{KeepReason, KeptNode, Precision};
use crate::model::DataType;
use crate::model::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TypeValue, ValueInfoProto,
};
use crate::model::tensor::{f32_to_f16, to_f32};

/// ModelOpt AutoCast's default: activations beyond this magnitude keep their node FP32.
pub const ACTIVATION_LIMIT: f32 = 512.0;
/// Largest finite FP16 value: an initializer beyond it would become infinity.
pub const FP16_MAX: f32 = 65504.0;

/// Whether a tensor is in FP32 or the low precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Prec {
    F32,
    Low,
}

/// What the rewrite needs to know beyond the graph.
pub struct Inputs<'a> {
    pub precision: Precision,
    pub opset: i64,
    /// Element type of every tensor (all graphs), from shape inference and declarations.
    pub dtype: &'a dyn Fn(&str) -> Option<DataType>,
    /// Largest measured magnitude per tensor (main graph; `None`: not measured).
    pub ranges: Option<&'a HashMap<String, f32>>,
    /// Node exclusion (`--exclude`): returns the pattern that matched.
    pub excluded: &'a dyn Fn(&NodeProto) -> Option<String>,
    /// Keep the main graph's float inputs and outputs FP32.
    pub keep_io_types: bool,
}

/// What the rewrite did.
#[derive(Default)]
pub struct Outcome {
    pub kept: Vec<KeptNode>,
    /// Float nodes now computing in the low precision (all graphs).
    pub converted: Vec<String>,
    pub casts: usize,
    pub initializers_converted: usize,
    /// Initializer values that became zero in the low precision (below its smallest subnormal).
    pub flushed_to_zero: u64,
}

fn is_float(d: Option<DataType>) -> bool {
    d == Some(DataType::FLOAT)
}

/// Inputs whose type the ONNX schema fixes independently of the data type (Resize's roi and
/// scales, Upsample's scales): they stay FP32 even in a converted node.
fn fixed_fp32_input(op: &str, i: usize) -> bool {
    matches!((op, i), ("Resize", 1) | ("Resize", 2) | ("Upsample", 1))
}

/// Ops pare never converts: their float types come from attributes or the schema allows only
/// FP32 (NonMaxSuppression), or they generate values (random, ranges) whose FP16 rounding
/// changes counts.
fn never_converted(op: &str) -> bool {
    matches!(
        op,
        "NonMaxSuppression"
            | "RandomNormal"
            | "RandomUniform"
            | "RandomNormalLike"
            | "RandomUniformLike"
            | "Multinomial"
            | "Bernoulli"
            | "EyeLike"
            | "ConstantOfShape"
            | "Range"
            | "OneHot"
            | "RoiAlign"
            | "MaxRoiPool"
    )
}

/// Inputs that carry shapes, sizes, axes or scales (from the op table's constant inputs):
/// the float arithmetic that computes them must stay exact.
fn shape_input(n: &NodeProto, i: usize, opset: i64) -> bool {
    let op = n.op_type();
    if matches!(op, "QuantizeLinear" | "DequantizeLinear") || (op == "Pad" && i == 2) {
        return false;
    }
    crate::ops::lookup(op).is_some_and(|d| d.const_positions(opset).iter().any(|&(p, _)| p == i))
}

/// Tensors of `g` that flow into a shape input (within `g`): their producers stay FP32.
fn shape_tensors(g: &GraphProto, opset: i64) -> HashSet<String> {
    let producer: HashMap<&str, &NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut stack: Vec<&str> = Vec::new();
    for n in &g.node {
        for (i, t) in n.input.iter().enumerate() {
            if !t.is_empty() && (shape_input(n, i, opset) || fixed_fp32_input(n.op_type(), i)) {
                stack.push(t);
            }
        }
    }
    let mut seen = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t.to_string()) {
            continue;
        }
        let Some(p) = producer.get(t) else { continue };
        // Shape and Size read only their input's metadata: the walk stops there.
        if matches!(p.op_type(), "Shape" | "Size") {
            continue;
        }
        stack.extend(p.input.iter().filter(|s| !s.is_empty()).map(String::as_str));
    }
    seen
}

/// Largest magnitude of a float initializer or Constant value (`None`: not float or unreadable).
fn tensor_max(t: &TensorProto) -> Option<f32> {
    if DataType(t.data_type()) != DataType::FLOAT {
        return None;
    }
    let v = to_f32(t).ok()?;
    Some(v.iter().fold(0f32, |m, x| m.max(x.abs())))
}

/// The low-precision copy of a float tensor; counts values flushed to zero.
fn lower(t: &TensorProto, p: Precision, flushed: &mut u64) -> Option<TensorProto> {
    let v = to_f32(t).ok()?;
    let mut raw = Vec::with_capacity(v.len() * 2);
    for x in v {
        let h = match p {
            Precision::Fp16 => f32_to_f16(x),
            Precision::Bf16 => f32_to_bf16(x),
        };
        if x != 0.0 && (h & 0x7fff) == 0 {
            *flushed += 1;
        }
        raw.extend_from_slice(&h.to_le_bytes());
    }
    Some(TensorProto {
        name: t.name.clone(),
        dims: t.dims.clone(),
        data_type: Some(p.dtype().0),
        raw_data: Some(Bytes::from(raw)),
        doc_string: t.doc_string.clone(),
        ..Default::default()
    })
}

/// float32 to bfloat16, round to nearest even (NaN stays NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

struct GraphCx<'a, 'i> {
    inp: &'a Inputs<'i>,
    /// Precision of every float tensor visible here (outer scopes included).
    prec: HashMap<String, Prec>,
    /// Whether activations of this graph were measured (main graph) and, for a nested graph,
    /// why it is not converted at all.
    body_block: Option<String>,
    path: String,
}

/// Decides one node of a graph; `None`: converted.
fn decide(
    cx: &GraphCx,
    n: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    shape_ts: &HashSet<String>,
) -> Option<(KeepReason, String)> {
    let op = n.op_type();
    let dtype = cx.inp.dtype;
    if let Some(p) = (cx.inp.excluded)(n) {
        return Some((KeepReason::Excluded, format!("--exclude {p}")));
    }
    if let Some(why) = &cx.body_block {
        return Some((KeepReason::Subgraph, why.clone()));
    }
    if !n.op_domain().is_empty() && n.op_domain() != "ai.onnx" {
        return Some((
            KeepReason::OpType,
            format!(
                "custom-domain op {}.{op}: its types are unknown",
                n.op_domain()
            ),
        ));
    }
    if crate::ops::lookup(op).is_none() && op != "Cast" {
        return Some((
            KeepReason::OpType,
            format!("{op} is not in pare's op table"),
        ));
    }
    if never_converted(op) {
        return Some((
            KeepReason::OpType,
            format!("{op} keeps FP32 (types fixed by attribute or schema)"),
        ));
    }
    if n.subgraphs().next().is_some() {
        return Some((
            KeepReason::ControlFlow,
            "control flow: its interface stays FP32, its body is converted".into(),
        ));
    }
    if matches!(op, "QuantizeLinear" | "DequantizeLinear") && cx.inp.opset < 19 {
        return Some((
            KeepReason::OpType,
            format!(
                "opset {} Q/DQ scales must be FP32 (FP16 scales need opset 19)",
                cx.inp.opset
            ),
        ));
    }
    if let Some(o) = n.output.iter().find(|o| shape_ts.contains(o.as_str())) {
        return Some((
            KeepReason::ShapeTensor,
            format!("computes '{o}', a shape/scale/size input"),
        ));
    }
    let tensors = || n.input.iter().chain(&n.output).filter(|t| !t.is_empty());
    if let Some(t) = tensors().find(|t| dtype(t).is_none() && !inits.contains_key(t.as_str())) {
        return Some((KeepReason::UnknownType, format!("type of '{t}' unknown")));
    }
    if cx.inp.precision == Precision::Fp16 {
        for t in n.input.iter().filter(|t| !t.is_empty()) {
            if let Some(m) = inits.get(t.as_str()).and_then(|i| tensor_max(i))
                && m > FP16_MAX
            {
                return Some((
                    KeepReason::InitializerRange,
                    format!("initializer '{t}' reaches {m:.4e} > {FP16_MAX} (FP16 max)"),
                ));
            }
        }
        if let Some(m) = n.attr_t("value").and_then(tensor_max)
            && m > FP16_MAX
        {
            return Some((
                KeepReason::InitializerRange,
                format!("constant reaches {m:.4e} > {FP16_MAX} (FP16 max)"),
            ));
        }
        if let Some(r) = cx.inp.ranges {
            for t in tensors() {
                if let Some(&m) = r.get(t.as_str())
                    && (m.is_nan() || m > ACTIVATION_LIMIT)
                {
                    return Some((
                        KeepReason::ActivationRange,
                        format!("'{t}' measured at {m:.4e} > {ACTIVATION_LIMIT}"),
                    ));
                }
            }
        }
    }
    None
}

/// Rewrites the main graph; returns what it did.
pub fn rewrite(g: &mut GraphProto, inp: &Inputs) -> Outcome {
    let mut out = Outcome::default();
    let cx = GraphCx {
        inp,
        prec: HashMap::new(),
        body_block: None,
        path: String::new(),
    };
    rewrite_graph(g, cx, !inp.keep_io_types, &mut out);
    out
}

/// The body-level decision for a control-flow node: converted when its own float inputs and
/// outputs were measured within range (its body's activations cannot be watched).
fn body_block(cx: &GraphCx, n: &NodeProto) -> Option<String> {
    if let Some(why) = &cx.body_block {
        return Some(why.clone());
    }
    if cx.inp.precision == Precision::Bf16 {
        return None;
    }
    // Unmeasured (the model did not run): initializer ranges decide, as in the main graph.
    let r = cx.inp.ranges?;
    for t in n.input.iter().chain(&n.output).filter(|t| !t.is_empty()) {
        if is_float((cx.inp.dtype)(t)) {
            match r.get(t.as_str()) {
                Some(&m) if m <= ACTIVATION_LIMIT => {}
                Some(&m) => {
                    return Some(format!(
                        "body of {}: '{t}' measured at {m:.4e} > {ACTIVATION_LIMIT}",
                        n.display_name()
                    ));
                }
                None => {}
            }
        }
    }
    None
}

fn rewrite_graph(g: &mut GraphProto, mut cx: GraphCx, io_low: bool, out: &mut Outcome) {
    let inp = cx.inp;
    let dtype = inp.dtype;
    let shape_ts = shape_tensors(g, inp.opset);
    let old_inits = std::mem::take(&mut g.initializer);
    let inits: HashMap<&str, &TensorProto> = old_inits.iter().map(|t| (t.name(), t)).collect();
    // Decisions first: Constants and Casts follow their readers.
    let mut low: Vec<bool> = Vec::with_capacity(g.node.len());
    let mut reasons: Vec<Option<(KeepReason, String)>> = Vec::with_capacity(g.node.len());
    for n in &g.node {
        let r = decide(&cx, n, &inits, &shape_ts);
        low.push(r.is_none());
        reasons.push(r);
    }
    follow_readers(g, &mut low, &mut reasons, inp);
    // Graph inputs.
    for vi in &mut g.input {
        if is_float(dtype(vi.name())) && !inits.contains_key(vi.name()) {
            let p = if io_low { Prec::Low } else { Prec::F32 };
            if p == Prec::Low {
                set_elem_type(vi, inp.precision.dtype());
            }
            cx.prec.insert(vi.name().to_string(), p);
        }
    }
    let outputs: HashSet<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    let low_copy = lower_initializers(g, &old_inits, &inits, &low, &outputs, &mut cx, out);
    // Graph outputs computed in low precision but kept FP32: the producer writes a renamed
    // tensor and a final Cast restores the name.
    let mut out_casts: Vec<(String, String)> = Vec::new();
    if !io_low {
        let renames = rename_low_outputs(g, &low, &outputs, dtype);
        out_casts = renames;
    }
    // Walk the nodes, retyping and casting.
    let old_nodes = std::mem::take(&mut g.node);
    let producers: HashMap<String, NodeProto> = old_nodes
        .iter()
        .filter(|n| n.op_type() == "Cast")
        .flat_map(|n| n.output.iter().map(move |o| (o.clone(), n.clone())))
        .collect();
    let mut casts: HashMap<(String, Prec), String> = HashMap::new();
    for (k, mut n) in old_nodes.into_iter().enumerate() {
        let is_low = low[k];
        let op = n.op_type().to_string();
        for i in 0..n.input.len() {
            let t = n.input[i].clone();
            if t.is_empty() {
                continue;
            }
            let Some(&have) = cx.prec.get(&t) else {
                continue;
            };
            let wanted = if is_low && !fixed_fp32_input(&op, i) {
                Prec::Low
            } else {
                Prec::F32
            };
            if wanted == have {
                continue;
            }
            if wanted == Prec::Low
                && let Some(c) = low_copy.get(&t)
            {
                n.input[i] = c.clone();
                continue;
            }
            n.input[i] = cast_of(&t, wanted, &producers, &mut casts, g, &cx, out);
        }
        if is_low {
            if op == "Cast" && n.attr_i("to") == Some(DataType::FLOAT.0 as i64) {
                set_attr_i(&mut n, "to", inp.precision.dtype().0 as i64);
            }
            if op == "Constant" {
                lower_constant(&mut n, inp.precision, out);
            }
            out.converted
                .push(format!("{}{}", cx.path, n.display_name()));
        } else if let Some((reason, detail)) = reasons[k].take()
            && touches_float(&n, dtype)
        {
            out.kept.push(KeptNode {
                node: format!("{}{}", cx.path, n.display_name()),
                op: op.clone(),
                reason,
                detail,
            });
        }
        for o in &n.output {
            if is_float(dtype(o)) || out_casts.iter().any(|(r, _)| r == o) {
                cx.prec
                    .insert(o.clone(), if is_low { Prec::Low } else { Prec::F32 });
            }
        }
        if n.subgraphs().next().is_some() {
            let block = body_block(&cx, &n);
            let path = format!("{}{} > ", cx.path, n.display_name());
            for sub in n.subgraphs_mut() {
                let sub_cx = GraphCx {
                    inp,
                    prec: cx.prec.clone(),
                    body_block: block.clone(),
                    path: path.clone(),
                };
                rewrite_graph(sub, sub_cx, false, out);
            }
        }
        g.node.push(n);
    }
    for (renamed, name) in out_casts {
        g.node.push(cast_node(&renamed, &name, DataType::FLOAT));
        out.casts += 1;
    }
    // Graph outputs and value_info follow the tensors' new types.
    for vi in g.output.iter_mut().chain(g.value_info.iter_mut()) {
        if cx.prec.get(vi.name()) == Some(&Prec::Low) && is_float(dtype(vi.name())) {
            set_elem_type(vi, inp.precision.dtype());
        }
    }
}

/// Lowers the initializers whose readers want the low precision; one read by both precisions
/// keeps its FP32 tensor and gets a low copy (returned: name -> copy name).
fn lower_initializers(
    g: &mut GraphProto,
    old_inits: &[TensorProto],
    inits: &HashMap<&str, &TensorProto>,
    low: &[bool],
    outputs: &HashSet<String>,
    cx: &mut GraphCx,
    out: &mut Outcome,
) -> HashMap<String, String> {
    let inp = cx.inp;
    let dtype = inp.dtype;
    // Initializers: which precisions their readers want.
    let mut want: HashMap<String, HashSet<Prec>> = HashMap::new();
    for (k, n) in g.node.iter().enumerate() {
        for (i, t) in n.input.iter().enumerate() {
            if inits.contains_key(t.as_str()) && is_float(dtype(t)) {
                let p = if low[k] && !fixed_fp32_input(n.op_type(), i) {
                    Prec::Low
                } else {
                    Prec::F32
                };
                want.entry(t.clone()).or_default().insert(p);
            }
        }
        // Readers inside nested graphs take the stored FP32 tensor (Casting it there).
        for (_, sub) in n.subgraphs() {
            for t in outer_refs(sub) {
                if inits.contains_key(t.as_str()) {
                    want.entry(t).or_default().insert(Prec::F32);
                }
            }
        }
    }
    // Initializers declared as graph inputs (old exporters) keep their declared FP32 type.
    for i in &g.input {
        if inits.contains_key(i.name()) {
            want.entry(i.name().to_string())
                .or_default()
                .insert(Prec::F32);
        }
    }
    let mut low_copy: HashMap<String, String> = HashMap::new();
    for t in old_inits {
        let name = t.name().to_string();
        let w = want.get(&name);
        let wants_low = w.is_some_and(|w| w.contains(&Prec::Low));
        if !wants_low {
            g.initializer.push(t.clone());
            if is_float(dtype(&name)) {
                cx.prec.insert(name, Prec::F32);
            }
            continue;
        }
        let only_low = w.is_some_and(|w| w.len() == 1) && !outputs.contains(&name);
        match lower(t, inp.precision, &mut out.flushed_to_zero) {
            Some(l) if only_low => {
                g.initializer.push(l);
                cx.prec.insert(name, Prec::Low);
                out.initializers_converted += 1;
            }
            Some(mut l) => {
                let copy = format!("{name}__{}", inp.precision.suffix());
                l.name = Some(copy.clone());
                g.initializer.push(t.clone());
                g.initializer.push(l);
                cx.prec.insert(name.clone(), Prec::F32);
                low_copy.insert(name, copy);
                out.initializers_converted += 1;
            }
            None => {
                g.initializer.push(t.clone());
                cx.prec.insert(name, Prec::F32);
            }
        }
    }
    low_copy
}

/// Constants and Casts to float have no compute of their own: they run in the low precision
/// exactly when every float reader does (so a reader never needs a Cast of a Cast).
fn follow_readers(
    g: &GraphProto,
    low: &mut [bool],
    reasons: &mut [Option<(KeepReason, String)>],
    inp: &Inputs,
) {
    let mut readers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (k, n) in g.node.iter().enumerate() {
        for (i, t) in n.input.iter().enumerate() {
            readers.entry(t.as_str()).or_default().push((k, i));
        }
    }
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    for k in (0..g.node.len()).rev() {
        let n = &g.node[k];
        let follows = n.op_type() == "Constant"
            || (n.op_type() == "Cast" && n.attr_i("to") == Some(DataType::FLOAT.0 as i64));
        if !follows || !low[k] {
            continue;
        }
        let o = n.output.first().map(String::as_str).unwrap_or("");
        let rs = readers.get(o).map(Vec::as_slice).unwrap_or(&[]);
        let all_low = !rs.is_empty()
            && rs
                .iter()
                .all(|&(r, i)| low[r] && !fixed_fp32_input(g.node[r].op_type(), i))
            && !outputs.contains(o);
        if !all_low && is_float((inp.dtype)(o)) {
            low[k] = false;
            reasons[k] = Some((KeepReason::FollowsReaders, "a reader stays FP32".into()));
        }
    }
}

/// Renames graph outputs that low nodes produce to `NAME__low`, so a final Cast can write the
/// FP32 tensor under the original name. Returns (renamed, original) pairs.
fn rename_low_outputs(
    g: &mut GraphProto,
    low: &[bool],
    outputs: &HashSet<String>,
    dtype: &dyn Fn(&str) -> Option<DataType>,
) -> Vec<(String, String)> {
    let mut renames: Vec<(String, String)> = Vec::new();
    for (k, n) in g.node.iter_mut().enumerate() {
        if !low[k] {
            continue;
        }
        for o in n.output.iter_mut() {
            if outputs.contains(o.as_str()) && is_float(dtype(o)) {
                let r = format!("{o}__low");
                renames.push((r.clone(), o.clone()));
                *o = r;
            }
        }
    }
    for n in g.node.iter_mut() {
        for t in n.input.iter_mut() {
            if let Some((r, _)) = renames.iter().find(|(_, o)| o == t) {
                *t = r.clone();
            }
        }
    }
    renames
}

/// The tensor `t` in precision `p`: an existing Cast's output, the input of the Cast that
/// produced `t` (re-cast from its source instead of chaining), or a new Cast.
fn cast_of(
    t: &str,
    p: Prec,
    producers: &HashMap<String, NodeProto>,
    casts: &mut HashMap<(String, Prec), String>,
    g: &mut GraphProto,
    cx: &GraphCx,
    out: &mut Outcome,
) -> String {
    if let Some(c) = casts.get(&(t.to_string(), p)) {
        return c.clone();
    }
    let to = match p {
        Prec::F32 => DataType::FLOAT,
        Prec::Low => cx.inp.precision.dtype(),
    };
    // A Cast's output needed in another float type: cast its source directly.
    let source = producers
        .get(t)
        .and_then(|c| c.input.first().cloned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| t.to_string());
    if source != t && cx.prec.get(&source) == Some(&p) {
        casts.insert((t.to_string(), p), source.clone());
        return source;
    }
    let name = format!(
        "{t}__to_{}",
        if p == Prec::F32 {
            "fp32"
        } else {
            cx.inp.precision.suffix()
        }
    );
    g.node.push(cast_node(&source, &name, to));
    out.casts += 1;
    casts.insert((t.to_string(), p), name.clone());
    name
}

fn cast_node(input: &str, output: &str, to: DataType) -> NodeProto {
    NodeProto {
        name: Some(format!("/pare/Cast/{output}")),
        op_type: Some("Cast".into()),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![AttributeProto {
            name: Some("to".into()),
            i: Some(to.0 as i64),
            r#type: Some(2), // INT
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn set_attr_i(n: &mut NodeProto, name: &str, v: i64) {
    if let Some(a) = n.attribute.iter_mut().find(|a| a.name() == name) {
        a.i = Some(v);
    }
}

fn lower_constant(n: &mut NodeProto, p: Precision, out: &mut Outcome) {
    for a in n.attribute.iter_mut().filter(|a| a.name() == "value") {
        if let Some(t) = &a.t
            && DataType(t.data_type()) == DataType::FLOAT
            && let Some(l) = lower(t, p, &mut out.flushed_to_zero)
        {
            a.t = Some(Box::new(l));
        }
    }
}

fn set_elem_type(vi: &mut ValueInfoProto, dt: DataType) {
    if let Some(tt) = vi
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
        .and_then(|v| match v {
            TypeValue::TensorType(tt) => Some(tt),
            _ => None,
        })
    {
        tt.elem_type = Some(dt.0);
    }
}

fn touches_float(n: &NodeProto, dtype: &dyn Fn(&str) -> Option<DataType>) -> bool {
    n.input
        .iter()
        .chain(&n.output)
        .any(|t| !t.is_empty() && is_float(dtype(t)))
}

/// Names a nested graph reads from enclosing scopes.
fn outer_refs(g: &GraphProto) -> Vec<String> {
    let mut local: HashSet<&str> = g.input.iter().map(|i| i.name()).collect();
    local.extend(g.initializer.iter().map(|t| t.name()));
    let mut refs = Vec::new();
    for n in &g.node {
        for t in &n.input {
            if !t.is_empty() && !local.contains(t.as_str()) {
                refs.push(t.clone());
            }
        }
        for (_, sub) in n.subgraphs() {
            refs.extend(
                outer_refs(sub)
                    .into_iter()
                    .filter(|t| !local.contains(t.as_str())),
            );
        }
        local.extend(n.output.iter().map(String::as_str));
    }
    refs
}
