//! The op table: everything pare knows about one ONNX operator, in one place.
//!
//! Shape inference, value evaluation for shape arithmetic, channel analysis (pruning), MAC
//! counting, lint (target support, inputs that must be constant), `pare fix`, quantization
//! placement and extraction all look an op up here with [`lookup`]. Adding an op means adding
//! one [`OpDef`] to its family file (`activation.rs`, `elementwise.rs`, `conv.rs`, `linalg.rs`,
//! `tensor.rs`, `reduce.rs`, `norm.rs`, `quant.rs`, `control.rs`, `misc.rs`) and nothing else.
//!
//! # Fallback for an op missing from the table
//! An op that is not in the table (or is in a custom domain) gets, everywhere, the
//! conservative answer: shape inference leaves its outputs unknown (the model's value_info is
//! used where the caller falls back to it) with a diagnostic; channel analysis *locks* every
//! group it touches; MACs count 0; no input must be constant; every TensorRT version reports
//! it "not supported"; quantization leaves it float; extraction treats it as deterministic.
//! [`DEFAULT`] spells that fallback out, and [`def_or_default`] returns it.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::analysis::channels::Role;
use crate::model::proto::NodeProto;
use crate::model::shape::{Rule, ShapeInfo};

pub mod activation;
pub mod control;
pub mod conv;
pub mod elementwise;
pub mod linalg;
pub mod misc;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod tensor;
#[cfg(feature = "torch")]
pub mod torch;

/// A family's libtorch lowering (feature `torch`; the ONNX → libtorch executor runs nodes
/// through it). Without the feature the slot holds nothing, so entries are written alike in
/// both builds.
#[cfg(feature = "torch")]
pub type LowerFn = torch::LowerFn;
/// Without the `torch` feature: nothing to lower to.
#[cfg(not(feature = "torch"))]
pub type LowerFn = ();

/// How an op's output shapes are inferred.
#[derive(Clone, Copy)]
pub enum ShapeKind {
    /// No rule: outputs unknown plus a diagnostic.
    None,
    /// A rule over the node's input infos.
    Rule(Rule),
    /// Control flow whose nested graphs are inferred by the walk itself.
    Control(ControlFlow),
}

/// The control-flow ops, whose shapes need the nested graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlFlow {
    If,
    Loop,
    Scan,
}

/// Value evaluation for shape arithmetic (small integer tensors such as `Shape` → `Gather` →
/// `Mul` → `Concat` → `Reshape`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eval {
    None,
    Unary(UnOp),
    Binary(BinOp),
    Reduce(RedOp),
}

/// Elementwise unary ops pare evaluates on small values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Identity,
    Ceil,
    Floor,
    Round,
    Neg,
    Abs,
    Relu,
    Sign,
    Not,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
}

/// Elementwise binary ops pare evaluates on small values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

/// Reductions pare evaluates on small values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedOp {
    Sum,
    Prod,
    Max,
    Min,
}

impl Eval {
    pub fn unary(self) -> Option<UnOp> {
        match self {
            Eval::Unary(u) => Some(u),
            _ => None,
        }
    }
    pub fn binary(self) -> Option<BinOp> {
        match self {
            Eval::Binary(b) => Some(b),
            _ => None,
        }
    }
    pub fn reduce(self) -> Option<RedOp> {
        match self {
            Eval::Reduce(r) => Some(r),
            _ => None,
        }
    }
}

