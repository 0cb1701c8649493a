//! What a shape rule sees of one node: its inputs' infos, its attributes, the opset, and a
//! place for notes that become diagnostics.
//!
//! Rules never index user data without going through these helpers, which bounds-check axes
//! and turn every surprise into a note plus an unknown result instead of a panic.

use super::sym::SymTable;
use super::{DiagKind, Dim, Shape, TensorInfo, Value};
use crate::model::proto::NodeProto;
use crate::model::tensor::DataType;

/// A list parameter that moved from an attribute to an input in some opset (Squeeze axes,
/// Slice starts, Pad pads, …).
#[derive(Clone, Debug, PartialEq)]
pub enum Param<T> {
    /// Neither the input nor the attribute is given: the op's default applies.
    Absent,
    /// Given as an input whose contents inference does not know.
    Unknown,
    Known(T),
}

/// Context of one shape rule.
pub struct OpCtx<'a> {
    pub node: &'a NodeProto,
    pub op: &'a str,
    /// Infos of the node's inputs by position; `None` for an omitted optional input (empty
    /// name) or one with no info at all.
    pub ins: Vec<Option<&'a TensorInfo>>,
    pub opset: i64,
    pub syms: &'a mut SymTable,
    /// Messages for diagnostics about this node, with their kind.
    pub notes: Vec<(DiagKind, String)>,
}

impl<'a> OpCtx<'a> {
    pub fn note(&mut self, msg: impl Into<String>) {
        self.notes.push((DiagKind::Incomplete, msg.into()));
    }

    /// Notes an axis attribute out of range for the input's rank: invalid ONNX, which no
    /// engine is handed ([`super::invalid_axes`]).
    pub fn note_axis(&mut self, axis: i64, rank: usize) {
        self.notes.push((
            DiagKind::AxisOutOfRange,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }

    pub fn input(&self, i: usize) -> Option<&'a TensorInfo> {
        self.ins.get(i).copied().flatten()
    }

    /// The input is wired (non-empty name), whether or not anything is known about it.
    pub fn has_input(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    pub fn shape(&self, i: usize) -> Option<&'a [Dim]> {
        self.input(i)?.shape.as_deref()
    }

    pub fn rank(&self, i: usize) -> Option<usize> {
        self.shape(i).map(<[Dim]>::len)
    }

    pub fn dtype(&self, i: usize) -> Option<DataType> {
        self.input(i)?.dtype
    }

    pub fn value(&self, i: usize) -> Option<&'a Value> {
        self.input(i)?.value.as_ref()
    }

    /// Integer contents, symbolic elements allowed.
    pub fn int_dims(&self, i: usize) -> Option<&'a [Dim]> {
        match self.value(i)? {
            Value::Int(v) => Some(v),
            Value::Float(_) => None,
        }
    }

    /// Integer contents, all concrete (floats truncated, as ONNX casts them).
    pub fn ints(&self, i: usize) -> Option<Vec<i64>> {
        match self.value(i)? {
            Value::Int(v) => v.iter().map(Dim::known).collect(),
            Value::Float(v) => Some(v.iter().map(|&x| x as i64).collect()),
        }
    }

    /// Float contents (integers converted).
    pub fn floats(&self, i: usize) -> Option<Vec<f64>> {
        match self.value(i)? {
            Value::Float(v) => Some(v.clone()),
            Value::Int(v) => v.iter().map(|d| d.known().map(|x| x as f64)).collect(),
        }
    }

    /// A scalar (or one-element) integer input, possibly symbolic.
    pub fn scalar_dim(&self, i: usize) -> Option<Dim> {
        match self.value(i)? {
            Value::Int(v) if v.len() == 1 => Some(v[0].clone()),
            Value::Float(v) if v.len() == 1 && v[0].fract() == 0.0 => Some(Dim::Known(v[0] as i64)),
            _ => None,
        }
    }

    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.node.attr_i(name).unwrap_or(default)
    }

    pub fn attr_ints(&self, name: &str) -> Option<&'a [i64]> {
        self.node.attr_ints(name)
    }

    pub fn attr_s(&self, name: &str) -> Option<String> {
        self.node.attr_s(name)
    }

    /// A list given as input `input` in newer opsets or attribute `attr` in older ones.
    pub fn ints_param(&self, input: usize, attr: &str) -> Param<Vec<i64>> {
        if self.has_input(input) {
            return match self.ints(input) {
                Some(v) => Param::Known(v),
                None => Param::Unknown,
            };
        }
        match self.attr_ints(attr) {
            Some(v) => Param::Known(v.to_vec()),
            None => Param::Absent,
        }
    }

    /// Normalises a possibly negative axis against `rank`; notes and returns `None` when out
    /// of range.
    pub fn axis(&mut self, axis: i64, rank: usize) -> Option<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r).contains(&a) {
            Some(a as usize)
        } else {
            self.note_axis(axis, rank);
            None
        }
    }

    /// Normalises a list of axes; `None` (with a note) when any is out of range or repeated.
    pub fn axes(&mut self, axes: &[i64], rank: usize) -> Option<Vec<usize>> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let n = self.axis(a, rank)?;
            if out.contains(&n) {
                self.note(format!("axis {a} is repeated in {axes:?}"));
                return None;
            }
            out.push(n);
        }
        Some(out)
    }

    /// Info with the first input's dtype and the given shape.
    pub fn like_first(&self, shape: Option<Shape>) -> TensorInfo {
        TensorInfo::new(self.dtype(0), shape)
    }
}
