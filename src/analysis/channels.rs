//! Channel dependency analysis: which channels of which tensors must be pruned together.
//!
//! Every producer of channels (a Conv's output channels, a Gemm's output features, a graph
//! input) creates a *space* of channel atoms. Each tensor's channel axis is described as the
//! list of atoms at its indices, so Concat juxtaposes lists, Flatten repeats each atom over the
//! spatial positions it covers, Transpose moves the axis and channel-wise ops pass the list
//! through. Broadcasting elementwise ops (Add, Mul, …) *unify* the atoms position by position
//! (union-find), which is how a residual Add ties a block's last conv to its shortcut (seed
//! P1/P4) and a squeeze-excitation Mul ties the gate to the features. A channel group is a
//! connected set of spaces; its prunable units are the union-find classes of its atoms.
//!
//! Anything pare does not understand *locks* the groups it touches with a reason (seed P12):
//! it is never assumed channel-preserving. Graph inputs and outputs are locked (seed P3).

use std::collections::BTreeMap;

// FxHash: SipHash dominated the analysis of big graphs.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use serde::Serialize;

use crate::model::Analysis;
use crate::model::proto::{GraphProto, NodeProto};
use crate::model::shape::{Dim, Value};
use crate::model::tensor::{DataType, to_i64};
use crate::ops::{self, ChannelRule, PerChannel, ReduceAxes, ShapeFlow};

mod seq;

/// How a node's output relates to shape arithmetic, from the op table.
fn shape_flow(node: &NodeProto) -> ShapeFlow {
    ops::lookup(node.op_type()).map_or(ShapeFlow::None, |d| d.shape_flow)
}

/// Index of one channel atom.
pub type Atom = u32;

/// Channel counts above this are treated as unknown: no real layer has a million channels, and
/// the analysis allocates one atom per channel.
const MAX_CHANNELS: i64 = 1 << 20;

/// Atoms (channels of all tensors) the analysis creates beyond one per 4 bytes of the file.
const MAX_ATOMS: usize = 1 << 21;

/// What a weight member is to its node, for reports and importance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Output-channel slice of a Conv/ConvTranspose/Gemm/MatMul weight (a filter).
    ProducerWeight,
    ProducerBias,
    /// Input-channel slice of a consumer's weight.
    ConsumerWeight,
    /// BatchNorm / InstanceNorm scale (gamma).
    NormScale,
    NormBias,
    NormStat,
    /// A constant operand of a broadcasting op (per-channel scale, PRelu slope, …).
    Elementwise,
}

/// A slice of an initializer (or Constant value) that follows channel atoms along one axis.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub node: String,
    /// Initializer name, or the output of the `Constant` node holding the tensor.
    pub tensor: String,
    pub axis: usize,
    pub role: Role,
    /// Atom at each index of `axis`.
    #[serde(skip)]
    pub atoms: Vec<Atom>,
}

/// An integer somewhere in the model that equals a channel count and must be rewritten when
/// channels are removed: a Reshape target dim (seed P7), Split sizes, a depthwise `group`.
#[derive(Clone, Debug, Serialize)]
pub struct CountMember {
    pub node: String,
    pub place: CountPlace,
    /// The new value is the number of kept entries of this list.
    #[serde(skip)]
    pub atoms: Vec<Atom>,
}

/// Where a count lives.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum CountPlace {
    /// Element `index` of an int initializer or Constant tensor.
    Tensor { tensor: String, index: usize },
    /// Element `index` of an int attribute (or the int attribute itself with index 0).
    Attribute { attribute: String, index: usize },
    /// Element `index` of the node's input `input` (Split sizes, Slice starts/ends). The
    /// rewrite gives the node a private constant holding `base` with the new counts, because
    /// such constants are often shared (PyTorch dedupes `[16, 16]`) or computed at run time
    /// from `Shape` (opset-13 `chunk`), where the run-time formula would not follow an uneven
    /// pruning of the pieces.
    Input {
        input: usize,
        index: usize,
        /// The whole input's values before pruning (negative slice bounds normalised).
        #[serde(skip)]
        base: Vec<i64>,
        /// The constant's stored values; `None` when computed at run time.
        #[serde(skip)]
        stored: Option<Vec<i64>>,
        /// Element type of the input (Slice allows int32).
        #[serde(skip)]
        dtype: i32,
    },
}

/// A set of channels that must be pruned together.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelGroup {
    pub id: usize,
    /// Number of prunable units (coupled channel classes).
    pub channels: usize,
    /// Nodes whose output channels form this group.
    pub producers: Vec<String>,
    /// Tensors carrying these channels (for highlighting).
    pub tensors: Vec<String>,
    /// Indices into `ChannelAnalysis::members`.
    pub members: Vec<usize>,
    pub counts: Vec<usize>,
    /// Why it cannot be pruned; empty when prunable.
    pub locks: Vec<String>,
    /// What the group is (feature channels, a transformer MLP width, attention heads, …).
    pub kind: GroupKind,
    /// Channels each unit stands for in one projection (the head dim for heads, else 1):
    /// channel-count rounding applies to `units × unit_width`.
    pub unit_width: usize,
    /// Atoms of each unit; unit order follows the first space's channel order.
    #[serde(skip)]
    pub units: Vec<Vec<Atom>>,
}

impl ChannelGroup {
    pub fn prunable(&self) -> bool {
        self.locks.is_empty() && self.channels > 1
    }
}

/// Result of the analysis.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChannelAnalysis {
    pub groups: Vec<ChannelGroup>,
    pub members: Vec<Member>,
    pub counts: Vec<CountMember>,
    /// Per tensor: channel axis and atoms (for the TUI and rewrite).
    #[serde(skip)]
    pub layouts: HashMap<String, Layout>,
    /// Atom → group id.
    #[serde(skip)]
    pub atom_group: Vec<usize>,
    /// Atom → unit index within its group.
    #[serde(skip)]
    pub atom_unit: Vec<usize>,
    /// Notes about ops handled conservatively.
    pub notes: Vec<String>,
}

/// The channel axis of a tensor and the atom at each of its indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub axis: usize,
    pub atoms: Vec<Atom>,
}

/// Union-find over atoms, iterative (path halving), never recursive.
#[derive(Clone, Debug, Default)]
struct Dsu {
    parent: Vec<Atom>,
}

impl Dsu {
    fn add(&mut self, n: usize) -> Atom {
        let start = self.parent.len() as Atom;
        for k in 0..n {
            self.parent.push(start + k as Atom);
        }
        start
    }
    fn find(&mut self, mut a: Atom) -> Atom {
        while self.parent[a as usize] != a {
            let p = self.parent[a as usize];
            self.parent[a as usize] = self.parent[p as usize];
            a = self.parent[a as usize];
        }
        a
    }
    fn union(&mut self, a: Atom, b: Atom) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }
}

struct Space {
    producer: String,
    tensor: String,
    start: Atom,
    len: usize,
    kind: SpaceKind,
}

/// What produced a space, for naming groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpaceKind {
    Other,
    /// A Linear layer (MatMul / Gemm with a constant weight).
    Linear,
    /// The hidden units of a recurrent layer.
    Recurrent,
}

/// What a group is, as `pare groups` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Feature channels (convolutions, residual streams, …).
    #[default]
    Channels,
    /// The hidden width between two Linear layers (a transformer MLP).
    Mlp,
    /// Attention heads: each unit is a whole head of `unit_width` channels per projection.
    Heads,
    /// Hidden units of an LSTM / GRU / RNN (both directions alike).
    Recurrent,
}

impl GroupKind {
    pub fn label(self) -> &'static str {
        match self {
            GroupKind::Channels => "channels",
            GroupKind::Mlp => "mlp",
            GroupKind::Heads => "heads",
            GroupKind::Recurrent => "recurrent",
        }
    }
}

/// Where an entry of a shape tensor comes from.
enum EntrySource {
    Const(String, usize),
    Dynamic,
}

/// Working state of one analysis.
struct Builder<'a> {
    a: &'a Analysis,
    g: &'a GraphProto,
    dsu: Dsu,
    spaces: Vec<Space>,
    layouts: HashMap<String, Layout>,
    members: Vec<Member>,
    counts: Vec<CountMember>,
    /// (atoms, reason) to lock after grouping.
    locks: Vec<(Vec<Atom>, String)>,
    /// Tensors produced by Constant nodes → node index.
    constants: HashMap<String, usize>,
    notes: Vec<String>,
    /// (an atom of a head group, head dim) for every Reshape that split heads.
    head_marks: Vec<(Atom, usize)>,
    /// An atom of every input a Linear layer consumes.
    linear_inputs: Vec<Atom>,
}

