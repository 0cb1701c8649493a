//! A loaded model as the TUI sees it: the analysis, channel groups, per-node rows, the scope
//! tree, tags and their effect on groups, and diagnostics. Built once per model (in the
//! background for files), then read by the views.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analysis::channels::{Atom, ChannelAnalysis, analyze_channels};
use crate::error::Result;
use crate::jobs::{NoProgress, Progress};
use crate::lint::Diagnostic;
/// Findings carry lint's severity (re-exported for the views and tests).
pub use crate::lint::Severity;
use crate::model::shape::{ValueKind, format_info, format_shape};
use crate::model::stats::{node_macs, node_params};
use crate::model::{Analysis, InputPins, io};
use crate::prune::{Criterion, PruneOptions, make_plan};
use crate::tags::{Tag, Tags};

use super::engines;
use super::tree::{Placement, Tree, placement};

/// One finding shown in the Diagnostics view and next to its node: lint's own diagnostic
/// (shape-inference and channel-analysis notes are written as lint diagnostics too, so the views
/// render one type), placed on the node it is about.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The node the finding points at (the first of its nodes that exists in this model).
    pub node: Option<usize>,
    pub diag: Diagnostic,
}

impl std::ops::Deref for Finding {
    type Target = Diagnostic;
    fn deref(&self) -> &Diagnostic {
        &self.diag
    }
}

impl Finding {
    /// The headline: the rule's title, the message and the seed case it was found on.
    pub fn text(&self) -> String {
        let d = &self.diag;
        let mut message = d.message.clone();
        if let Some(case) = &d.seed_case {
            message.push_str(&format!(" [seed {case}]"));
        }
        if d.title.is_empty() {
            message
        } else {
            format!("{}: {message}", d.title)
        }
    }

    /// The fix in prose: the automatic one (when pare has it) and the source-side snippet.
    pub fn fix_text(&self) -> Option<String> {
        let d = &self.diag;
        let mut fix = String::new();
        if let Some(f) = &d.fix {
            fix.push_str(&format!(
                "automatic: `pare fix --rule {f}` (verified against the original on random inputs before it is written)"
            ));
        }
        if !d.fix_snippet.is_empty() {
            if !fix.is_empty() {
                fix.push('\n');
            }
            fix.push_str(&d.fix_snippet);
        }
        (!fix.is_empty()).then_some(fix)
    }
}

/// An analysis note (not a lint rule) as an informational diagnostic.
fn note(rule: &str, node: Option<String>, message: String, why: &str, fix: &str) -> Diagnostic {
    Diagnostic {
        rule: rule.into(),
        severity: Severity::Info,
        nodes: node.into_iter().collect(),
        message,
        seed_case: None,
        fixable: false,
        title: String::new(),
        target: String::new(),
        fix: None,
        fix_snippet: fix.into(),
        explanation: why.into(),
        tensors: Vec::new(),
    }
}

/// Display data of one node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub op: String,
    pub leaf: String,
    /// A short label for graph boxes: the innermost scope (`conv1`), else the name.
    pub short: String,
    pub out_shape: String,
    pub params: u64,
    pub macs: Option<u64>,
    /// Position in execution order.
    pub topo: usize,
}

/// Channel-group lock status after tags.
#[derive(Clone, Debug, Default)]
pub struct GroupStatus {
    /// Effective lock reasons (analysis locks, then tag locks).
    pub locks: Vec<String>,
    /// The lock reasons that come from tags.
    pub tag_locks: Vec<String>,
}

pub struct Session {
    pub analysis: Arc<Analysis>,
    pub channels: Arc<ChannelAnalysis>,
    pub label: String,
    pub nodes: Vec<NodeInfo>,
    pub by_name: HashMap<String, usize>,
    pub tree: Tree,
    /// Groups each node touches (produces, reads, writes or holds weights of).
    pub node_groups: Vec<Vec<usize>>,
    /// Groups whose channels each node produces.
    pub produced: Vec<Vec<usize>>,
    /// Nodes belonging to each group (producers and weight members), sorted.
    pub group_nodes: Vec<Vec<usize>>,
    pub group_status: Vec<GroupStatus>,
    pub tags: Tags,
    pub tags_path: Option<PathBuf>,
    pub tags_dirty: bool,
    pub tag_error: Option<String>,
    /// Nodes with a tag (after glob matching).
    pub tagged: HashMap<usize, Tag>,
    pub diagnostics: Vec<Finding>,
    pub node_diags: HashMap<usize, Vec<usize>>,
    pub lint_target: crate::lint::Target,
    pub lint_status: String,
    pub total_params: u64,
    pub total_macs: u64,
}

