//! The right-hand details pane: everything about one node (or scope, group, finding), as
//! styled lines. Weight statistics are asked of the background worker and show as
//! "computing…" until they arrive.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use crate::model::info::human;
use crate::model::proto::{AttributeProto, attribute_type as at};
use crate::tags::Tag;

use std::collections::HashMap;

use crate::lint::Severity;

use super::highlight;
use super::session::{Finding, Session};
use super::theme;
use super::worker::TensorStats;

fn section(title: &str) -> Line<'static> {
    Line::from(vec![Span::styled(format!("── {title} "), theme::section())])
}

fn kv(k: &str, v: impl Into<String>) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{k:<8}"), theme::dim()),
        Span::raw(v.into()),
    ])
}

fn list<T: std::fmt::Display>(v: &[T], max: usize) -> String {
    let mut s = v
        .iter()
        .take(max)
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > max {
        s.push_str(&format!(", … ({} total)", v.len()));
    }
    format!("[{s}]")
}

pub fn attr_value(a: &AttributeProto) -> String {
    match a.kind() {
        at::FLOAT => format!("{}", a.f.unwrap_or_default()),
        at::INT => format!("{}", a.i.unwrap_or_default()),
        at::STRING => format!(
            "\"{}\"",
            String::from_utf8_lossy(a.s.as_deref().unwrap_or_default())
        ),
        at::FLOATS => list(&a.floats, 8),
        at::INTS => list(&a.ints, 8),
        at::STRINGS => list(
            &a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>(),
            6,
        ),
        at::TENSOR => match &a.t {
            Some(t) => format!(
                "tensor {} {:?}",
                crate::model::DataType(t.data_type()),
                t.dims
            ),
            None => "tensor".into(),
        },
        at::GRAPH => match &a.g {
            Some(g) => format!("graph ({} nodes)", g.node.len()),
            None => "graph".into(),
        },
        at::GRAPHS => format!("{} graphs", a.graphs.len()),
        _ => {
            if let Some(i) = a.i {
                i.to_string()
            } else if !a.ints.is_empty() {
                list(&a.ints, 8)
            } else {
                "…".into()
            }
        }
    }
}

/// The severity as the TUI's columns show it (five characters at most).
pub fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warn",
        Severity::Info => "info",
    }
}

pub fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Error => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Warning => Style::default().fg(Color::Yellow),
        Severity::Info => Style::default().fg(Color::Blue),
    }
}

/// Lines of one diagnostic with its explanation and fix.
pub fn diagnostic_lines(d: &Finding, s: &Session) -> Vec<Line<'static>> {
    let mut out = vec![Line::from(vec![
        Span::styled(
            format!("{} ", severity_label(d.severity)),
            severity_style(d.severity),
        ),
        Span::styled(format!("{} ", d.rule), theme::bold()),
        Span::raw(d.text()),
    ])];
    if let Some(n) = d.node {
        out.push(kv(
            "node",
            format!("{} ({})", s.nodes[n].name, s.nodes[n].op),
        ));
    }
    if !d.explanation.is_empty() {
        out.push(Line::from(vec![
            Span::styled("why     ", theme::dim()),
            Span::raw(d.explanation.clone()),
        ]));
    }
    if let Some(f) = &d.fix_text() {
        out.push(Line::from(Span::styled(
            if d.fixable || d.remedy.is_some() {
                "fix (a applies it)"
            } else {
                "fix"
            },
            theme::dim(),
        )));
        for l in f.lines() {
            out.push(Line::from(Span::styled(
                format!("  {l}"),
                Style::default().fg(Color::Green),
            )));
        }
    }
    out
}

