//! Applying a plan: slice every member tensor, rewrite every channel count, drop stale
//! value infos. The result keeps input/output names, ranks and output channel counts (outputs
//! are locked), so it drops into the user's pipeline unchanged.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::plan::PrunePlan;
use crate::analysis::channels::{Atom, ChannelAnalysis, CountPlace};
use crate::error::{PareError, Result};
use crate::model::Analysis;
use crate::model::proto::{ModelProto, TensorProto};
use crate::model::tensor::{DataType, i64_tensor};

/// Which atoms survive the plan.
pub fn kept_atoms(ca: &ChannelAnalysis, plan: &PrunePlan) -> Vec<bool> {
    let mut keep_unit: Vec<Vec<bool>> = ca.groups.iter().map(|g| vec![true; g.channels]).collect();
    for gp in &plan.groups {
        if gp.kept() < gp.total && gp.locked.is_empty() {
            let v = &mut keep_unit[gp.group];
            v.iter_mut().for_each(|b| *b = false);
            for &u in &gp.keep {
                if let Some(b) = v.get_mut(u) {
                    *b = true;
                }
            }
        }
    }
    ca.atom_group
        .iter()
        .zip(&ca.atom_unit)
        .map(|(&g, &u)| keep_unit[g][u])
        .collect()
}

/// Raw little-endian bytes of a tensor with fixed-width elements.
fn raw_of(t: &TensorProto) -> Result<(Vec<u8>, usize)> {
    let dt = DataType(t.data_type());
    let w = (dt.bits() / 8) as usize;
    if w == 0 {
        return Err(PareError::Tensor {
            tensor: t.name().to_string(),
            message: format!("cannot slice elements of type {dt}"),
        });
    }
    if let Some(r) = &t.raw_data {
        return Ok((r.to_vec(), w));
    }
    // Sized by the values present, not the declared dims (which may be corrupt).
    let present = t.float_data.len() + t.double_data.len() + t.int64_data.len();
    let mut out = Vec::with_capacity((present + t.int32_data.len()).saturating_mul(w));
    match dt {
        DataType::FLOAT => t
            .float_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::DOUBLE => t
            .double_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::INT64 => t
            .int64_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::INT32 => t
            .int32_data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::FLOAT16 | DataType::BFLOAT16 | DataType::INT16 | DataType::UINT16 => t
            .int32_data
            .iter()
            .for_each(|v| out.extend_from_slice(&(*v as u16).to_le_bytes())),
        DataType::INT8 | DataType::UINT8 | DataType::BOOL => {
            t.int32_data.iter().for_each(|v| out.push(*v as u8))
        }
        _ => {
            return Err(PareError::Tensor {
                tensor: t.name().to_string(),
                message: format!("cannot slice typed data of type {dt}"),
            });
        }
    }
    Ok((out, w))
}

/// Keeps the indices `keep` (ascending) of `axis`.
pub fn slice_tensor(t: &TensorProto, axis: usize, keep: &[usize]) -> Result<TensorProto> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    if axis >= dims.len() || keep.iter().any(|&k| k >= dims[axis]) {
        return Err(PareError::Tensor {
            tensor: t.name().to_string(),
            message: format!("cannot slice axis {axis} of dims {:?}", t.dims),
        });
    }
    let (raw, w) = raw_of(t)?;
    // Checked: corrupt dims (a 0 beside a 2^40) must be an error, not an overflow.
    let inner = dims[axis + 1..]
        .iter()
        .try_fold(w, |a, &d| a.checked_mul(d));
    let outer = dims[..axis]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = dims[axis];
    let total = outer
        .zip(inner)
        .and_then(|(o, i)| o.checked_mul(n)?.checked_mul(i));
    let (Some(inner), Some(outer), true) = (inner, outer, total == Some(raw.len())) else {
        return Err(PareError::Tensor {
            tensor: t.name().to_string(),
            message: format!("data does not match its dims {:?}", t.dims),
        });
    };
    let mut out = Vec::with_capacity((raw.len() / n.max(1)).saturating_mul(keep.len()));
    for o in 0..outer {
        for &k in keep {
            let base = (o * n + k) * inner;
            out.extend_from_slice(raw.get(base..base + inner).ok_or_else(|| {
                PareError::Tensor {
                    tensor: t.name().to_string(),
                    message: "data shorter than its dims".into(),
                }
            })?);
        }
    }
    let mut nt = t.clone();
    nt.dims[axis] = keep.len() as i64;
    nt.float_data.clear();
    nt.double_data.clear();
    nt.int32_data.clear();
    nt.int64_data.clear();
    nt.raw_data = Some(Bytes::from(out));
    Ok(nt)
}