/// Where the model came from, for titles and default paths.
pub fn model_label(a: &Analysis) -> String {
    match &a.model.path {
        Some(p) => p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        None => "demo (embedded)".to_string(),
    }
}

/// Loads a model file (or the demo) with progress, for the loading screen.
pub fn load(
    path: Option<&Path>,
    pins: &InputPins,
    tags_path: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Session> {
    progress.phase("reading model", None);
    let model = match path {
        Some(p) => io::load_model(p)?,
        None => io::load_model_bytes(
            bytes::Bytes::from_static(crate::demo::DEMO_ONNX),
            Path::new("<embedded demo>"),
        )?,
    };
    progress.check_cancel()?;
    progress.phase("indexing and inferring shapes", None);
    let analysis = Analysis::new(model, pins)?;
    progress.check_cancel()?;
    let tags = match tags_path {
        Some(p) if p.exists() => Tags::load(p)?,
        _ => Tags::default(),
    };
    Session::build(analysis, tags, tags_path.map(Path::to_path_buf), progress)
}

/// Display rows of every node (name, op, scope placement, shape, cost), the name index, and
/// each node's place in the scope tree.
fn node_rows(analysis: &Analysis) -> (Vec<NodeInfo>, HashMap<String, usize>, Vec<Placement>) {
    let g = analysis.graph();
    let n = g.node.len();
    let mut topo_pos = vec![0usize; n];
    for (k, &i) in analysis.index.topo.iter().enumerate() {
        topo_pos[i] = k;
    }
    let mut placements: Vec<Placement> = Vec::with_capacity(n);
    let mut nodes = Vec::with_capacity(n);
    let mut by_name = HashMap::with_capacity(n);
    for (i, node) in g.node.iter().enumerate() {
        let ns = node
            .metadata_props
            .iter()
            .find(|p| p.key() == "namespace")
            .map(|p| p.value());
        let p = placement(node.name(), ns);
        let out_shape = node
            .output
            .first()
            .map(|o| format_info(analysis.shapes.get(o)))
            .unwrap_or_default();
        let short = match p.scopes.last() {
            Some((seg, _)) => seg.clone(),
            None if node.name().is_empty() => String::new(),
            None => p.leaf.clone(),
        };
        nodes.push(NodeInfo {
            name: node.display_name(),
            op: node.op_type().to_string(),
            short,
            leaf: if p.leaf.is_empty() {
                node.display_name()
            } else {
                p.leaf.clone()
            },
            out_shape,
            params: node_params(node, g, &analysis.index),
            macs: node_macs(node, &analysis.shapes),
            topo: topo_pos[i],
        });
        by_name.insert(node.display_name(), i);
        placements.push(p);
    }
    (nodes, by_name, placements)
}

/// Groups per node, in one pass over layouts and members: every group a node touches, the
/// groups it produces, and every group's nodes (sorted).
type Memberships = (Vec<Vec<usize>>, Vec<Vec<usize>>, Vec<Vec<usize>>);

fn memberships(
    analysis: &Analysis,
    channels: &ChannelAnalysis,
    by_name: &HashMap<String, usize>,
) -> Memberships {
    let g = analysis.graph();
    let n = g.node.len();
    let mut node_groups: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut produced: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut group_nodes: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); channels.groups.len()];
    let groups_of = |atoms: &[Atom]| -> Vec<usize> {
        let mut v: Vec<usize> = atoms
            .iter()
            .map(|&a| channels.atom_group[a as usize])
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for (i, node) in g.node.iter().enumerate() {
        for t in node.input.iter().chain(node.output.iter()) {
            if let Some(l) = channels.layouts.get(t.as_str()) {
                node_groups[i].extend(groups_of(&l.atoms));
            }
        }
    }
    for m in &channels.members {
        if let Some(&i) = by_name.get(&m.node) {
            for gid in groups_of(&m.atoms) {
                node_groups[i].insert(gid);
                group_nodes[gid].insert(i);
            }
        }
    }
    for grp in &channels.groups {
        for p in &grp.producers {
            if let Some(&i) = by_name.get(p) {
                produced[i].push(grp.id);
                node_groups[i].insert(grp.id);
                group_nodes[grp.id].insert(i);
            }
        }
    }
    let flat = |v: Vec<BTreeSet<usize>>| v.into_iter().map(|s| s.into_iter().collect()).collect();
    (flat(node_groups), produced, flat(group_nodes))
}