/// How channels flow through an op (channel analysis for pruning).
#[derive(Clone, Copy)]
pub enum ChannelRule {
    /// Unknown to pare: locks every group it reads or writes (the fallback).
    Lock,
    /// Creates tensors from attributes or shapes only; carries no channels (Constant, Range,
    /// random generators, Shape, Size).
    None,
    /// Acts on each channel independently and keeps the layout of input 0.
    Channelwise(PerChannel),
    /// Broadcasting op: unifies its operands' channels position by position.
    Elementwise,
    /// Weighted convolution: produces output channels (weight axis 0, or 1 when transposed),
    /// consumes input channels (weight axis 1, or 0 when transposed); depthwise groups pass
    /// through; other groupings lock.
    Conv { transpose: bool },
    /// Gemm: B's output-feature axis produces, its input-feature axis consumes.
    Gemm,
    /// MatMul with a constant 2-D weight: row axis consumes, column axis produces.
    MatMul,
    /// Pad: passes channels when the channel axis is not padded.
    Pad,
    /// Concat: juxtaposes channel lists along the channel axis.
    Concat,
    /// Split: cuts the channel list into ranges.
    Split,
    /// Transpose: moves the channel axis.
    Transpose,
    /// Reshape: channels repeat over the positions they cover; the target-shape entry of
    /// the channel axis (input 1) is a count to rewrite.
    Reshape,
    /// Flatten: channels repeat over the positions they cover.
    Flatten,
    /// Squeeze / Unsqueeze: the channel axis shifts.
    Squeeze,
    /// Reductions and axis-wise ops: pass channels unless the channel axis is reduced.
    Reduce(ReduceAxes),
    /// Slice: passes channels unless the channel axis is cut.
    Slice,
    /// Gather: passes channels unless it indexes the channel axis.
    Gather,
    /// LayerNormalization: channels before the normalised axes pass; a channel axis that is
    /// the (only) normalised axis passes with scale and bias as members, but locks its group,
    /// because removing a channel changes the statistics of the others (residual streams).
    LayerNorm,
    /// Expand: passes channels when the channel axis is not broadcast.
    Expand,
    /// LSTM / GRU / RNN with this many gates: the hidden size is a group (W, R, B sliced per
    /// gate, both directions alike), the input size a consumer.
    Recurrent { gates: usize },
}

/// Per-channel parameters of a channel-wise op.
#[derive(Clone, Copy)]
pub enum PerChannel {
    /// Nothing besides the data input follows channels.
    Plain,
    /// Constant inputs at these positions are per-channel vectors (norm scale, bias, stats).
    Params(&'static [(usize, Role)]),
    /// Input 1 is a broadcast operand (PRelu slope).
    Slope,
    /// Resize/Upsample: the `scales` input at this position must not touch the channel axis;
    /// a `sizes` input (position 3) is a channel count to rewrite.
    Resize { scales: usize },
    /// Channel-wise only when this check returns `None` for (node, channel axis, input rank);
    /// otherwise the returned reason locks the groups.
    Guard(fn(&NodeProto, usize, Option<usize>) -> Option<String>),
}

/// Which axes a reduction-like op works along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceAxes {
    /// `axes` attribute or input 1 (all axes when absent); `keepdims` decides the output rank.
    Axes,
    /// One `axis` attribute with this default; the rank is kept.
    Axis(i64),
    /// One axis given as input 1 (CumSum); the rank is kept.
    AxisInput,
}

/// How a tensor an op produces relates to shape arithmetic (for Reshape targets that follow
/// pruning by themselves, and constant entries to rewrite).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeFlow {
    /// Not part of shape arithmetic pare follows.
    None,
    /// Reads a runtime shape (Shape, Size).
    Source,
    /// Computed from its inputs; a runtime shape among them makes it shape-derived.
    Derived,
    /// Entry i of the output is entry i of input 0 (Unsqueeze, Cast, Identity).
    SameEntries,
    /// Entries are input entries laid end to end (Concat).
    Concat,
}

/// MACs of one node from the inferred shapes; `None` when a needed shape is unknown.
pub type MacsFn = fn(&NodeProto, &ShapeInfo) -> Option<u64>;

/// Inputs a parser wants constant: (input index, what it is) for a given opset.
pub type ConstInputsFn = fn(i64) -> &'static [(usize, &'static str)];