impl<'a> Builder<'a> {
    fn new(a: &'a Analysis) -> Self {
        let g = a.graph();
        let constants = g
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type() == "Constant")
            .filter_map(|(i, n)| n.output.first().map(|o| (o.clone(), i)))
            .collect();
        Self {
            a,
            g,
            dsu: Dsu::default(),
            spaces: Vec::new(),
            layouts: HashMap::default(),
            members: Vec::new(),
            counts: Vec::new(),
            locks: Vec::new(),
            constants,
            notes: Vec::new(),
            head_marks: Vec::new(),
            linear_inputs: Vec::new(),
        }
    }

    /// The static shape of a tensor; one with a dim above [`MAX_CHANNELS`] counts as unknown
    /// (a corrupt or hostile model must not make the analysis allocate per channel).
    fn shape(&self, t: &str) -> Option<Vec<i64>> {
        self.a
            .shapes
            .static_shape(t)
            .filter(|s| s.iter().all(|&d| d <= MAX_CHANNELS))
    }

    /// The dims of a tensor, symbolic ones included: channel groups depend on the channel
    /// axis only, so a symbolic batch, height or width must not lock anything.
    fn dims(&self, t: &str) -> Option<&'a [Dim]> {
        self.a.shapes.shape(t)
    }

    /// One concrete dim of a tensor (the others may be symbolic).
    fn dim(&self, t: &str, axis: usize) -> Option<i64> {
        self.dims(t)?
            .get(axis)?
            .known()
            .filter(|&d| d <= MAX_CHANNELS)
    }

    /// Known integer contents of a tensor: an initializer or Constant, or what shape
    /// inference computed (shape arithmetic).
    fn int_contents(&self, t: &str) -> Option<Vec<i64>> {
        if let Some(src) = self.const_source(t)
            && let Some(v) = int_values(self.a, &src)
        {
            return Some(v);
        }
        self.a.shapes.get(t)?.int_values()
    }

    fn rank(&self, t: &str) -> Option<usize> {
        self.a.shapes.shape(t).map(|s| s.len())
    }

    /// A tensor that is an initializer or a Constant output (possibly behind Identity nodes, as
    /// PyTorch exports weights shared between two calls of one module): weights pare can slice.
    fn is_const(&self, t: &str) -> bool {
        self.const_source(t).is_some()
    }

    /// The initializer or Constant output a tensor reads, following Identity nodes.
    fn const_source(&self, t: &str) -> Option<String> {
        let mut cur = t.to_string();
        for _ in 0..64 {
            if self.a.index.initializers.contains_key(&cur) || self.constants.contains_key(&cur) {
                return Some(cur);
            }
            let p = *self.a.index.producer.get(&cur)?;
            let node = &self.g.node[p];
            if node.op_type() != "Identity" {
                return None;
            }
            cur = node.input.first()?.clone();
        }
        None
    }

    /// True when a tensor is computed from runtime shapes (`Shape`), so it follows pruning by
    /// itself and needs no rewrite.
    fn shape_derived(&self, t: &str) -> bool {
        let mut stack = vec![t.to_string()];
        let mut seen = HashSet::default();
        while let Some(cur) = stack.pop() {
            if !seen.insert(cur.clone()) || seen.len() > 256 {
                continue;
            }
            let Some(&p) = self.a.index.producer.get(&cur) else {
                continue;
            };
            let node = &self.g.node[p];
            match shape_flow(node) {
                ShapeFlow::Source => return true,
                ShapeFlow::Derived | ShapeFlow::SameEntries | ShapeFlow::Concat => {
                    stack.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
                }
                ShapeFlow::None => {}
            }
        }
        false
    }

    fn new_space(&mut self, producer: &str, tensor: &str, n: usize) -> Vec<Atom> {
        // Products of dims (grouped convolutions) can still exceed the cap, and many spaces
        // together must stay within what the file could describe: past the budget a space
        // gets no atoms, so its consumers meet a size mismatch and lock.
        let budget = MAX_ATOMS + (self.a.model.file_size / 4) as usize;
        let left = budget.saturating_sub(self.dsu.parent.len());
        let n = n.min(MAX_CHANNELS as usize).min(left);
        let start = self.dsu.add(n);
        self.spaces.push(Space {
            producer: producer.to_string(),
            tensor: tensor.to_string(),
            start,
            len: n,
            kind: SpaceKind::Other,
        });
        (start..start + n as Atom).collect()
    }

    /// Names the kind of the space created last.
    fn mark_space(&mut self, kind: SpaceKind) {
        if let Some(s) = self.spaces.last_mut() {
            s.kind = kind;
        }
    }

    /// Gives `tensor` fresh locked atoms on axis 1 (or its only axis), when its size is known.
    fn opaque(&mut self, producer: &str, tensor: &str, reason: &str) {
        let Some(rank) = self.rank(tensor).filter(|&r| r > 0) else {
            return;
        };
        let axis = if rank >= 2 { 1 } else { 0 };
        let Some(n) = self.dim(tensor, axis) else {
            return;
        };
        let n = n.max(0) as usize;
        let atoms = self.new_space(producer, tensor, n);
        self.locks.push((atoms.clone(), reason.to_string()));
        self.layouts
            .insert(tensor.to_string(), Layout { axis, atoms });
    }

    fn lock_tensor(&mut self, tensor: &str, reason: String) {
        if let Some(l) = self.layouts.get(tensor) {
            self.locks.push((l.atoms.clone(), reason));
        }
    }

    fn member(
        &mut self,
        node: &NodeProto,
        tensor: &str,
        axis: usize,
        role: Role,
        atoms: Vec<Atom>,
    ) {
        let tensor = self
            .const_source(tensor)
            .unwrap_or_else(|| tensor.to_string());
        self.members.push(Member {
            node: node.display_name(),
            tensor,
            axis,
            role,
            atoms,
        });
    }

    fn unify(&mut self, a: &[Atom], b: &[Atom]) {
        for (x, y) in a.iter().zip(b) {
            self.dsu.union(*x, *y);
        }
    }

    /// Locks every layout this node reads or writes, with a reason naming it.
    fn barrier(&mut self, node: &NodeProto, why: &str) {
        let reason = format!("{} '{}': {why}", node.op_type(), node.display_name());
        for t in node.input.iter().filter(|s| !s.is_empty()) {
            self.lock_tensor(t, reason.clone());
        }
        for o in node.output.iter().filter(|s| !s.is_empty()) {
            self.opaque(&node.display_name(), o, &reason);
        }
    }

    fn run(mut self) -> ChannelAnalysis {
        let g = self.g;
        // Graph inputs: their channels are fixed by whoever feeds the model.
        for name in self.a.index.inputs.clone() {
            self.opaque("<graph input>", &name, &format!("graph input '{name}'"));
        }
        let topo = self.a.index.topo.clone();
        for id in topo {
            let node = &g.node[id];
            self.visit(id, node);
        }
        // Graph outputs are consumed by code pare cannot see (seed P3).
        for o in self.a.index.outputs.clone() {
            self.lock_tensor(&o, format!("reaches graph output '{o}'"));
        }
        self.tie_shared_initializers();
        self.finish()
    }

    fn visit(&mut self, id: usize, node: &NodeProto) {
        let op = node.op_type();
        let x = node.input.first().map(String::as_str).unwrap_or("");
        let out = node.output.first().cloned().unwrap_or_default();
        if !node.op_domain().is_empty() {
            self.barrier(node, &format!("custom op in domain '{}' (pare cannot see inside; tag it to treat it as channel-wise)", node.op_domain()));
            return;
        }
        if self.a.index.implicit_inputs.contains_key(&id) || node.subgraphs().next().is_some() {
            let reason = format!(
                "{op} '{}': reads tensors inside a nested graph",
                node.display_name()
            );
            for t in self
                .a
                .index
                .implicit_inputs
                .get(&id)
                .cloned()
                .unwrap_or_default()
            {
                self.lock_tensor(&t, reason.clone());
            }
            self.barrier(node, "control flow (If/Loop/Scan)");
            return;
        }
        // Ops missing from the table lock (the documented fallback).
        let rule = ops::lookup(op).map_or(ChannelRule::Lock, |d| d.channels);
        match rule {
            ChannelRule::None => {}
            ChannelRule::Conv { transpose } => self.conv(node, transpose),
            ChannelRule::Gemm => self.gemm(node),
            ChannelRule::MatMul => self.matmul(node),
            ChannelRule::Channelwise(p) => self.channelwise(node, p),
            ChannelRule::Elementwise => self.elementwise(node),
            ChannelRule::Pad => self.pad(node),
            ChannelRule::Concat => self.concat(node),
            ChannelRule::Split => self.split(node),
            ChannelRule::Transpose => self.transpose(node),
            ChannelRule::Reshape => self.reshape(node, true),
            ChannelRule::Flatten => self.reshape(node, false),
            ChannelRule::Squeeze => self.squeeze(node),
            ChannelRule::Reduce(axes) => self.reduce_like(node, axes),
            ChannelRule::Slice => self.slice_gather(node, false),
            ChannelRule::Gather => self.slice_gather(node, true),
            ChannelRule::LayerNorm => self.layer_norm(node),
            ChannelRule::Expand => self.expand(node),
            ChannelRule::Recurrent { gates } => self.recurrent(node, gates),
            ChannelRule::Lock => {
                if self.layouts.contains_key(x) || !out.is_empty() {
                    self.barrier(node, "pare has no channel rule for this op, so it never assumes it is channel-preserving (seed P12)");
                }
            }
        }
    }

    fn channelwise(&mut self, node: &NodeProto, params: PerChannel) {
        let x = node.input.first().cloned().unwrap_or_default();
        let Some(layout) = self.layouts.get(&x).cloned() else {
            return;
        };
        match params {
            PerChannel::Plain => {}
            // Per-channel parameters (BN / InstanceNorm scale, bias, statistics) are members.
            PerChannel::Params(params) => {
                for &(k, role) in params {
                    if let Some(t) = node.input.get(k).filter(|t| self.is_const(t)) {
                        let t = t.clone();
                        self.member(node, &t, 0, role, layout.atoms.clone());
                    }
                }
            }
            PerChannel::Slope => {
                let slope = node.input.get(1).cloned().unwrap_or_default();
                if !self.operand(node, &slope, &layout, &x) {
                    return;
                }
            }
            PerChannel::Guard(check) => {
                if let Some(why) = check(node, layout.axis, self.rank(&x)) {
                    self.barrier(node, &why);
                    return;
                }
            }
            PerChannel::Resize { scales } => {
                // A scale on the channel axis would mix channels.
                let scales = node.input.get(scales);
                if let Some(Value::Float(v)) = scales
                    .and_then(|s| self.a.shapes.get(s))
                    .and_then(|i| i.value.as_ref())
                    && v.get(layout.axis).is_some_and(|s| (*s - 1.0).abs() > 1e-9)
                {
                    self.barrier(node, "resizes the channel axis");
                    return;
                }
                if let Some(sizes) = node.input.get(3).filter(|s| !s.is_empty()) {
                    let sizes = sizes.clone();
                    self.count_at(node, &sizes, layout.axis, &layout.atoms);
                }
            }
        }
        for o in node.output.iter().take(1) {
            self.layouts.insert(o.clone(), layout.clone());
        }
    }

    /// Adds a broadcast operand; returns false (after locking) when it cannot be followed.
    fn operand(&mut self, node: &NodeProto, operand: &str, layout: &Layout, out: &str) -> bool {
        let out_rank = self
            .rank(out)
            .or_else(|| self.rank(node.input.first().map(String::as_str).unwrap_or("")))
            .unwrap_or(0);
        let Some(shape) = self.dims(operand) else {
            self.barrier(node, &format!("operand '{operand}' has an unknown rank"));
            return false;
        };
        // Align from the right (numpy broadcasting).
        let offset = out_rank as isize - shape.len() as isize;
        let pos = layout.axis as isize - offset;
        if pos < 0 || pos as usize >= shape.len() || shape[pos as usize] == Dim::Known(1) {
            return true; // broadcast over channels
        }
        let pos = pos as usize;
        if shape[pos] != Dim::Known(layout.atoms.len() as i64) {
            let why = format!(
                "operand '{operand}' has {} entries on the channel axis, expected {}",
                shape[pos],
                layout.atoms.len()
            );
            self.barrier(node, &why);
            return false;
        }
        if self.is_const(operand) {
            self.member(node, operand, pos, Role::Elementwise, layout.atoms.clone());
            true
        } else if let Some(l) = self.layouts.get(operand).cloned() {
            if l.axis == pos && l.atoms.len() == layout.atoms.len() {
                self.unify(&l.atoms, &layout.atoms);
                true
            } else {
                self.barrier(
                    node,
                    &format!("operand '{operand}' carries channels on another axis"),
                );
                false
            }
        } else {
            self.barrier(
                node,
                &format!("operand '{operand}' has channels pare cannot trace"),
            );
            false
        }
    }

    fn elementwise(&mut self, node: &NodeProto) {
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(out_rank) = self.rank(&out) else {
            // Without the output's rank pare cannot align operands.
            if node.input.iter().any(|i| self.layouts.contains_key(i)) {
                self.barrier(
                    node,
                    "output rank unknown (pin input shapes with --input-shape)",
                );
            }
            return;
        };
        // The reference layout: an operand whose channel axis has the output's full size
        // (only that axis needs to be known; the others may be symbolic).
        let reference = node.input.iter().filter(|i| !i.is_empty()).find_map(|i| {
            let l = self.layouts.get(i)?;
            let r = self.rank(i)?;
            let axis = (l.axis + out_rank).checked_sub(r)?;
            (self.dim(&out, axis) == Some(l.atoms.len() as i64)).then(|| Layout {
                axis,
                atoms: l.atoms.clone(),
            })
        });
        let Some(layout) = reference else {
            if node.input.iter().any(|i| self.layouts.contains_key(i)) {
                // Channels broadcast against something bigger: e.g. [N,1,H,W] + [N,C,H,W] with
                // the [N,C] side untraced. Lock what we know.
                self.barrier(node, "channel axis broadcasts against an untraced operand");
            }
            return;
        };
        for inp in node.input.clone().iter().filter(|i| !i.is_empty()) {
            if !self.operand(node, inp, &layout, &out) {
                return;
            }
        }
        self.layouts.insert(out, layout);
    }

    fn conv(&mut self, node: &NodeProto, transpose: bool) {
        let name = node.display_name();
        let x = node.input.first().cloned().unwrap_or_default();
        let w = node.input.get(1).cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let group = node.attr_i("group").unwrap_or(1).max(1) as usize;
        let (Some(wshape), true) = (self.shape(&w), self.is_const(&w)) else {
            self.barrier(node, "weights are not a constant initializer");
            return;
        };
        let mut x_layout = self.layouts.get(&x).cloned();
        if x_layout.as_ref().is_some_and(|l| l.axis != 1) {
            // The input's group locks; the output channels are still this conv's own.
            self.lock_tensor(
                &x,
                format!(
                    "{} '{name}': input channels are not on axis 1",
                    node.op_type()
                ),
            );
            x_layout = None;
        }
        // A malformed weight (rank < 2, negative dims) locks instead of being indexed.
        let (Some(&w0), Some(&w1)) = (wshape.first(), wshape.get(1)) else {
            self.barrier(
                node,
                &format!(
                    "weight has rank {}; pare needs output and input channel axes",
                    wshape.len()
                ),
            );
            return;
        };
        if w0 < 0 || w1 < 0 {
            self.barrier(node, "weight has a negative dimension");
            return;
        }
        let cin = x_layout
            .as_ref()
            .map(|l| l.atoms.len())
            .or_else(|| self.dim(&x, 1).map(|c| c.max(0) as usize));
        let cout = if transpose {
            (w1 as usize).saturating_mul(group)
        } else {
            w0 as usize
        };
        let bias = node.input.get(2).filter(|b| !b.is_empty()).cloned();
        if group == 1 {
            let (w_in, w_out) = if transpose { (0, 1) } else { (1, 0) };
            let w_cin = if transpose { w0 } else { w1 } as usize;
            if let Some(l) = x_layout.as_ref().filter(|l| l.atoms.len() != w_cin) {
                let why = format!(
                    "weight has {w_cin} input channels but the input carries {}",
                    l.atoms.len()
                );
                self.barrier(node, &why);
                return;
            }
            let out_atoms = self.new_space(&name, &out, cout);
            self.member(node, &w, w_out, Role::ProducerWeight, out_atoms.clone());
            if let Some(l) = &x_layout {
                self.member(node, &w, w_in, Role::ConsumerWeight, l.atoms.clone());
            }
            if let Some(b) = bias {
                self.member(node, &b, 0, Role::ProducerBias, out_atoms.clone());
            }
            self.layouts.insert(
                out,
                Layout {
                    axis: 1,
                    atoms: out_atoms,
                },
            );
        } else if Some(group) == cin && cout == group && !transpose {
            // Depthwise: output channel c is input channel c filtered alone.
            let Some(l) = x_layout else {
                self.opaque(
                    &name,
                    &out,
                    &format!("Conv '{name}': depthwise input untraced"),
                );
                return;
            };
            self.member(node, &w, 0, Role::ProducerWeight, l.atoms.clone());
            if let Some(b) = bias {
                self.member(node, &b, 0, Role::ProducerBias, l.atoms.clone());
            }
            self.counts.push(CountMember {
                node: name,
                place: CountPlace::Attribute {
                    attribute: "group".into(),
                    index: 0,
                },
                atoms: l.atoms.clone(),
            });
            self.layouts.insert(out, l);
        } else {
            self.barrier(
                node,
                &format!("grouped convolution (group={group}) needs equal channels per group; pare keeps it whole"),
            );
        }
    }

    fn gemm(&mut self, node: &NodeProto) {
        let name = node.display_name();
        let a = node.input.first().cloned().unwrap_or_default();
        let b = node.input.get(1).cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let trans_a = node.attr_i("transA").unwrap_or(0) != 0;
        let trans_b = node.attr_i("transB").unwrap_or(0) != 0;
        let (Some(bshape), true) = (self.shape(&b), self.is_const(&b)) else {
            self.barrier(node, "B is not a constant initializer");
            return;
        };
        if bshape.len() != 2 {
            self.barrier(node, "B is not 2-D");
            return;
        }
        let a_layout = self.layouts.get(&a).cloned();
        if trans_a && a_layout.is_some() {
            self.barrier(node, "transA=1");
            return;
        }
        let n = if trans_b { bshape[0] } else { bshape[1] } as usize;
        let out_atoms = self.new_space(&name, &out, n);
        self.mark_space(SpaceKind::Linear);
        let (b_in, b_out) = if trans_b { (1, 0) } else { (0, 1) };
        self.member(node, &b, b_out, Role::ProducerWeight, out_atoms.clone());
        if let Some(l) = a_layout {
            if l.axis != 1 {
                // The input's group locks; the output features are still this layer's own.
                self.lock_tensor(
                    &a,
                    format!("Gemm '{name}': input features are not on axis 1"),
                );
            } else {
                self.linear_inputs.extend(l.atoms.first());
                self.member(node, &b, b_in, Role::ConsumerWeight, l.atoms);
            }
        }
        if let Some(c) = node.input.get(2).filter(|c| !c.is_empty()).cloned() {
            let cs = self.shape(&c).unwrap_or_default();
            if self.is_const(&c) && cs.last().copied() == Some(n as i64) {
                self.member(
                    node,
                    &c,
                    cs.len() - 1,
                    Role::ProducerBias,
                    out_atoms.clone(),
                );
            } else if cs.iter().product::<i64>() != 1 {
                self.locks.push((
                    out_atoms.clone(),
                    format!("Gemm '{name}': bias C is not per-feature constant"),
                ));
            }
        }
        self.layouts.insert(
            out,
            Layout {
                axis: 1,
                atoms: out_atoms,
            },
        );
    }

    fn matmul(&mut self, node: &NodeProto) {
        let name = node.display_name();
        let a = node.input.first().cloned().unwrap_or_default();
        let b = node.input.get(1).cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        if !self.is_const(&b) {
            self.act_matmul(node);
            return;
        }
        let (Some(bshape), Some(ra)) = (self.shape(&b), self.rank(&a)) else {
            self.barrier(node, "weight or input shape unknown");
            return;
        };
        if bshape.len() != 2 || ra < 2 {
            self.barrier(node, "weight is not 2-D");
            return;
        }
        if let Some(l) = self.layouts.get(&a).cloned() {
            if l.axis != ra - 1 {
                // The input's group locks; the output features are still this layer's own.
                self.lock_tensor(
                    &a,
                    format!("MatMul '{name}': features are not on the last axis"),
                );
            } else {
                self.linear_inputs.extend(l.atoms.first());
                self.member(node, &b, 0, Role::ConsumerWeight, l.atoms);
            }
        }
        let out_atoms = self.new_space(&name, &out, bshape[1] as usize);
        self.mark_space(SpaceKind::Linear);
        self.member(node, &b, 1, Role::ProducerWeight, out_atoms.clone());
        self.layouts.insert(
            out,
            Layout {
                axis: ra - 1,
                atoms: out_atoms,
            },
        );
    }

    fn pad(&mut self, node: &NodeProto) {
        let x = node.input.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let rank = self.rank(&x).unwrap_or(0);
        let pads: Option<Vec<i64>> = match node.attr_ints("pads") {
            Some(p) => Some(p.to_vec()),
            None => node
                .input
                .get(1)
                .and_then(|p| match self.a.shapes.get(p)?.value.as_ref()? {
                    Value::Int(v) => v.iter().map(Dim::known).collect(),
                    _ => None,
                }),
        };
        let axes_given = node.input.get(3).is_some_and(|s| !s.is_empty());
        match pads {
            Some(p)
                if !axes_given
                    && p.len() == 2 * rank
                    && l.axis < rank
                    && p[l.axis] == 0
                    && p[l.axis + rank] == 0 =>
            {
                self.layouts.insert(first_output(node), l);
            }
            _ if axes_given => {
                // Opset 18 axes input: fine when the channel axis is not listed.
                let axes =
                    node.input
                        .get(3)
                        .and_then(|a| match self.a.shapes.get(a)?.value.as_ref()? {
                            Value::Int(v) => v.iter().map(Dim::known).collect::<Option<Vec<i64>>>(),
                            _ => None,
                        });
                let touches = axes.map(|ax| {
                    ax.iter()
                        .any(|&a| (if a < 0 { a + rank as i64 } else { a }) as usize == l.axis)
                });
                if touches == Some(false) {
                    self.layouts.insert(first_output(node), l);
                } else {
                    self.barrier(node, "pads the channel axis (or pads are not constant)");
                }
            }
            _ => self.barrier(node, "pads the channel axis (or pads are not constant)"),
        }
    }

    fn concat(&mut self, node: &NodeProto) {
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(rank) = self.rank(&out) else {
            self.barrier(node, "rank unknown");
            return;
        };
        let axis = norm_axis(node.attr_i("axis").unwrap_or(0), rank);
        let inputs: Vec<String> = node
            .input
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        // Channel axis of the pieces (first traced input decides).
        let Some(ch) = inputs
            .iter()
            .find_map(|i| self.layouts.get(i).map(|l| l.axis))
        else {
            return;
        };
        // Constant pieces (rare) get their own fixed atoms so positions stay right.
        let mut pieces = Vec::new();
        for i in &inputs {
            match self.layouts.get(i).cloned() {
                Some(l) if l.axis == ch => pieces.push(l),
                Some(_) => {
                    self.barrier(node, "inputs carry channels on different axes");
                    return;
                }
                None => {
                    let Some(n) = self.dim(i, ch) else {
                        self.barrier(node, "an input has an unknown size on the channel axis");
                        return;
                    };
                    let n = n.max(0) as usize;
                    let atoms = self.new_space(&node.display_name(), i, n);
                    self.locks.push((
                        atoms.clone(),
                        format!("Concat '{}': input '{i}' is untraced", node.display_name()),
                    ));
                    pieces.push(Layout { axis: ch, atoms });
                }
            }
        }
        if Some(axis) == Some(ch) {
            let atoms: Vec<Atom> = pieces.into_iter().flat_map(|l| l.atoms).collect();
            self.layouts.insert(out, Layout { axis: ch, atoms });
        } else {
            // Concatenating along another axis: every piece's channels line up.
            let first = pieces[0].clone();
            for p in &pieces[1..] {
                if p.atoms.len() != first.atoms.len() {
                    self.barrier(node, "pieces have different channel counts");
                    return;
                }
                self.unify(&first.atoms, &p.atoms);
            }
            self.layouts.insert(out, first);
        }
    }

    /// Split along the channel axis: each output carries its range of the input's atoms
    /// (Concat in reverse), and its size becomes the count of kept atoms in that range.
    fn split(&mut self, node: &NodeProto) {
        let x = node.input.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let rank = self.rank(&x).unwrap_or(0);
        let axis = norm_axis(node.attr_i("axis").unwrap_or(0), rank);
        let outputs: Vec<String> = node.output.clone();
        if axis != l.axis {
            for o in outputs.into_iter().filter(|o| !o.is_empty()) {
                self.layouts.insert(o, l.clone());
            }
            return;
        }
        let split_in = node.input.get(1).filter(|s| !s.is_empty()).cloned();
        let attr = node.attr_ints("split").map(<[i64]>::to_vec);
        // Sizes: the attribute, the input's (constant or inferred) values, else output dims.
        let sizes = attr
            .clone()
            .or_else(|| split_in.as_ref().and_then(|t| self.int_contents(t)))
            .or_else(|| outputs.iter().map(|o| self.dim(o, axis)).collect());
        let sizes = sizes.filter(|v| {
            v.len() == outputs.len()
                && v.iter().all(|&n| n >= 0)
                && v.iter().sum::<i64>() == l.atoms.len() as i64
        });
        let Some(sizes) = sizes else {
            self.barrier(node, "split sizes on the channel axis unknown");
            return;
        };
        let mut start = 0;
        let mut pieces = Vec::with_capacity(sizes.len());
        for (o, &n) in outputs.iter().zip(&sizes) {
            let atoms = l.atoms[start..start + n as usize].to_vec();
            start += n as usize;
            pieces.push(atoms.clone());
            if !o.is_empty() {
                self.layouts.insert(o.clone(), Layout { axis, atoms });
            }
        }
        let stored = split_in.as_ref().and_then(|t| {
            self.const_source(t)
                .and_then(|src| int_values(self.a, &src))
        });
        for (k, atoms) in pieces.iter().enumerate() {
            let place = match (&attr, &split_in) {
                (Some(_), _) => CountPlace::Attribute {
                    attribute: "split".into(),
                    index: k,
                },
                (None, Some(_)) => CountPlace::Input {
                    input: 1,
                    index: k,
                    base: sizes.clone(),
                    stored: stored.clone(),
                    dtype: DataType::INT64.0,
                },
                // Even split (no sizes, or opset 18 `num_outputs`): tied below.
                (None, None) => continue,
            };
            self.counts.push(CountMember {
                node: node.display_name(),
                place,
                atoms: atoms.clone(),
            });
        }
        if attr.is_none() && split_in.is_none() && !pieces.is_empty() {
            // The runtime splits evenly: the pieces are pruned alike, or not at all.
            if pieces.iter().all(|p| p.len() == pieces[0].len()) {
                for p in &pieces[1..] {
                    self.unify(&pieces[0], p);
                }
                self.notes.push(format!(
                    "Split '{}' splits evenly: its pieces are pruned alike",
                    node.display_name()
                ));
            } else {
                self.barrier(node, "splits unevenly without explicit sizes");
            }
        }
    }

    fn transpose(&mut self, node: &NodeProto) {
        let x = node.input.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let rank = self.rank(&x).unwrap_or(0);
        let perm: Vec<usize> = match node.attr_ints("perm") {
            Some(p) => p.iter().map(|&v| norm_axis(v, rank)).collect(),
            None => (0..rank).rev().collect(),
        };
        match perm.iter().position(|&p| p == l.axis) {
            Some(axis) => {
                self.layouts.insert(
                    first_output(node),
                    Layout {
                        axis,
                        atoms: l.atoms,
                    },
                );
            }
            None => self.barrier(node, "invalid perm"),
        }
    }

    fn squeeze(&mut self, node: &NodeProto) {
        let x = node.input.first().cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        if let Some(axis) = self.squeeze_axis(node, &x, l.axis) {
            match axis {
                Some(axis) => {
                    let atoms = l.atoms;
                    self.layouts.insert(out, Layout { axis, atoms });
                }
                None => self.barrier(node, "removes the channel axis"),
            }
            return;
        }
        let (Some(xs), Some(os)) = (self.dims(&x), self.dims(&out)) else {
            self.barrier(node, "ranks unknown");
            return;
        };
        // Symbolic dims (batch) count as non-unit; a dim nothing is known about could be 1.
        if xs[..l.axis.min(xs.len())].contains(&Dim::Unknown) || os.contains(&Dim::Unknown) {
            self.barrier(node, "shapes unknown");
            return;
        }
        // Map axes by matching non-unit structure: count the dims before the channel axis.
        let one = Dim::Known(1);
        let c = Dim::Known(l.atoms.len() as i64);
        let before = xs[..l.axis.min(xs.len())]
            .iter()
            .filter(|&d| *d != one)
            .count();
        let mut seen = 0;
        let mut found = None;
        for (k, d) in os.iter().enumerate() {
            if seen == before && *d == c {
                found = Some(k);
                break;
            }
            if *d != one {
                seen += 1;
            }
        }
        match found {
            Some(axis) => {
                self.layouts.insert(
                    out,
                    Layout {
                        axis,
                        atoms: l.atoms,
                    },
                );
            }
            None => self.barrier(node, "removes the channel axis"),
        }
    }

    /// The channel axis after a Squeeze/Unsqueeze with known axes (`Some(None)`: squeezed
    /// away); `None` when the axes are not known (then the shapes decide).
    fn squeeze_axis(&self, node: &NodeProto, x: &str, axis: usize) -> Option<Option<usize>> {
        let axes = match node.attr_ints("axes") {
            Some(a) => a.to_vec(),
            None => self.int_contents(node.input.get(1).filter(|s| !s.is_empty())?)?,
        };
        let rank = self.rank(x)?;
        if node.op_type() == "Unsqueeze" {
            let mut norm: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, rank + axes.len()))
                .collect();
            norm.sort_unstable();
            let mut new = axis;
            for a in norm {
                if a <= new {
                    new += 1;
                }
            }
            return Some(Some(new));
        }
        let norm: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect();
        if norm.contains(&axis) {
            return Some(None);
        }
        Some(Some(axis - norm.iter().filter(|&&a| a < axis).count()))
    }

    fn reduce_like(&mut self, node: &NodeProto, kind: ReduceAxes) {
        let x = node.input.first().cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let rank = self.rank(&x).unwrap_or(0);
        let single_axis = kind != ReduceAxes::Axes;
        let axes: Option<Vec<usize>> = match kind {
            ReduceAxes::AxisInput => {
                match node
                    .input
                    .get(1)
                    .and_then(|a| self.a.shapes.get(a)?.value.clone())
                {
                    Some(Value::Int(v)) => v
                        .first()
                        .and_then(Dim::known)
                        .map(|a| vec![norm_axis(a, rank)]),
                    _ => None,
                }
            }
            ReduceAxes::Axis(default) => Some(vec![norm_axis(
                node.attr_i("axis").unwrap_or(default),
                rank,
            )]),
            ReduceAxes::Axes => match node.attr_ints("axes") {
                Some(a) => Some(a.iter().map(|&v| norm_axis(v, rank)).collect()),
                None => match node.input.get(1).filter(|s| !s.is_empty()) {
                    Some(t) => match self.a.shapes.get(t).and_then(|i| i.value.clone()) {
                        Some(Value::Int(v)) => v
                            .iter()
                            .map(|d| d.known().map(|a| norm_axis(a, rank)))
                            .collect(),
                        _ => None,
                    },
                    None => Some((0..rank).collect()),
                },
            },
        };
        let Some(axes) = axes else {
            self.barrier(node, "reduction axes unknown");
            return;
        };
        if axes.contains(&l.axis) {
            self.barrier(node, "mixes values across channels");
            return;
        }
        let keep = node.attr_i("keepdims").unwrap_or(1) != 0 || single_axis;
        let axis = if keep {
            l.axis
        } else {
            l.axis - axes.iter().filter(|&&a| a < l.axis).count()
        };
        self.layouts.insert(
            out,
            Layout {
                axis,
                atoms: l.atoms,
            },
        );
    }

    fn slice_gather(&mut self, node: &NodeProto, gather: bool) {
        let x = node.input.first().cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let rank = self.rank(&x).unwrap_or(0);
        if gather {
            let axis = norm_axis(node.attr_i("axis").unwrap_or(0), rank);
            let idx_rank = node.input.get(1).and_then(|i| self.rank(i));
            match (axis, idx_rank) {
                (a, Some(ir)) if a != l.axis => {
                    let new_axis = if a < l.axis { l.axis + ir - 1 } else { l.axis };
                    self.layouts.insert(
                        out,
                        Layout {
                            axis: new_axis,
                            atoms: l.atoms,
                        },
                    );
                }
                _ => self.barrier(node, "gathers along the channel axis"),
            }
            return;
        }
        self.slice(node, l, rank);
    }

    /// The starts, ends, axes and steps of a Slice: attributes before opset 10, inputs 1-4
    /// after. `None` where not known before running.
    fn slice_params(&self, node: &NodeProto, k: usize, attr: &str) -> Option<Vec<i64>> {
        if node.attr_ints("starts").is_some() {
            return node.attr_ints(attr).map(<[i64]>::to_vec);
        }
        let t = node.input.get(k).filter(|s| !s.is_empty())?;
        self.int_contents(t)
    }

    /// Slice: channels pass when the channel axis is not cut; a cut with step 1 keeps the
    /// atoms of its range, and its start/end become counts of kept atoms before them.
    fn slice(&mut self, node: &NodeProto, l: Layout, rank: usize) {
        let out = first_output(node);
        let legacy = node.attr_ints("starts").is_some();
        let (starts, ends) = (
            self.slice_params(node, 1, "starts"),
            self.slice_params(node, 2, "ends"),
        );
        let has_axes = node.attr_ints("axes").is_some()
            || (!legacy && node.input.get(3).is_some_and(|s| !s.is_empty()));
        let axes: Option<Vec<usize>> = if has_axes {
            self.slice_params(node, 3, "axes")
                .map(|v| v.iter().map(|&a| norm_axis(a, rank)).collect())
        } else {
            let n = starts.as_ref().map(Vec::len).or_else(|| {
                let t = node.input.get(1)?;
                self.dims(t)?.first()?.known().map(|n| n.max(0) as usize)
            });
            n.map(|n| (0..n).collect())
        };
        let Some(axes) = axes else {
            self.barrier(node, "sliced axes unknown");
            return;
        };
        let Some(k) = axes.iter().position(|&a| a == l.axis) else {
            self.layouts.insert(out, l);
            return;
        };
        let step = match node.input.get(4).filter(|s| !s.is_empty() && !legacy) {
            Some(_) => self
                .slice_params(node, 4, "steps")
                .and_then(|v| v.get(k).copied()),
            None => Some(1),
        };
        let (Some(starts), Some(ends), Some(1)) = (starts, ends, step) else {
            let c = Some(l.atoms.len() as i64);
            if self.dim(&first_output(node), l.axis) == c
                && self.dim(node.input.first().map_or("", String::as_str), l.axis) == c
            {
                // The whole axis, whatever the run-time bounds: they follow the new size.
                self.layouts.insert(out, l);
                return;
            }
            self.barrier(
                node,
                "slices the channel axis with unknown bounds or a step",
            );
            return;
        };
        let (Some(&s0), Some(&e0)) = (starts.get(k), ends.get(k)) else {
            self.barrier(node, "slice bounds do not cover the channel axis");
            return;
        };
        let c = l.atoms.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + c } else { v }).clamp(0, c);
        let (s, e) = (clamp(s0), clamp(e0).max(clamp(s0)));
        if legacy && ((s0 < 0 && s > 0) || (e0 < 0 && e < c)) {
            self.barrier(
                node,
                "negative slice bounds in attributes on the channel axis",
            );
            return;
        }
        let atoms = l.atoms[s as usize..e as usize].to_vec();
        // A bound inside the axis becomes the number of kept atoms before it; an end at or
        // past the axis end stays (Slice clamps it to the new size).
        let bounds = [(1, "starts", starts, s0, s), (2, "ends", ends, e0, e)];
        for (input, attribute, values, raw, v) in bounds {
            if raw >= c || (v == 0 && raw >= 0) {
                continue;
            }
            let place = if legacy {
                CountPlace::Attribute {
                    attribute: attribute.into(),
                    index: k,
                }
            } else {
                let t = node.input.get(input).cloned().unwrap_or_default();
                let stored = self
                    .const_source(&t)
                    .and_then(|src| int_values(self.a, &src));
                let mut base = values;
                base[k] = v;
                let dtype = self
                    .a
                    .shapes
                    .get(&t)
                    .and_then(|i| i.dtype)
                    .unwrap_or(DataType::INT64);
                CountPlace::Input {
                    input,
                    index: k,
                    base,
                    stored,
                    dtype: dtype.0,
                }
            };
            self.counts.push(CountMember {
                node: node.display_name(),
                place,
                atoms: l.atoms[..v as usize].to_vec(),
            });
        }
        self.layouts.insert(
            out,
            Layout {
                axis: l.axis,
                atoms,
            },
        );
    }

    /// Reshape (`shape_input`: the target shape is input 1) and Flatten.
    fn reshape(&mut self, node: &NodeProto, shape_input: bool) {
        let x = node.input.first().cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let (Some(xs), Some(os)) = (self.dims(&x), self.dims(&out)) else {
            self.barrier(node, "ranks unknown (pin input shapes with --input-shape)");
            return;
        };
        let Some((b, atoms)) = self.reshape_map(node, &l, xs, os) else {
            return;
        };
        if shape_input {
            // The target-shape entry for this axis must follow the new count (seed P7).
            let shape_t = node.input.get(1).cloned().unwrap_or_default();
            let entry = match self.a.shapes.get(&shape_t).and_then(|i| i.value.clone()) {
                Some(Value::Int(v)) => v.get(b).cloned(),
                _ => None,
            };
            match entry {
                Some(Dim::Known(-1)) | Some(Dim::Known(0)) => {}
                Some(Dim::Known(_)) => match self.trace_shape_entry(&shape_t, b) {
                    Some(EntrySource::Const(tensor, index)) => self.counts.push(CountMember {
                        node: node.display_name(),
                        place: CountPlace::Tensor { tensor, index },
                        atoms: atoms.clone(),
                    }),
                    Some(EntrySource::Dynamic) => self.pin_dynamic_entry(&shape_t, b, &atoms),
                    None => {
                        self.barrier(node, "target shape holds a literal channel count computed in a way pare cannot rewrite (seed P7)");
                        return;
                    }
                },
                _ => {
                    self.barrier(
                        node,
                        "target shape is not known (pin input shapes with --input-shape)",
                    );
                    return;
                }
            }
        }
        self.layouts.insert(out, Layout { axis: b, atoms });
    }

    /// Where a Reshape puts the channel axis (output axis and its atoms): the same axis,
    /// absorbing following dims (Flatten), split into heads (`[…, H·D]` → `[…, H, D]`), or
    /// merged with preceding dims (`[T, B, D, H]` → `[T, B, D·H]`). Locks and returns `None`
    /// otherwise.
    fn reshape_map(
        &mut self,
        node: &NodeProto,
        l: &Layout,
        xs: &[Dim],
        os: &[Dim],
    ) -> Option<(usize, Vec<Atom>)> {
        let c = l.atoms.len() as i64;
        let ax = l.axis.min(xs.len());
        if let Some(mut b) = prefix_end(&xs[..ax], &xs[ax..], os) {
            // Skip unit dims the reshape inserted before the channels.
            while b < os.len() && os[b] == Dim::Known(1) && c != 1 {
                b += 1;
            }
            let Some(ob) = os.get(b) else {
                self.barrier(node, "channel axis disappears");
                return None;
            };
            let Some(ob) = ob.known() else {
                self.barrier(
                    node,
                    "size of the reshaped channel axis unknown (pin input shapes with --input-shape)",
                );
                return None;
            };
            // A corrupt shape must not make the analysis allocate per (absurd) channel.
            if ob > MAX_CHANNELS {
                self.barrier(node, "reshaped channel axis is implausibly large");
                return None;
            }
            // ob is c × (product of the following input dims it absorbed) …
            let mut rep = 1i64;
            let mut k = ax + 1;
            while c.saturating_mul(rep) < ob && k < xs.len() {
                let Some(d) = xs[k].known() else {
                    break;
                };
                rep = rep.saturating_mul(d);
                k += 1;
            }
            if c * rep == ob {
                let atoms = l
                    .atoms
                    .iter()
                    .flat_map(|&a| std::iter::repeat_n(a, rep as usize))
                    .collect();
                return Some((b, atoms));
            }
            // … or the first of the axes the channels split into (attention heads).
            if ob < c
                && let Some(split) = self.split_heads(&first_output(node), l, os, b)
            {
                return Some(split);
            }
        }
        if let Some(merged) = self.merge_preceding(l, xs, os) {
            return Some(merged);
        }
        self.barrier(
            node,
            "reshape mixes the channel axis with other axes in a way pare cannot map \
             (pixel/channel shuffle)",
        );
        None
    }

    /// Finds where entry `index` of a shape tensor comes from: a constant element (to
    /// rewrite), or a runtime shape computation (which follows pruning by itself). Follows
    /// Concat pieces as PyTorch's `view(b, 256, -1)` export builds them.
    fn trace_shape_entry(&self, tensor: &str, index: usize) -> Option<EntrySource> {
        if let Some(src) = self.const_source(tensor) {
            return Some(EntrySource::Const(src, index));
        }
        let p = *self.a.index.producer.get(tensor)?;
        let node = &self.g.node[p];
        match shape_flow(node) {
            ShapeFlow::Concat => {
                let mut off = 0usize;
                for i in &node.input {
                    let n = self
                        .a
                        .shapes
                        .static_shape(i)?
                        .iter()
                        .product::<i64>()
                        .max(1) as usize;
                    if index < off + n {
                        return self.trace_shape_entry(i, index - off);
                    }
                    off += n;
                }
                None
            }
            ShapeFlow::SameEntries => self.trace_shape_entry(node.input.first()?, index),
            _ if self.shape_derived(tensor) => Some(EntrySource::Dynamic),
            _ => None,
        }
    }

    fn count_at(&mut self, node: &NodeProto, tensor: &str, index: usize, atoms: &[Atom]) {
        match self.trace_shape_entry(tensor, index) {
            Some(EntrySource::Const(t, i)) => self.counts.push(CountMember {
                node: node.display_name(),
                place: CountPlace::Tensor {
                    tensor: t,
                    index: i,
                },
                atoms: atoms.to_vec(),
            }),
            Some(EntrySource::Dynamic) => {}
            None => self.locks.push((
                atoms.to_vec(),
                format!(
                    "{} '{}': size constant cannot be rewritten",
                    node.op_type(),
                    node.display_name()
                ),
            )),
        }
    }

    /// One initializer read by several nodes must be sliced one way: tie its members.
    fn tie_shared_initializers(&mut self) {
        let mut by_key: HashMap<(String, usize), Vec<usize>> = HashMap::default();
        for (k, m) in self.members.iter().enumerate() {
            by_key
                .entry((m.tensor.clone(), m.axis))
                .or_default()
                .push(k);
        }
        for ids in by_key.values().filter(|v| v.len() > 1) {
            let first = self.members[ids[0]].atoms.clone();
            for &k in &ids[1..] {
                let other = self.members[k].atoms.clone();
                if other.len() == first.len() {
                    self.unify(&first, &other);
                }
            }
        }
    }

    /// Heads where a Reshape split heads; a transformer MLP where every producer is a Linear
    /// layer and a Linear layer consumes it; recurrent where an LSTM/GRU/RNN produces it.
    fn name_groups(
        &self,
        groups: &mut [ChannelGroup],
        atom_group: &[usize],
        space_group: &[usize],
    ) {
        let mut all_linear = vec![true; groups.len()];
        for (s, sp) in self.spaces.iter().enumerate() {
            let g = &mut groups[space_group[s]];
            if sp.kind == SpaceKind::Recurrent {
                g.kind = GroupKind::Recurrent;
            }
            all_linear[space_group[s]] &= sp.kind == SpaceKind::Linear;
        }
        for &a in &self.linear_inputs {
            let gid = atom_group[a as usize];
            if all_linear[gid] && groups[gid].kind == GroupKind::Channels {
                groups[gid].kind = GroupKind::Mlp;
            }
        }
        for &(a, width) in &self.head_marks {
            let g = &mut groups[atom_group[a as usize]];
            g.kind = GroupKind::Heads;
            g.unit_width = width;
        }
    }

    fn finish(mut self) -> ChannelAnalysis {
        let n_atoms = self.dsu.parent.len();
        // Spaces connected through shared classes form groups.
        let mut space_of_atom = vec![0usize; n_atoms];
        for (s, sp) in self.spaces.iter().enumerate() {
            for a in sp.start..sp.start + sp.len as Atom {
                space_of_atom[a as usize] = s;
            }
        }
        let mut sdsu = Dsu::default();
        sdsu.add(self.spaces.len());
        let mut root_space: HashMap<Atom, usize> = HashMap::default();
        for a in 0..n_atoms as Atom {
            let r = self.dsu.find(a);
            let s = space_of_atom[a as usize];
            match root_space.get(&r) {
                Some(&s0) => sdsu.union(s0 as Atom, s as Atom),
                None => {
                    root_space.insert(r, s);
                }
            }
        }
        // Group ids in order of first space (topological order of producers).
        let mut group_of_root: BTreeMap<Atom, usize> = BTreeMap::new();
        let mut space_group = vec![0usize; self.spaces.len()];
        for (s, slot) in space_group.iter_mut().enumerate() {
            let r = sdsu.find(s as Atom);
            let next = group_of_root.len();
            *slot = *group_of_root.entry(r).or_insert(next);
        }
        let mut groups: Vec<ChannelGroup> = (0..group_of_root.len())
            .map(|id| ChannelGroup {
                id,
                channels: 0,
                producers: Vec::new(),
                tensors: Vec::new(),
                members: Vec::new(),
                counts: Vec::new(),
                locks: Vec::new(),
                kind: GroupKind::Channels,
                unit_width: 1,
                units: Vec::new(),
            })
            .collect();
        let mut atom_group = vec![0usize; n_atoms];
        let mut atom_unit = vec![0usize; n_atoms];
        let mut unit_of_root: HashMap<Atom, usize> = HashMap::default();
        let mut seen_producer: HashSet<(usize, String)> = HashSet::default();
        for (s, sp) in self.spaces.iter().enumerate() {
            let gid = space_group[s];
            let grp = &mut groups[gid];
            if seen_producer.insert((gid, sp.producer.clone())) {
                grp.producers.push(sp.producer.clone());
            }
            grp.tensors.push(sp.tensor.clone());
            for a in sp.start..sp.start + sp.len as Atom {
                let r = self.dsu.find(a);
                let u = *unit_of_root.entry(r).or_insert_with(|| {
                    grp.units.push(Vec::new());
                    grp.units.len() - 1
                });
                grp.units[u].push(a);
                atom_group[a as usize] = gid;
                atom_unit[a as usize] = u;
            }
        }
        for g in &mut groups {
            g.channels = g.units.len();
        }
        for (atoms, reason) in &self.locks {
            let mut seen = HashSet::default();
            for a in atoms {
                let gid = atom_group[*a as usize];
                if seen.insert(gid) && !groups[gid].locks.contains(reason) {
                    groups[gid].locks.push(reason.clone());
                }
            }
        }
        for (k, m) in self.members.iter().enumerate() {
            let mut seen = HashSet::default();
            for a in &m.atoms {
                let gid = atom_group[*a as usize];
                if seen.insert(gid) {
                    groups[gid].members.push(k);
                }
            }
        }
        for (k, c) in self.counts.iter().enumerate() {
            let mut seen = HashSet::default();
            for a in &c.atoms {
                let gid = atom_group[*a as usize];
                if seen.insert(gid) {
                    groups[gid].counts.push(k);
                }
            }
        }
        self.name_groups(&mut groups, &atom_group, &space_group);
        // Tensors carrying the group's atoms (beyond the producing ones), for highlighting.
        for (t, l) in &self.layouts {
            if let Some(&a) = l.atoms.first() {
                groups[atom_group[a as usize]].tensors.push(t.clone());
            }
        }
        for g in &mut groups {
            g.tensors.sort();
            g.tensors.dedup();
        }
        ChannelAnalysis {
            groups,
            members: self.members,
            counts: self.counts,
            layouts: self.layouts,
            atom_group,
            atom_unit,
            notes: self.notes,
        }
    }
}