impl Session {
    /// Builds everything the views need from an analysed model.
    pub fn build(
        analysis: Analysis,
        tags: Tags,
        tags_path: Option<PathBuf>,
        progress: &dyn Progress,
    ) -> Result<Self> {
        progress.phase("channel groups", None);
        let channels = analyze_channels(&analysis);
        progress.check_cancel()?;
        progress.phase("building views", None);
        let g = analysis.graph();
        let (nodes, by_name, placements) = node_rows(&analysis);
        let is_const: Vec<bool> = g.node.iter().map(|n| n.op_type() == "Constant").collect();
        let mut tree = Tree::build(&analysis.index.topo, &placements, &is_const);
        tree.expand_to_fit(120);
        let (node_groups, produced, group_nodes) = memberships(&analysis, &channels, &by_name);
        let total_params = crate::model::stats::graph_params(g);
        let total_macs = nodes.iter().filter_map(|n| n.macs).sum();
        let mut s = Session {
            label: model_label(&analysis),
            analysis: Arc::new(analysis),
            channels: Arc::new(channels),
            nodes,
            by_name,
            tree,
            node_groups,
            produced,
            group_nodes,
            group_status: Vec::new(),
            tags,
            tags_path,
            tags_dirty: false,
            tag_error: None,
            tagged: HashMap::new(),
            diagnostics: Vec::new(),
            node_diags: HashMap::new(),
            lint_target: crate::lint::Target::default(),
            lint_status: String::new(),
            total_params,
            total_macs,
        };
        s.refresh_tags();
        s.refresh_diagnostics();
        Ok(s)
    }

    pub fn graph(&self) -> &crate::model::proto::GraphProto {
        self.analysis.graph()
    }