/// Details of a scope of the node tree.
pub fn scope_details(s: &Session, k: usize) -> Vec<Line<'static>> {
    let sc = &s.tree.scopes[k];
    let nodes = s.tree.nodes_under(k);
    let params: u64 = nodes.iter().map(|&i| s.nodes[i].params).sum();
    let macs: u64 = nodes.iter().filter_map(|&i| s.nodes[i].macs).sum();
    let mut ops: std::collections::BTreeMap<&str, usize> = Default::default();
    for &i in &nodes {
        *ops.entry(s.nodes[i].op.as_str()).or_default() += 1;
    }
    let mut ops: Vec<(&str, usize)> = ops.into_iter().collect();
    ops.sort_by_key(|o| std::cmp::Reverse(o.1));
    let mut out = vec![Line::from(vec![
        Span::styled("scope ", theme::dim()),
        Span::styled(s.tree.scope_path(k), theme::bold()),
    ])];
    if let Some(c) = &sc.class {
        out.push(kv("module", c.clone()));
    }
    out.push(kv("nodes", nodes.len().to_string()));
    out.push(kv("params", human(params)));
    out.push(kv("MACs", human(macs)));
    out.push(kv(
        "ops",
        ops.iter()
            .take(6)
            .map(|(o, n)| format!("{o}×{n}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    if let Some(p) = &sc.pattern {
        let tag = if s.tags.skip.contains(p) {
            "skip"
        } else if s.tags.lock.contains(p) {
            "lock"
        } else {
            "none"
        };
        out.push(kv(
            "pattern",
            format!("{p} (tag: {tag}; s/l/u tag the whole scope)"),
        ));
    }
    let tagged = nodes.iter().filter(|i| s.tagged.contains_key(i)).count();
    if tagged > 0 {
        out.push(kv("tagged", format!("{tagged} node(s) below")));
    }
    out
}

/// Weight tensors of node `i`, whose statistics its details show.
pub fn node_weights(s: &Session, i: usize) -> Vec<String> {
    s.graph().node[i]
        .input
        .iter()
        .filter(|t| s.analysis.index.initializers.contains_key(*t))
        .cloned()
        .collect()
}

/// What node details need besides the session: weight statistics known so far, the node's
/// groups in the order `c` cycles them, and the highlighted group.
pub struct NodeCx<'a> {
    pub stats: &'a HashMap<String, Result<TensorStats, super::worker::StatsError>>,
    pub groups: Vec<usize>,
    pub highlight: Option<usize>,
}

/// Details of node `i`: what it is, its tensors, attributes, groups, findings and provenance.
pub fn node_details(s: &Session, i: usize, cx: &NodeCx) -> Vec<Line<'static>> {
    let mut out = node_head(s, i);
    node_inputs(s, i, cx, &mut out);
    node_outputs(s, i, &mut out);
    let node = &s.graph().node[i];
    if !node.attribute.is_empty() {
        out.push(section("attributes"));
        for a in &node.attribute {
            out.push(Line::from(vec![
                Span::styled(format!("  {} ", a.name()), theme::dim()),
                Span::raw(attr_value(a)),
            ]));
        }
    }
    node_groups(s, i, cx, &mut out);
    if let Some(ds) = s.node_diags.get(&i) {
        out.push(section("diagnostics"));
        for &k in ds {
            out.extend(diagnostic_lines(&s.diagnostics[k], s));
        }
    }
    node_provenance(s, i, &mut out);
    out
}

/// Op, name, tag, domain and cost.
fn node_head(s: &Session, i: usize) -> Vec<Line<'static>> {
    let node = &s.graph().node[i];
    let info = &s.nodes[i];
    let mut out = Vec::new();
    let mut head = vec![
        Span::styled(
            format!("{} ", info.op),
            theme::op().add_modifier(Modifier::BOLD),
        ),
        Span::styled(info.name.clone(), theme::bold()),
    ];
    match s.tagged.get(&i) {
        Some(Tag::Skip) => head.push(Span::styled("  [skip]", theme::skip())),
        Some(Tag::Lock) => head.push(Span::styled("  [lock]", theme::lock())),
        None => {}
    }
    out.push(Line::from(head));
    if !node.op_domain().is_empty() {
        out.push(kv("domain", node.op_domain().to_string()));
    }
    let cost = match info.macs {
        Some(m) if m > 0 => format!("params {}  MACs {}", human(info.params), human(m)),
        _ => format!("params {}", human(info.params)),
    };
    out.push(kv("cost", cost));
    out
}

/// Inputs with dtype, shape, where they come from, and weight statistics.
fn node_inputs(s: &Session, i: usize, cx: &NodeCx, out: &mut Vec<Line<'static>>) {
    let node = &s.graph().node[i];
    let ix = &s.analysis.index;
    out.push(section("inputs"));
    for t in ix.all_inputs(node, i) {
        let (dtype, shape) = s.tensor_desc(t);
        let from = if ix.initializers.contains_key(t) {
            "weight".to_string()
        } else {
            match ix.producer.get(t) {
                Some(&p) => format!("← {}", s.nodes[p].op),
                None if ix.inputs.iter().any(|x| x == t) => "graph input".to_string(),
                None => "outer scope".to_string(),
            }
        };
        out.push(Line::from(vec![
            Span::styled(format!("  {t} "), theme::tensor()),
            Span::raw(format!("{dtype} {shape} ")),
            Span::styled(from, theme::dim()),
        ]));
        if ix.initializers.contains_key(t) {
            let line = match cx.stats.get(t) {
                Some(Ok(st)) => format!(
                    "    min {:.3} max {:.3} mean {:.3} std {:.3} zeros {:.0}%",
                    st.min,
                    st.max,
                    st.mean,
                    st.std,
                    st.zeros * 100.0
                ),
                Some(Err(e)) => format!("    ({e})"),
                None => "    stats: computing…".to_string(),
            };
            out.push(Line::from(Span::styled(line, theme::dim())));
        }
    }
}

/// Outputs with dtype, shape and their readers.
fn node_outputs(s: &Session, i: usize, out: &mut Vec<Line<'static>>) {
    let node = &s.graph().node[i];
    let ix = &s.analysis.index;
    out.push(section("outputs"));
    for t in node.output.iter().filter(|t| !t.is_empty()) {
        let (dtype, shape) = s.tensor_desc(t);
        let readers: Vec<String> = ix
            .consumers
            .get(t)
            .map(|c| c.iter().take(3).map(|&k| s.nodes[k].op.clone()).collect())
            .unwrap_or_default();
        let mut to = if readers.is_empty() {
            String::new()
        } else {
            format!("→ {}", readers.join(", "))
        };
        if ix.outputs.iter().any(|o| o == t) {
            to.push_str(" graph output");
        }
        out.push(Line::from(vec![
            Span::styled(format!("  {t} "), theme::tensor()),
            Span::raw(format!("{dtype} {shape} ")),
            Span::styled(to, theme::dim()),
        ]));
    }
}