/// Inputs a given TensorRT version needs constant: (opset, version) → (input, what).
pub type TrtConstFn = fn(i64, u16) -> &'static [(usize, &'static str)];

/// TensorRT support: the first version whose ONNX parser imports the op (pare's compact form
/// of onnx-tensorrt's operator matrices), plus versions where a later matrix drops it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trt {
    /// `None`: no TensorRT parser imports it.
    pub since: Option<u16>,
    /// Inclusive version ranges listing it unsupported; `u16::MAX` as the end means dropped.
    pub gaps: &'static [(u16, u16)],
}

impl Trt {
    pub const NEVER: Trt = Trt {
        since: None,
        gaps: &[],
    };
    pub const fn since(v: u16) -> Trt {
        Trt {
            since: Some(v),
            gaps: &[],
        }
    }
}

/// The op's role for quantization placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantRole {
    /// Left float.
    None,
    /// Weighted layer: input 0 is the activation, input `slot` the weight, quantized per
    /// channel along `axis`.
    Weighted { slot: usize, axis: WeightAxis },
    /// A pool whose input is quantized (TensorRT runs it in INT8).
    Pool,
    /// Candidate residual Add (quantized with the convolution it fuses into).
    ResidualAdd,
}

/// Where a weight's output-channel axis is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightAxis {
    /// A fixed axis.
    Fixed(usize),
    /// Gemm: 0 with `transB=1`, 1 otherwise.
    GemmB,
    /// The last axis (MatMul).
    Last,
}

impl WeightAxis {
    /// The axis for this node and weight rank.
    pub fn resolve(self, node: &NodeProto, rank: usize) -> usize {
        match self {
            WeightAxis::Fixed(a) => a,
            WeightAxis::GemmB => usize::from(node.attr_i("transB").unwrap_or(0) == 0),
            WeightAxis::Last => rank.saturating_sub(1),
        }
    }
}

/// How an op treats index tensors (lint: are GatherElements indices provably non-negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFlow {
    /// Nothing known.
    None,
    /// Its outputs are non-negative indices or sizes (ArgMax, Shape, NonZero, …).
    NonNegative,
    /// Output 1 holds non-negative indices (TopK).
    NonNegativeSecond,
    /// Non-negative when input 0 is (moves or selects values without changing them).
    Preserves,
    /// Non-negative when every input is (Concat).
    AllInputs,
}

/// Everything pare knows about one op.
#[derive(Clone, Copy)]
pub struct OpDef {
    pub name: &'static str,
    pub shape: ShapeKind,
    pub eval: Eval,
    pub channels: ChannelRule,
    pub shape_flow: ShapeFlow,
    /// `None` counts 0 MACs (pare counts weight uses only, as pruning papers do).
    pub macs: Option<MacsFn>,
    pub const_inputs: Option<ConstInputsFn>,
    /// Inputs some TensorRT versions need constant (rule L9).
    pub trt_const: Option<TrtConstFn>,
    pub trt: Trt,
    /// Has a dedicated lint rule, so the generic operator-matrix rule leaves it alone.
    pub trt_dedicated: bool,
    /// QOperator form of quantization (TensorRT reads QDQ only).
    pub qoperator: bool,
    pub quant: QuantRole,
    /// TensorRT fuses it into a preceding weighted layer, so a Q/DQ between them blocks the
    /// fusion.
    pub fuses_into_weighted: bool,
    pub index: IndexFlow,
    /// Output is not a function of the inputs (random generators): never folded as a constant.
    pub nondeterministic: bool,
    /// How the libtorch executor runs it (`None`: the executor refuses the model, naming the
    /// node).
    pub lower: Option<LowerFn>,
    /// Whether it keeps its meaning when the model's opset is raised ([`Upgrade`]).
    pub upgrade: Upgrade,
}

