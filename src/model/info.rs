//! `pare info`: a summary of a model as plain data, plus its text rendering.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Analysis;
use super::proto::ValueInfoProto;
use super::shape::{
    ShapeDiagnostic, TensorInfo, ValueKind, declared_info, format_info, shape_json,
};
use super::stats::{NodeCost, activation_bytes, graph_params, node_costs};

/// A graph input or output as scripts see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IoInfo {
    pub name: String,
    /// `sequence`, `optional` or `map` for a value that is not a tensor; absent for tensors.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub value_type: Option<&'static str>,
    /// Element type (of a sequence's or optional's elements for those); `unknown` when not
    /// known.
    pub dtype: String,
    /// Dims as ints, symbol names or `"?"` (of the elements for a sequence or optional);
    /// `null` when the rank is unknown, so that it never reads as a scalar's `[]`.
    pub shape: Option<Vec<serde_json::Value>>,
}

/// Everything `pare info` reports.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub file: Option<String>,
    pub file_size: u64,
    pub ir_version: i64,
    pub opsets: BTreeMap<String, i64>,
    pub producer: String,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    /// Nodes of the top-level graph.
    pub node_count: usize,
    /// Nodes inside If/Loop/Scan bodies.
    pub subgraph_node_count: usize,
    pub initializer_count: usize,
    pub local_functions: usize,
    /// op type → count over the top-level graph.
    pub op_histogram: BTreeMap<String, usize>,
    pub subgraph_op_histogram: BTreeMap<String, usize>,
    pub params: u64,
    pub macs: u64,
    pub activation_bytes: u64,
    /// Top-level tensors without a fully static shape.
    pub dynamic_tensors: Vec<String>,
    pub tensor_count: usize,
    pub heaviest: Vec<NodeCost>,
    pub shape_diagnostics: Vec<ShapeDiagnostic>,
    /// Shape (as text) of each heaviest layer's first output, for the text rendering.
    #[serde(skip)]
    pub heaviest_out_shapes: Vec<String>,
    /// `name shape` of the first dynamic tensors, for the text rendering.
    #[serde(skip)]
    pub dynamic_shown: Vec<String>,
}

fn io_info(vi: &ValueInfoProto, a: &Analysis) -> IoInfo {
    let declared = declared_info(vi);
    // Inference knows more than the declaration, unless it knows nothing at all.
    let info = match a.shapes.get(vi.name()) {
        Some(t) if *t != TensorInfo::default() => t,
        _ => &declared,
    };
    let (value_type, elem) = match &info.kind {
        ValueKind::Tensor => (None, info),
        ValueKind::Sequence(s) => (Some(info.kind.name()), &s.elem),
        ValueKind::Optional(e) => (Some(info.kind.name()), &**e),
        ValueKind::Map => (Some(info.kind.name()), &TensorInfo::default()),
    };
    let dtype = elem
        .dtype
        .or(declared.dtype)
        .map_or_else(|| "unknown".into(), |d| d.name().to_string());
    let shape = match shape_json(elem.shape.as_deref()) {
        serde_json::Value::Array(v) => Some(v),
        _ => None,
    };
    IoInfo {
        name: vi.name().to_string(),
        value_type,
        dtype,
        shape,
    }
}

fn histogram<'a>(ops: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for op in ops {
        *h.entry(op.to_string()).or_insert(0) += 1;
    }
    h
}

/// Summarises an analysed model.
pub fn model_info(a: &Analysis) -> ModelInfo {
    let proto = &a.model.proto;
    let g = a.graph();
    let costs = node_costs(g, &a.index, &a.shapes);
    let mut heaviest: Vec<NodeCost> = costs
        .iter()
        .filter(|c| c.macs.unwrap_or(0) > 0)
        .cloned()
        .collect();
    heaviest.sort_by(|x, y| y.macs.cmp(&x.macs).then(x.node.cmp(&y.node)));
    heaviest.truncate(10);
    let mut sub_ops = Vec::new();
    collect_sub_ops(g, &mut sub_ops);
    let mut dynamic = Vec::new();
    let mut tensor_count = 0;
    for name in g
        .input
        .iter()
        .map(|v| v.name())
        .filter(|n| !a.index.initializers.contains_key(*n))
        .chain(
            g.node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .filter(|n| !n.is_empty())
    {
        tensor_count += 1;
        if a.shapes.static_shape(name).is_none() {
            dynamic.push(name.to_string());
        }
    }
    let heaviest_out_shapes = heaviest
        .iter()
        .map(|c| {
            let out = g.node[c.node].output.first().cloned().unwrap_or_default();
            format_info(a.shapes.get(&out))
        })
        .collect();
    let dynamic_shown = dynamic
        .iter()
        .take(8)
        .map(|n| format!("{n} {}", format_info(a.shapes.get(n))))
        .collect();
    ModelInfo {
        file: a.model.path.as_ref().map(|p| p.display().to_string()),
        file_size: a.model.file_size,
        ir_version: proto.ir_version(),
        opsets: proto
            .opset_import
            .iter()
            .map(|o| {
                let d = o.domain();
                let d = if d.is_empty() { "ai.onnx" } else { d };
                (d.to_string(), o.version())
            })
            .collect(),
        producer: format!("{} {}", proto.producer_name(), proto.producer_version())
            .trim()
            .to_string(),
        inputs: g
            .input
            .iter()
            .filter(|v| !a.index.initializers.contains_key(v.name()))
            .map(|v| io_info(v, a))
            .collect(),
        outputs: g.output.iter().map(|v| io_info(v, a)).collect(),
        node_count: g.node.len(),
        subgraph_node_count: sub_ops.len(),
        initializer_count: g.initializer.len(),
        local_functions: proto.functions.len(),
        op_histogram: histogram(g.node.iter().map(|n| n.op_type())),
        subgraph_op_histogram: histogram(sub_ops.iter().map(String::as_str)),
        params: graph_params(g),
        macs: costs.iter().filter_map(|c| c.macs).sum(),
        activation_bytes: activation_bytes(g, &a.shapes),
        dynamic_tensors: dynamic,
        tensor_count,
        heaviest,
        shape_diagnostics: a.shapes.diagnostics.clone(),
        heaviest_out_shapes,
        dynamic_shown,
    }
}

fn collect_sub_ops(g: &super::proto::GraphProto, out: &mut Vec<String>) {
    // Iterative over nesting levels; depth is bounded by the decoder's recursion limit anyway.
    let mut stack: Vec<&super::proto::GraphProto> = g
        .node
        .iter()
        .flat_map(|n| n.subgraphs().map(|(_, s)| s))
        .collect();
    while let Some(sg) = stack.pop() {
        for n in &sg.node {
            out.push(n.op_type().to_string());
            stack.extend(n.subgraphs().map(|(_, s)| s));
        }
    }
}

/// Human-readable number: 11.7M, 1.82G.
pub fn human(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}G", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}K", f / 1e3)
    } else {
        n.to_string()
    }
}