/// The channel groups the node touches, with their status and lock reasons.
fn node_groups(s: &Session, i: usize, cx: &NodeCx, out: &mut Vec<Line<'static>>) {
    if cx.groups.is_empty() {
        return;
    }
    out.push(section("channel groups (c cycles)"));
    for &gid in &cx.groups {
        let grp = &s.channels.groups[gid];
        let st = &s.group_status[gid];
        let role = if s.produced[i].contains(&gid) {
            "produces"
        } else {
            "uses"
        };
        let status = if st.locks.is_empty() && grp.channels > 1 {
            Span::styled("prunable", theme::ok())
        } else {
            Span::styled("locked", theme::lock())
        };
        let mark = if Some(gid) == cx.highlight {
            "● "
        } else {
            "  "
        };
        out.push(Line::from(vec![
            Span::styled(mark.to_string(), theme::group()),
            Span::styled(format!("#{gid} "), theme::group()),
            Span::raw(format!("{} ch, {role}, ", grp.channels)),
            status,
        ]));
        for l in st.locks.iter().take(3) {
            out.push(Line::from(Span::styled(format!("      {l}"), theme::dim())));
        }
        if st.locks.len() > 3 {
            out.push(Line::from(Span::styled(
                format!("      +{} more", st.locks.len() - 3),
                theme::dim(),
            )));
        }
    }
}

/// Stack trace, other metadata and the doc string the exporter left on the node.
fn node_provenance(s: &Session, i: usize, out: &mut Vec<Line<'static>>) {
    let node = &s.graph().node[i];
    if let Some(st) = node
        .metadata_props
        .iter()
        .find(|p| p.key() == "pkg.torch.onnx.stack_trace")
    {
        out.push(section("stack trace"));
        out.extend(highlight::stack_trace(st.value()));
    }
    let other: Vec<_> = node
        .metadata_props
        .iter()
        .filter(|p| !matches!(p.key(), "pkg.torch.onnx.stack_trace"))
        .collect();
    if !other.is_empty() {
        out.push(section("metadata"));
        for p in other {
            let v: String = p.value().chars().take(160).collect();
            out.push(Line::from(vec![
                Span::styled(format!("  {} ", p.key()), theme::dim()),
                Span::raw(v),
            ]));
        }
    }
    if let Some(d) = &node.doc_string {
        out.push(section("doc"));
        out.push(Line::from(d.clone()));
    }
}

/// Details of a channel group.
pub fn group_details(s: &Session, gid: usize, scores: Option<&Vec<f64>>) -> Vec<Line<'static>> {
    let Some(d) = s.channels.detail(gid) else {
        return Vec::new();
    };
    let st = &s.group_status[gid];
    let prunable = st.locks.is_empty() && d.channels > 1;
    let mut out = vec![Line::from(vec![
        Span::styled(
            format!("group #{gid} "),
            theme::group().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("{} channels  ", d.channels)),
        if prunable {
            Span::styled("prunable", theme::ok())
        } else {
            Span::styled("locked", theme::lock())
        },
    ])];
    if !st.locks.is_empty() {
        out.push(section("why locked"));
        for l in &st.locks {
            let style = if st.tag_locks.contains(l) {
                theme::skip()
            } else {
                Style::default()
            };
            out.push(Line::from(Span::styled(format!("  {l}"), style)));
        }
    }
    if let Some(sc) = scores
        && !sc.is_empty()
    {
        let max = sc.iter().cloned().fold(0.0, f64::max);
        let min = sc.iter().cloned().fold(f64::INFINITY, f64::min);
        out.push(section("importance (L1, high → low)"));
        out.push(Line::from(Span::styled(
            format!("  {}", theme::sparkline(sc, 40)),
            theme::group(),
        )));
        out.push(Line::from(Span::styled(
            format!("  max {max:.2}  min {min:.2}"),
            theme::dim(),
        )));
    }

    out.push(section("producers"));
    for p in &d.producers {
        out.push(Line::from(format!("  {p}")));
    }
    out.push(section("members (node · tensor · axis · role · ranges)"));
    for m in d.members.iter().take(60) {
        out.push(Line::from(vec![
            Span::raw(format!("  {} ", m.node)),
            Span::styled(format!("{} ", m.tensor), theme::tensor()),
            Span::styled(
                format!("ax{} {:?} {}", m.axis, m.role, m.ranges.join(" ")),
                theme::dim(),
            ),
        ]));
    }
    if d.members.len() > 60 {
        out.push(Line::from(Span::styled(
            format!("  … {} more", d.members.len() - 60),
            theme::dim(),
        )));
    }
    if !d.counts.is_empty() {
        out.push(section("channel counts rewritten with it"));
        for c in &d.counts {
            out.push(Line::from(format!("  {} {:?}", c.node, c.place)));
        }
    }
    out
}