/// A node's first output name, empty when it has none (malformed nodes never panic).
fn first_output(node: &NodeProto) -> String {
    node.output.first().cloned().unwrap_or_default()
}

/// The number of leading output dims that hold exactly the input dims `prefix` (those before
/// the channel axis; `rest` are the channel axis and after): by product when it is known,
/// else dim by dim (`batch` = `batch`). A fully static output also fixes a symbolic prefix
/// (`view(1, 16)` of `[batch, 16, 1, 1]` implies batch 1).
fn prefix_end(prefix: &[Dim], rest: &[Dim], out: &[Dim]) -> Option<usize> {
    let product = |d: &[Dim]| -> Option<i64> {
        d.iter()
            .map(Dim::known)
            .try_fold(1i64, |acc, v| acc.checked_mul(v?))
    };
    let target = product(prefix).or_else(|| {
        let (n, r) = (product(out)?, product(rest)?);
        (r > 0 && n % r == 0).then(|| n / r)
    });
    if let Some(target) = target {
        let mut acc = 1i64;
        for (k, d) in out.iter().enumerate() {
            if acc == target {
                return Some(k);
            }
            acc = acc.checked_mul(d.known()?)?;
        }
        return (acc == target).then_some(out.len());
    }
    let same = out.len() >= prefix.len()
        && !prefix.contains(&Dim::Unknown)
        && out[..prefix.len()] == *prefix;
    same.then_some(prefix.len())
}