fn io_line(io: &IoInfo) -> String {
    let shape = match &io.shape {
        // Unknown rank: `?`, never the `[]` of a scalar.
        None => "?".to_string(),
        Some(dims) => {
            let dims: Vec<String> = dims
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            format!("[{}]", dims.join(", "))
        }
    };
    match io.value_type {
        None => format!("  {:<28} {:<8} {}", io.name, io.dtype, shape),
        Some("map") => format!("  {:<28} map", io.name),
        Some(t) => format!("  {:<28} {t}<{} {shape}>", io.name, io.dtype),
    }
}

/// Renders the report `pare info` prints.
impl crate::report::Report for ModelInfo {
    fn render_text(&self) -> String {
        render_text(self)
    }
}

/// `pare info`'s text: the one rendering of a [`ModelInfo`].
fn render_text(info: &ModelInfo) -> String {
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "model      {}",
        info.file.as_deref().unwrap_or("(embedded demo model)")
    );
    let _ = writeln!(
        s,
        "format     IR {}, opsets {}, {} bytes",
        info.ir_version,
        info.opsets
            .iter()
            .map(|(d, v)| format!("{d} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        info.file_size
    );
    if !info.producer.is_empty() {
        let _ = writeln!(s, "producer   {}", info.producer);
    }
    let _ = writeln!(s, "\ninputs");
    for io in &info.inputs {
        let _ = writeln!(s, "{}", io_line(io));
    }
    let _ = writeln!(s, "outputs");
    for io in &info.outputs {
        let _ = writeln!(s, "{}", io_line(io));
    }
    let _ = writeln!(
        s,
        "\nnodes      {} ({} inside If/Loop bodies), initializers {}, local functions {}",
        info.node_count, info.subgraph_node_count, info.initializer_count, info.local_functions
    );
    let _ = writeln!(
        s,
        "params     {} ({})   MACs {} ({})   activations {} bytes",
        human(info.params),
        info.params,
        human(info.macs),
        info.macs,
        human(info.activation_bytes)
    );
    let mut ops: Vec<(&String, &usize)> = info.op_histogram.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(s, "\nops");
    for chunk in ops.chunks(4) {
        let line: Vec<String> = chunk
            .iter()
            .map(|(k, v)| format!("{k:<22}{v:>5}"))
            .collect();
        let _ = writeln!(s, "  {}", line.join("  "));
    }
    if !info.subgraph_op_histogram.is_empty() {
        let sub: Vec<String> = info
            .subgraph_op_histogram
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "  in bodies: {}", sub.join(", "));
    }
    let _ = writeln!(s, "\nheaviest layers");
    let total = info.macs.max(1) as f64;
    for (c, out) in info.heaviest.iter().zip(&info.heaviest_out_shapes) {
        let _ = writeln!(
            s,
            "  {:<44} {:<14} {:>9} MACs {:>5.1}%  params {:>8}  out {}",
            truncate(&c.name, 44),
            c.op_type,
            human(c.macs.unwrap_or(0)),
            100.0 * c.macs.unwrap_or(0) as f64 / total,
            human(c.params),
            out
        );
    }
    if info.dynamic_tensors.is_empty() {
        let _ = writeln!(s, "\nshapes     all {} tensors static", info.tensor_count);
    } else {
        let shown = &info.dynamic_shown;
        let _ = writeln!(
            s,
            "\nshapes     {} of {} tensors without a static shape (pin inputs with --input-shape NAME:1x3x512x512): {}{}",
            info.dynamic_tensors.len(),
            info.tensor_count,
            shown.join("; "),
            if info.dynamic_tensors.len() > 8 {
                "; …"
            } else {
                ""
            }
        );
    }
    for d in &info.shape_diagnostics {
        let _ = writeln!(
            s,
            "note       node '{}' ({}): {}",
            d.node, d.op_type, d.message
        );
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