/// Whether a node means the same at a newer default-domain opset (up to
/// [`crate::model::opset::TARGET`]): between its opset and that one, the op only gained types
/// or attributes whose defaults keep the old behaviour. Quantization raises opset 9–12 models
/// to 13 (Q/DQ exists from 10, per-channel weights from 13) only when every node does.
#[derive(Clone, Copy, Debug)]
pub enum Upgrade {
    /// Not known to keep its meaning (its inputs or attributes changed): blocks the upgrade.
    Never,
    /// Same meaning from this opset on.
    Since(i64),
    /// Same meaning from this opset on when the node passes the check (the node and its first
    /// input's rank, when known).
    SinceIf(i64, fn(&NodeProto, Option<usize>) -> bool),
}

impl Upgrade {
    /// Whether `node`, valid at `from`, keeps its meaning at the target opset.
    pub fn keeps(&self, from: i64, node: &NodeProto, rank: Option<usize>) -> bool {
        match *self {
            Upgrade::Never => false,
            Upgrade::Since(v) => from >= v,
            Upgrade::SinceIf(v, check) => from >= v && check(node, rank),
        }
    }
}

/// The fallback for ops missing from the table, and the base every entry starts from.
pub const DEFAULT: OpDef = OpDef {
    name: "",
    shape: ShapeKind::None,
    eval: Eval::None,
    channels: ChannelRule::Lock,
    shape_flow: ShapeFlow::None,
    macs: None,
    const_inputs: None,
    trt_const: None,
    trt: Trt::NEVER,
    trt_dedicated: false,
    qoperator: false,
    quant: QuantRole::None,
    fuses_into_weighted: false,
    index: IndexFlow::None,
    nondeterministic: false,
    lower: None,
    upgrade: Upgrade::Never,
};

impl OpDef {
    /// An entry with the fallback for everything but the name.
    pub const fn new(name: &'static str) -> OpDef {
        OpDef { name, ..DEFAULT }
    }
    pub const fn shape(mut self, r: Rule) -> OpDef {
        self.shape = ShapeKind::Rule(r);
        self
    }
    pub const fn eval(mut self, e: Eval) -> OpDef {
        self.eval = e;
        self
    }
    pub const fn channels(mut self, c: ChannelRule) -> OpDef {
        self.channels = c;
        self
    }
    pub const fn flow(mut self, f: ShapeFlow) -> OpDef {
        self.shape_flow = f;
        self
    }
    pub const fn macs(mut self, m: MacsFn) -> OpDef {
        self.macs = Some(m);
        self
    }
    pub const fn consts(mut self, f: ConstInputsFn) -> OpDef {
        self.const_inputs = Some(f);
        self
    }
    pub const fn trt_consts(mut self, f: TrtConstFn) -> OpDef {
        self.trt_const = Some(f);
        self
    }
    pub const fn trt(mut self, since: u16) -> OpDef {
        self.trt = Trt::since(since);
        self
    }
    pub const fn trt_gaps(mut self, gaps: &'static [(u16, u16)]) -> OpDef {
        self.trt.gaps = gaps;
        self
    }
    pub const fn dedicated(mut self) -> OpDef {
        self.trt_dedicated = true;
        self
    }
    pub const fn qoperator(mut self) -> OpDef {
        self.qoperator = true;
        self
    }
    pub const fn quant(mut self, q: QuantRole) -> OpDef {
        self.quant = q;
        self
    }
    pub const fn fuses(mut self) -> OpDef {
        self.fuses_into_weighted = true;
        self
    }
    pub const fn index(mut self, i: IndexFlow) -> OpDef {
        self.index = i;
        self
    }
    pub const fn nondeterministic(mut self) -> OpDef {
        self.nondeterministic = true;
        self
    }
    pub const fn lower(mut self, f: LowerFn) -> OpDef {
        self.lower = Some(f);
        self
    }
    /// Keeps its meaning from opset `v` on ([`Upgrade::Since`]).
    pub const fn same_since(mut self, v: i64) -> OpDef {
        self.upgrade = Upgrade::Since(v);
        self
    }
    /// Keeps its meaning from opset `v` on when `check` holds ([`Upgrade::SinceIf`]).
    pub const fn same_since_if(
        mut self,
        v: i64,
        check: fn(&NodeProto, Option<usize>) -> bool,
    ) -> OpDef {
        self.upgrade = Upgrade::SinceIf(v, check);
        self
    }