    /// Recomputes which nodes are tagged and which groups the tags lock, using the planner
    /// itself (ratio 0), so what the TUI shows is what `pare prune` will do.
    pub fn refresh_tags(&mut self) {
        self.tagged.clear();
        if !self.tags.is_empty() {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(t) = self.tags.tag_of(&n.name) {
                    self.tagged.insert(i, t);
                }
            }
        }
        let base: Vec<GroupStatus> = self
            .channels
            .groups
            .iter()
            .map(|g| GroupStatus {
                locks: g.locks.clone(),
                tag_locks: Vec::new(),
            })
            .collect();
        if self.tags.skip.is_empty() && self.tags.lock.is_empty() {
            self.group_status = base;
            self.tag_error = None;
            return;
        }
        let opts = PruneOptions {
            ratio: 0.0,
            round_to: 1,
            criterion: Criterion::Random,
            tags: Tags {
                skip: self.tags.skip.clone(),
                lock: self.tags.lock.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        match make_plan(&self.analysis, &self.channels, &opts, &NoProgress) {
            Ok(plan) => {
                self.tag_error = None;
                self.group_status = plan
                    .groups
                    .iter()
                    .map(|gp| {
                        let analysis_locks = &self.channels.groups[gp.group].locks;
                        let tag_locks: Vec<String> = gp
                            .locked
                            .iter()
                            .filter(|l| l.contains("is tagged"))
                            .cloned()
                            .collect();
                        let mut locks = analysis_locks.clone();
                        locks.extend(tag_locks.iter().cloned());
                        GroupStatus { locks, tag_locks }
                    })
                    .collect();
            }
            Err(e) => {
                self.tag_error = Some(e.to_string());
                self.group_status = base;
            }
        }
    }

    /// Tags (or untags) nodes; returns a message saying which groups changed status.
    pub fn set_tags(&mut self, nodes: &[usize], tag: Option<Tag>) -> String {
        let before: Vec<bool> = self
            .group_status
            .iter()
            .map(|s| !s.tag_locks.is_empty())
            .collect();
        let mut via_pattern = Vec::new();
        for &i in nodes {
            let name = self.nodes[i].name.clone();
            self.tags.set(&name, tag);
            if tag.is_none() && self.tags.tag_of(&name).is_some() {
                via_pattern.push(name);
            }
        }
        self.tags_dirty = true;
        self.refresh_tags();
        self.lock_change_message(&before, nodes, tag, &via_pattern)
    }

    /// Tags a whole scope with one glob pattern (`/aspp/*`).
    pub fn set_pattern(&mut self, pattern: &str, tag: Option<Tag>) -> String {
        let before: Vec<bool> = self
            .group_status
            .iter()
            .map(|s| !s.tag_locks.is_empty())
            .collect();
        self.tags.set(pattern, tag);
        self.tags_dirty = true;
        self.refresh_tags();
        let what = match tag {
            Some(Tag::Skip) => format!("skip {pattern}"),
            Some(Tag::Lock) => format!("lock {pattern}"),
            None => format!("untagged {pattern}"),
        };
        format!("{what}{}", self.group_diff(&before))
    }

    fn lock_change_message(
        &self,
        before: &[bool],
        nodes: &[usize],
        tag: Option<Tag>,
        via_pattern: &[String],
    ) -> String {
        let who = if nodes.len() == 1 {
            format!("'{}'", self.nodes[nodes[0]].name)
        } else {
            format!("{} layers", nodes.len())
        };
        let what = match tag {
            Some(Tag::Skip) => format!("skip {who}"),
            Some(Tag::Lock) => format!("lock {who}"),
            None => format!("untagged {who}"),
        };
        let mut msg = format!("{what}{}", self.group_diff(before));
        if let Some(n) = via_pattern.first() {
            msg.push_str(&format!(
                " — '{n}' is still tagged by a pattern; untag its scope"
            ));
        }
        msg
    }

    fn group_diff(&self, before: &[bool]) -> String {
        if let Some(e) = &self.tag_error {
            return format!(" — {e}");
        }
        let now: Vec<usize> = (0..self.group_status.len())
            .filter(|&g| {
                !self.group_status[g].tag_locks.is_empty()
                    && !before.get(g).copied().unwrap_or(false)
            })
            .collect();
        let freed: Vec<usize> = (0..self.group_status.len())
            .filter(|&g| {
                self.group_status[g].tag_locks.is_empty() && before.get(g).copied().unwrap_or(false)
            })
            .collect();
        let list = |v: &[usize]| {
            let mut s = v
                .iter()
                .take(6)
                .map(|g| format!("#{g}"))
                .collect::<Vec<_>>()
                .join(" ");
            if v.len() > 6 {
                s.push_str(&format!(" +{}", v.len() - 6));
            }
            s
        };
        let mut out = String::new();
        if !now.is_empty() {
            out.push_str(&format!(" → locks group {}", list(&now)));
        }
        if !freed.is_empty() {
            out.push_str(&format!(" → frees group {}", list(&freed)));
        }
        if now.is_empty() && freed.is_empty() {
            out.push_str(" → no group changes");
        }
        out
    }

    /// Saves tags atomically to `path` (remembered for the next save).
    pub fn save_tags(&mut self, path: &Path) -> Result<()> {
        self.tags.save(path)?;
        self.tags_path = Some(path.to_path_buf());
        self.tags_dirty = false;
        Ok(())
    }

    /// Where tags go when no file was named: next to the model, or `pare-demo.tags.toml`.
    pub fn default_tags_path(&self) -> PathBuf {
        match &self.analysis.model.path {
            Some(p) => {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p.with_file_name(format!("{stem}.tags.toml"))
            }
            None => PathBuf::from("pare-demo.tags.toml"),
        }
    }

    /// Re-collects diagnostics: lint for the current target, shape inference notes, channel
    /// analysis notes.
    pub fn refresh_diagnostics(&mut self) {
        let mut diags = Vec::new();
        let d = engines::lint(&self.analysis, self.lint_target);
        self.lint_status = format!("lint for {}: {} finding(s)", self.lint_target, d.len());
        diags.extend(d.into_iter().map(|diag| Finding {
            node: diag.nodes.iter().find_map(|n| self.by_name.get(n).copied()),
            diag,
        }));
        for d in &self.analysis.shapes.diagnostics {
            diags.push(Finding {
                node: self.by_name.get(&d.node).copied(),
                diag: note(
                    "shape",
                    Some(d.node.clone()),
                    format!("{} ({}): {}", d.node, d.op_type, d.message),
                    "pare's shape inference could not fully handle this node; shapes after it may be unknown",
                    "pin input shapes with --input-shape NAME:DIMS if they are symbolic",
                ),
            });
        }
        for n in &self.channels.notes {
            let node = self.nodes.iter().position(|x| n.contains(&x.name));
            diags.push(Finding {
                node,
                diag: note(
                    "channels",
                    node.map(|k| self.nodes[k].name.clone()),
                    n.clone(),
                    "channel analysis handled this conservatively: the groups it touches are locked",
                    "",
                ),
            });
        }
        diags.sort_by(|a, b| {
            a.severity.cmp(&b.severity).then(
                a.node
                    .map(|n| self.nodes[n].topo)
                    .cmp(&b.node.map(|n| self.nodes[n].topo)),
            )
        });
        self.node_diags.clear();
        for (k, d) in diags.iter().enumerate() {
            if let Some(n) = d.node {
                self.node_diags.entry(n).or_default().push(k);
            }
        }
        self.diagnostics = diags;
    }

    /// dtype and shape of a tensor, for boundaries and details.
    pub fn tensor_desc(&self, name: &str) -> (String, String) {
        let info = self.analysis.shapes.get(name);
        // A sequence, optional or map: its type with what is known of its elements.
        if let Some(t) = info.filter(|t| t.kind != ValueKind::Tensor) {
            return (format_info(Some(t)), String::new());
        }
        let dtype = info
            .and_then(|t| t.dtype)
            .or_else(|| {
                let g = self.graph();
                g.input
                    .iter()
                    .chain(g.output.iter())
                    .chain(g.value_info.iter())
                    .find(|v| v.name() == name)
                    .and_then(|v| v.tensor_type())
                    .and_then(|t| t.elem_type)
                    .map(crate::model::DataType)
            })
            .or_else(|| {
                self.analysis
                    .index
                    .initializers
                    .get(name)
                    .and_then(|&k| self.graph().initializer.get(k))
                    .map(|t| crate::model::DataType(t.data_type()))
            })
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| "?".into());
        let shape = match info.and_then(|t| t.shape.as_deref()) {
            Some(s) => format_shape(Some(s)),
            None => match self
                .analysis
                .index
                .initializers
                .get(name)
                .and_then(|&k| self.graph().initializer.get(k))
            {
                Some(t) => format!("{:?}", t.dims),
                None => "?".into(),
            },
        };
        (dtype, shape)
    }