/// Produces the pruned model. Members are grouped per (tensor, axis); a tensor sliced on two
/// axes (a conv between two pruned groups) is sliced once per axis.
pub fn apply_plan(a: &Analysis, ca: &ChannelAnalysis, plan: &PrunePlan) -> Result<ModelProto> {
    let keep = kept_atoms(ca, plan);
    let kept_positions = |atoms: &[Atom]| -> Vec<usize> {
        atoms
            .iter()
            .enumerate()
            .filter(|(_, a)| keep[**a as usize])
            .map(|(i, _)| i)
            .collect()
    };
    // (tensor, axis) → kept indices.
    let mut slices: BTreeMap<String, BTreeMap<usize, Vec<usize>>> = BTreeMap::new();
    for m in &ca.members {
        let idx = kept_positions(&m.atoms);
        if idx.len() < m.atoms.len() {
            slices
                .entry(m.tensor.clone())
                .or_default()
                .insert(m.axis, idx);
        }
    }
    // Count rewrites.
    let mut tensor_counts: HashMap<String, Vec<(usize, i64)>> = HashMap::new();
    let mut attr_counts: HashMap<(String, String), Vec<(usize, i64)>> = HashMap::new();
    let mut input_counts: BTreeMap<(String, usize), InputEdit> = BTreeMap::new();
    for c in &ca.counts {
        let n = c.atoms.iter().filter(|x| keep[**x as usize]).count() as i64;
        if let CountPlace::Input {
            input,
            index,
            base,
            stored,
            dtype,
        } = &c.place
        {
            // Every entry is applied: `base` may hold normalised bounds the stored one lacks.
            let e = input_counts
                .entry((c.node.clone(), *input))
                .or_insert_with(|| InputEdit {
                    values: base.clone(),
                    stored: stored.clone(),
                    dtype: DataType(*dtype),
                });
            if let Some(x) = e.values.get_mut(*index) {
                *x = n;
            }
            continue;
        }
        if n as usize == c.atoms.len() {
            continue;
        }
        match &c.place {
            CountPlace::Tensor { tensor, index } => tensor_counts
                .entry(tensor.clone())
                .or_default()
                .push((*index, n)),
            CountPlace::Attribute { attribute, index } => attr_counts
                .entry((c.node.clone(), attribute.clone()))
                .or_default()
                .push((*index, n)),
            CountPlace::Input { .. } => {}
        }
    }
    let mut model = a.model.proto.clone();
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| PareError::InvalidModel("no graph".into()))?;
    let rewrite = |t: &TensorProto, name: &str| -> Result<Option<TensorProto>> {
        let mut cur: Option<TensorProto> = None;
        if let Some(axes) = slices.get(name) {
            for (&axis, idx) in axes {
                let base = cur.as_ref().unwrap_or(t);
                cur = Some(slice_tensor(base, axis, idx)?);
            }
        }
        if let Some(edits) = tensor_counts.get(name) {
            let base = cur.as_ref().unwrap_or(t);
            let mut v = crate::model::tensor::to_i64(base)?;
            for &(i, n) in edits {
                if let Some(x) = v.get_mut(i) {
                    *x = n;
                }
            }
            let mut nt = i64_tensor(base.name(), &base.dims, &v);
            nt.data_type = base.data_type;
            if DataType(base.data_type()) != DataType::INT64 {
                // Keep the original int type (Split sizes are int64 by spec; be safe anyway).
                nt = cast_ints(base, &v)?;
            }
            nt.metadata_props = base.metadata_props.clone();
            nt.doc_string = base.doc_string.clone();
            cur = Some(nt);
        }
        Ok(cur)
    };
    for t in &mut g.initializer {
        let name = t.name().to_string();
        if let Some(nt) = rewrite(t, &name)? {
            *t = nt;
        }
    }
    for node in &mut g.node {
        let out = node.output.first().cloned().unwrap_or_default();
        if node.op_type() == "Constant"
            && (slices.contains_key(&out) || tensor_counts.contains_key(&out))
            && let Some(attr) = node.attribute.iter_mut().find(|x| x.name() == "value")
            && let Some(t) = attr.t.as_deref()
            && let Some(nt) = rewrite(t, &out)?
        {
            attr.t = Some(Box::new(nt));
        }
        let name = node.display_name();
        for attr in &mut node.attribute {
            if let Some(edits) = attr_counts.get(&(name.clone(), attr.name().to_string())) {
                for &(i, n) in edits {
                    if attr.ints.is_empty() {
                        attr.i = Some(n);
                    } else if let Some(x) = attr.ints.get_mut(i) {
                        *x = n;
                    }
                }
            }
        }
    }
    sync_initializer_inputs(g);
    private_inputs(g, input_counts)?;
    // Intermediate value infos describe the old channel counts; shape inference recomputes them.
    g.value_info.clear();
    Ok(model)
}