fn norm_axis(a: i64, rank: usize) -> usize {
    if a < 0 {
        (a + rank as i64).max(0) as usize
    } else {
        a as usize
    }
}

/// Runs the channel analysis on an analysed model.
pub fn analyze_channels(a: &Analysis) -> ChannelAnalysis {
    Builder::new(a).run()
}

/// Reads a member's tensor as f32 (initializer or Constant value).
pub fn member_values(a: &Analysis, tensor: &str) -> Option<(Vec<i64>, Vec<f32>)> {
    let g = a.graph();
    let t = match a.index.initializers.get(tensor) {
        Some(&k) => g.initializer.get(k)?,
        None => {
            let p = *a.index.producer.get(tensor)?;
            g.node[p].attr_t("value")?
        }
    };
    if !DataType(t.data_type()).is_float() {
        return None;
    }
    crate::model::tensor::to_f32(t)
        .ok()
        .map(|v| (t.dims.clone(), v))
}

/// Reads an int tensor (initializer or Constant) for count rewrites.
pub fn int_values(a: &Analysis, tensor: &str) -> Option<Vec<i64>> {
    let g = a.graph();
    let t = match a.index.initializers.get(tensor) {
        Some(&k) => g.initializer.get(k)?,
        None => {
            let p = *a.index.producer.get(tensor)?;
            g.node[p].attr_t("value")?
        }
    };
    to_i64(t).ok()
}