    /// Boundary of a node set: tensors it reads from outside (not initializers) and tensors it
    /// produces that something outside reads (or that are graph outputs), in order.
    pub fn boundary(&self, set: &[usize]) -> (Vec<String>, Vec<String>) {
        let inside: HashSet<usize> = set.iter().copied().collect();
        let g = self.graph();
        let ix = &self.analysis.index;
        let mut ordered: Vec<usize> = set.to_vec();
        ordered.sort_by_key(|&i| self.nodes[i].topo);
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let mut seen = HashSet::new();
        for &i in &ordered {
            for t in ix.all_inputs(&g.node[i], i) {
                if ix.initializers.contains_key(t) {
                    continue;
                }
                let internal = ix.producer.get(t).is_some_and(|p| inside.contains(p));
                // Constants feeding the set travel with it.
                let constant = ix
                    .producer
                    .get(t)
                    .is_some_and(|&p| g.node[p].op_type() == "Constant");
                if !internal && !constant && seen.insert(t.to_string()) {
                    inputs.push(t.to_string());
                }
            }
        }
        for &i in &ordered {
            for t in g.node[i].output.iter().filter(|t| !t.is_empty()) {
                let read_outside = ix
                    .consumers
                    .get(t)
                    .is_some_and(|c| c.iter().any(|k| !inside.contains(k)));
                if read_outside || ix.outputs.iter().any(|o| o == t) {
                    outputs.push(t.clone());
                }
            }
        }
        (inputs, outputs)
    }
}