/// Graph inputs that carry an initializer's name (IR < 4 exports list every weight as an input
/// too) take the sliced initializer's dims: onnxruntime refuses a file whose input declares the
/// old size ("Shape of initializer ... does not match"), while tract accepts it.
fn sync_initializer_inputs(g: &mut crate::model::proto::GraphProto) {
    use crate::model::proto::{Dimension, TypeValue};
    let dims: HashMap<&str, &[i64]> = g
        .initializer
        .iter()
        .map(|t| (t.name(), t.dims.as_slice()))
        .collect();
    for input in &mut g.input {
        let Some(d) = dims.get(input.name()) else {
            continue;
        };
        let shape = input.r#type.as_mut().and_then(|t| match t.value.as_mut() {
            Some(TypeValue::TensorType(tt)) => tt.shape.as_mut(),
            _ => None,
        });
        let Some(shape) = shape else { continue };
        if shape.dim.len() != d.len() {
            continue;
        }
        for (dim, &v) in shape.dim.iter_mut().zip(d.iter()) {
            dim.value = Some(Dimension::DimValue(v));
        }
    }
}

/// New values for one node input (Split sizes, Slice starts/ends).
struct InputEdit {
    values: Vec<i64>,
    /// The constant's values before pruning; `None` when computed at run time.
    stored: Option<Vec<i64>>,
    dtype: DataType,
}

/// Gives each node whose Split sizes or Slice bounds changed a private constant: the original
/// may be shared with other nodes (other blocks, other axes) or computed at run time by a
/// formula that does not follow uneven pruning.
fn private_inputs(
    g: &mut crate::model::proto::GraphProto,
    edits: BTreeMap<(String, usize), InputEdit>,
) -> Result<()> {
    let mut taken: std::collections::HashSet<String> = g
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
        .chain(g.input.iter().map(|i| i.name().to_string()))
        .collect();
    for ((node_name, input), e) in edits {
        if e.stored.as_ref() == Some(&e.values) {
            continue;
        }
        let Some(node) = g.node.iter_mut().find(|n| n.display_name() == node_name) else {
            continue;
        };
        let Some(slot) = node.input.get_mut(input) else {
            continue;
        };
        let mut name = format!("{slot}_pruned");
        let mut k = 1;
        while taken.contains(&name) {
            k += 1;
            name = format!("{slot}_pruned{k}");
        }
        taken.insert(name.clone());
        let mut t = i64_tensor(&name, &[e.values.len() as i64], &e.values);
        if e.dtype != DataType::INT64 {
            t.data_type = Some(e.dtype.0);
            t = cast_ints(&t, &e.values)?;
        }
        g.initializer.push(t);
        *slot = name;
    }
    Ok(())
}

fn cast_ints(base: &TensorProto, v: &[i64]) -> Result<TensorProto> {
    let dt = DataType(base.data_type());
    let mut raw = Vec::new();
    for &x in v {
        match dt {
            DataType::INT32 => raw.extend_from_slice(&(x as i32).to_le_bytes()),
            DataType::INT64 => raw.extend_from_slice(&x.to_le_bytes()),
            _ => {
                return Err(PareError::Tensor {
                    tensor: base.name().to_string(),
                    message: format!("cannot rewrite channel counts stored as {dt}"),
                });
            }
        }
    }
    let mut nt = base.clone();
    nt.int32_data.clear();
    nt.int64_data.clear();
    nt.raw_data = Some(Bytes::from(raw));
    Ok(nt)
}