/// A member as reported to users: which index ranges of which tensor axis follow a group.
#[derive(Clone, Debug, Serialize)]
pub struct MemberDetail {
    pub node: String,
    pub tensor: String,
    pub axis: usize,
    pub role: Role,
    /// Index ranges (`start..end`) of `axis` that belong to this group.
    pub ranges: Vec<String>,
}

/// A group as `pare groups --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupDetail {
    pub id: usize,
    pub kind: GroupKind,
    /// Channels per unit (the head dim for heads).
    pub unit_width: usize,
    pub channels: usize,
    pub prunable: bool,
    pub locks: Vec<String>,
    pub producers: Vec<String>,
    pub tensors: Vec<String>,
    pub members: Vec<MemberDetail>,
    pub counts: Vec<CountMember>,
}

fn ranges(positions: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < positions.len() {
        let start = positions[i];
        let mut end = start + 1;
        while i + 1 < positions.len() && positions[i + 1] == end {
            end += 1;
            i += 1;
        }
        out.push(format!("{start}..{end}"));
        i += 1;
    }
    out
}

impl ChannelAnalysis {
    /// Full detail of one group.
    pub fn detail(&self, gid: usize) -> Option<GroupDetail> {
        let g = self.groups.get(gid)?;
        let members = g
            .members
            .iter()
            .map(|&k| {
                let m = &self.members[k];
                let pos: Vec<usize> = m
                    .atoms
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| self.atom_group[**a as usize] == gid)
                    .map(|(i, _)| i)
                    .collect();
                MemberDetail {
                    node: m.node.clone(),
                    tensor: m.tensor.clone(),
                    axis: m.axis,
                    role: m.role,
                    ranges: ranges(&pos),
                }
            })
            .collect();
        Some(GroupDetail {
            id: g.id,
            kind: g.kind,
            unit_width: g.unit_width,
            channels: g.channels,
            prunable: g.prunable(),
            locks: g.locks.clone(),
            producers: g.producers.clone(),
            tensors: g.tensors.clone(),
            members,
            counts: g.counts.iter().map(|&k| self.counts[k].clone()).collect(),
        })
    }

    /// Groups a node belongs to (as producer, or through any of its tensors or members).
    pub fn groups_of_node(&self, node: &NodeProto) -> Vec<usize> {
        let name = node.display_name();
        let mut v: Vec<usize> = node
            .input
            .iter()
            .chain(node.output.iter())
            .filter_map(|t| self.layouts.get(t))
            .flat_map(|l| l.atoms.iter().map(|&a| self.atom_group[a as usize]))
            .chain(
                self.members
                    .iter()
                    .filter(|m| m.node == name)
                    .flat_map(|m| m.atoms.iter().map(|&a| self.atom_group[a as usize])),
            )
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::NoProgress;
    use crate::model::builder::{D, GraphBuilder, value_info};
    use crate::prune::{PruneOptions, make_plan};

    /// Runs what `pare groups` runs: the analysis, every group's detail, and the planner.
    fn groups(b: GraphBuilder) -> ChannelAnalysis {
        let a = Analysis::new(b.build(), &Default::default()).expect("valid model");
        let ca = analyze_channels(&a);
        for g in &ca.groups {
            assert!(ca.detail(g.id).is_some());
        }
        let opts = PruneOptions {
            ratio: 0.5,
            round_to: 1,
            ..Default::default()
        };
        make_plan(&a, &ca, &opts, &NoProgress).expect("plan");
        ca
    }

    fn locked_with(ca: &ChannelAnalysis, text: &str) -> bool {
        ca.groups
            .iter()
            .any(|g| g.locks.iter().any(|l| l.contains(text)))
    }

    /// A rank-1 Conv weight used to panic (`wshape[1]`); now the Conv locks its groups.
    #[test]
    fn rank_one_conv_weight_locks() {
        for op in ["Conv", "ConvTranspose"] {
            let mut b = GraphBuilder::new("rank1");
            let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
            let c = b.conv(&x, 4, 4, 3, 1, 1, 1);
            let w = b.init_randn("w1", &[4], 0.1);
            let y = b.op(op, &[&c, &w], vec![]);
            b.output(&y, &[D::N(1), D::N(4), D::N(8), D::N(8)]);
            let ca = groups(b);
            assert!(locked_with(&ca, "weight has rank 1"), "{op}: {ca:?}");
        }
    }

    /// A Conv whose weight has no known rank (a graph input without shape), and one whose
    /// input is rank 1, run through the analysis without panicking.
    #[test]
    fn unknown_rank_conv_weight_locks() {
        let mut b = GraphBuilder::new("unknown");
        let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
        b.inputs
            .push(value_info("w", crate::model::DataType::FLOAT, None));
        let c = b.conv(&x, 4, 4, 3, 1, 1, 1);
        let y = b.op("Conv", &[&c, "w"], vec![]);
        b.output(&y, &[D::N(1), D::S("c"), D::S("h"), D::S("w")]);
        let ca = groups(b);
        assert!(locked_with(&ca, "weights are not a constant"), "{ca:?}");

        let mut b = GraphBuilder::new("rank1_input");
        let x = b.input("x", &[D::N(4)]);
        let w = b.init_randn("w", &[8, 4, 3, 3], 0.1);
        let y = b.op("Conv", &[&x, &w], vec![]);
        b.output(&y, &[D::S("a")]);
        groups(b);
    }

    /// A weight whose input-channel count disagrees with the traced input locks too (the
    /// member would otherwise slice past the weight's end).
    #[test]
    fn mismatched_conv_weight_locks() {
        let mut b = GraphBuilder::new("mismatch");
        let x = b.input("x", &[D::N(1), D::N(4), D::N(8), D::N(8)]);
        let c = b.conv(&x, 4, 6, 3, 1, 1, 1);
        let w = b.init_randn("w2", &[8, 5, 3, 3], 0.1);
        let y = b.op("Conv", &[&c, &w], vec![]);
        b.output(&y, &[D::S("a"), D::S("b"), D::S("c"), D::S("d")]);
        let ca = groups(b);
        assert!(locked_with(&ca, "5 input channels"), "{ca:?}");
    }
}