    /// Whether TensorRT `version`'s ONNX parser imports this op.
    pub fn trt_support(&self, version: u16) -> OpSupport {
        let Some(since) = self.trt.since else {
            return OpSupport::Never;
        };
        if version < since {
            return OpSupport::From(since);
        }
        for &(lo, hi) in self.trt.gaps {
            if version >= lo && version <= hi {
                return if hi == u16::MAX {
                    OpSupport::Dropped { since: lo }
                } else {
                    OpSupport::From(hi + 1)
                };
            }
        }
        OpSupport::Supported
    }

    /// Inputs a parser wants constant at this opset.
    pub fn const_positions(&self, opset: i64) -> &'static [(usize, &'static str)] {
        self.const_inputs.map_or(&[], |f| f(opset))
    }

    /// Whether it is a weighted layer for quantization.
    pub fn is_weighted(&self) -> bool {
        matches!(self.quant, QuantRole::Weighted { .. })
    }
}

/// What the operator matrices say about one op at one TensorRT version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpSupport {
    Supported,
    /// Imported from this later version on.
    From(u16),
    /// Listed as supported in these versions only (dropped later or in between).
    Dropped {
        since: u16,
    },
    /// No TensorRT parser imports it.
    Never,
}

/// Every family's entries.
const FAMILIES: &[&[OpDef]] = &[
    activation::OPS,
    elementwise::OPS,
    conv::OPS,
    linalg::OPS,
    tensor::OPS,
    reduce::OPS,
    norm::OPS,
    quant::OPS,
    control::OPS,
    misc::OPS,
];

fn table() -> &'static HashMap<&'static str, &'static OpDef> {
    static TABLE: OnceLock<HashMap<&'static str, &'static OpDef>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m = HashMap::new();
        for fam in FAMILIES {
            for d in fam.iter() {
                let prev = m.insert(d.name, d);
                debug_assert!(prev.is_none(), "op {} defined twice", d.name);
            }
        }
        m
    })
}

/// The definition of a default-domain op, `None` when pare does not know it.
pub fn lookup(op_type: &str) -> Option<&'static OpDef> {
    table().get(op_type).copied()
}

/// The definition of a node's op: `None` for custom domains and unknown ops.
pub fn of_node(node: &NodeProto) -> Option<&'static OpDef> {
    if node.op_domain().is_empty() {
        lookup(node.op_type())
    } else {
        None
    }
}

/// The definition of a default-domain op, or [`DEFAULT`] (the documented fallback).
pub fn def_or_default(op_type: &str) -> &'static OpDef {
    lookup(op_type).unwrap_or(&DEFAULT)
}

/// Every op in the table.
pub fn all() -> impl Iterator<Item = &'static OpDef> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// Static dims of a tensor as `u64` (negative sizes clamp to 0), for MAC formulas.
pub fn static_dims(shapes: &ShapeInfo, name: &str) -> Option<Vec<u64>> {
    shapes
        .static_shape(name)
        .map(|s| s.into_iter().map(|d| d.max(0) as u64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for d in all() {
            assert!(seen.insert(d.name), "{} twice", d.name);
        }
    }

    #[test]
    fn fallback_is_conservative() {
        let d = def_or_default("NoSuchOp");
        assert!(matches!(d.channels, ChannelRule::Lock));
        assert!(matches!(d.shape, ShapeKind::None));
        assert_eq!(d.trt_support(1001), OpSupport::Never);
        assert_eq!(d.quant, QuantRole::None);
    }
}
