//! `pare import-weights`: puts a PyTorch checkpoint's weights into an ONNX model, and says
//! exactly what matched and what did not.
//!
//! Seed case Q10 is a `strict=False` load whose `module.` prefixes made almost nothing load,
//! silently. ONNX exporters rename weights (`onnx::Conv_538`) and fold BatchNorm into convs,
//! so a name-only match fails the same way. Here names are matched first (after dropping
//! `module.`/`model.` prefixes), then the rest by graph position and shape — a conv's weights
//! against the checkpoint's next conv, folding its BatchNorm when the ONNX graph has no
//! BatchNormalization nodes — and every tensor that is left over on either side, or whose shape
//! differs, is listed. The command fails unless everything matched or `--partial` is given.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkpoint::{CkptTensor, load_checkpoint};
use crate::model::proto::{GraphProto, TensorProto};
use crate::model::tensor::{DataType, f32_to_f16, to_f32};
use crate::model::{GraphIndex, Model, SaveOptions, load_model, save_model};
use crate::report::Report;

/// What to import and where to write it.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub model: PathBuf,
    pub checkpoint: PathBuf,
    pub output: PathBuf,
    /// Write the model even when something did not match.
    pub partial: bool,
    /// BatchNorm epsilon used when folding (PyTorch's default; the checkpoint does not store it).
    pub bn_eps: f64,
}

/// Errors of `import-weights` (bad input: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoint::CheckpointError),
    #[error(transparent)]
    Model(#[from] crate::PareError),
    #[error("{}: tensors '{first}' and '{second}' are the same after dropping module./model. prefixes", .path.display())]
    Ambiguous {
        path: PathBuf,
        first: String,
        second: String,
    },
}

/// One ONNX initializer that received a checkpoint tensor.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub onnx: String,
    pub checkpoint: String,
    pub dims: Vec<i64>,
    /// How the value was derived: `copy`, `reshape`, `transpose` or `fold-bn:<bn prefix>`.
    pub how: String,
}

/// A tensor on one side that has no partner on the other.
#[derive(Clone, Debug, Serialize)]
pub struct Unmatched {
    pub name: String,
    pub dims: Vec<i64>,
}

/// Same slot, different shape.
#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    pub onnx: String,
    pub onnx_dims: Vec<i64>,
    pub checkpoint: String,
    pub checkpoint_dims: Vec<i64>,
}

/// The loud report: every tensor on both sides is in exactly one list.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub model: String,
    pub checkpoint: String,
    pub output: String,
    /// Matched by (normalised) name.
    pub matched: Vec<Pair>,
    /// Matched by graph position and shape because the exporter renamed them.
    pub renamed: Vec<Pair>,
    pub unmatched_model: Vec<Unmatched>,
    pub unmatched_checkpoint: Vec<Unmatched>,
    pub shape_mismatches: Vec<Mismatch>,
    /// BatchNorm tensors the checkpoint lacks (a module with some of weight, bias,
    /// running_mean, running_var but not all), named so the user sees which key is gone.
    pub missing_checkpoint: Vec<String>,
    /// Integer bookkeeping tensors (`num_batches_tracked`) that are not weights.
    pub skipped: Vec<String>,
    /// Whether the output model was written.
    pub written: bool,
}

impl ImportReport {
    /// Everything matched: nothing unmatched on either side, no shape differences.
    pub fn complete(&self) -> bool {
        self.unmatched_model.is_empty()
            && self.unmatched_checkpoint.is_empty()
            && self.shape_mismatches.is_empty()
            && self.missing_checkpoint.is_empty()
    }
}

impl Report for ImportReport {
    fn render_text(&self) -> String {
        let mut s = format!("import-weights: {} -> {}\n", self.checkpoint, self.model);
        let folded = self
            .renamed
            .iter()
            .chain(&self.matched)
            .filter(|p| p.how.starts_with("fold-bn") && p.dims.len() > 1)
            .count();
        s += &format!("  matched by name            {}\n", self.matched.len());
        s += &format!(
            "  renamed, matched by place  {} ({folded} convs with BatchNorm folded)\n",
            self.renamed.len()
        );
        s += &format!(
            "  shape mismatches           {}\n",
            self.shape_mismatches.len()
        );
        s += &format!(
            "  unmatched in the model     {}\n",
            self.unmatched_model.len()
        );
        s += &format!(
            "  unmatched in checkpoint    {}\n",
            self.unmatched_checkpoint.len()
        );
        s += &format!("  skipped (counters)         {}\n", self.skipped.len());
        for m in &self.missing_checkpoint {
            s += &format!("  MISSING from checkpoint {m}\n");
        }
        for m in &self.shape_mismatches {
            s += &format!(
                "  SHAPE MISMATCH  {} {:?}  vs checkpoint {} {:?}\n",
                m.onnx, m.onnx_dims, m.checkpoint, m.checkpoint_dims
            );
        }
        for u in &self.unmatched_model {
            s += &format!("  UNMATCHED model initializer {} {:?}\n", u.name, u.dims);
        }
        for u in &self.unmatched_checkpoint {
            s += &format!("  UNMATCHED checkpoint tensor {} {:?}\n", u.name, u.dims);
        }
        s += &format!(
            "  {:<32} {:<40} how\n",
            "ONNX initializer", "checkpoint tensor"
        );
        for p in self.matched.iter().chain(&self.renamed) {
            s += &format!("  {:<32} {:<40} {}\n", p.onnx, p.checkpoint, p.how);
        }
        s += &match (self.written, self.complete()) {
            (true, true) => format!("wrote {}\n", self.output),
            (true, false) => format!("wrote {} (PARTIAL: see above)\n", self.output),
            (false, _) => {
                "nothing written: not everything matched (use --partial to write anyway)\n"
                    .to_string()
            }
        };
        s
    }
}

/// Drops the wrapper prefixes DataParallel, Lightning and torch.compile add.
pub fn normalise(name: &str) -> &str {
    let mut n = name;
    loop {
        let before = n;
        for p in ["module.", "model.", "_orig_mod."] {
            n = n.strip_prefix(p).unwrap_or(n);
        }
        if n == before {
            return n;
        }
    }
}

/// A weight slot of the ONNX graph: an initializer a node reads as a parameter.
#[derive(Clone, Debug)]
struct Slot {
    name: String,
    dims: Vec<i64>,
    /// A 2-D weight that is `[in, out]` (MatMul, Gemm with transB=0) where PyTorch stores
    /// `[out, in]`.
    transposed: bool,
}

/// ONNX parameters grouped by the node that reads them, in topological order.
#[derive(Clone, Debug)]
enum OnnxUnit {
    Conv {
        w: Slot,
        b: Option<Slot>,
        axis: usize,
    },
    Single(Slot),
}

/// Checkpoint tensors grouped into modules, in checkpoint order.
#[derive(Clone, Debug)]
enum CkUnit {
    Conv {
        w: usize,
        b: Option<usize>,
        bn: Option<Bn>,
    },
    Single(usize),
}

/// A BatchNorm module's four tensors (indices into the checkpoint).
#[derive(Clone, Debug)]
struct Bn {
    prefix: String,
    gamma: usize,
    beta: usize,
    mean: usize,
    var: usize,
}

/// Imports `req.checkpoint` into `req.model`, writing `req.output` when everything matched
/// (or `partial`). The report lists every tensor on both sides.
pub fn import_weights(req: &ImportRequest) -> Result<ImportReport, ImportError> {
    crate::report::check_output(Some(&req.model), &req.output)?;
    let ck = load_checkpoint(&req.checkpoint)?;
    let mut model = load_model(&req.model)?;
    let graph = model
        .proto
        .graph
        .as_ref()
        .ok_or_else(|| crate::PareError::InvalidModel("model has no graph".into()))?;
    let index = GraphIndex::build(graph)?;
    let mut rep = ImportReport {
        model: req.model.display().to_string(),
        checkpoint: req.checkpoint.display().to_string(),
        output: req.output.display().to_string(),
        ..Default::default()
    };
    let (ck, skipped) = normalised(ck, &req.checkpoint)?;
    rep.skipped = skipped;
    rep.missing_checkpoint = missing_bn_members(&ck);
    let fold = !graph
        .node
        .iter()
        .any(|n| n.op_type() == "BatchNormalization");
    let onnx_units = onnx_units(graph, &index);
    let ck_units = ck_units(&ck, fold);
    let mut m = Matcher {
        ck: &ck,
        eps: req.bn_eps,
        values: HashMap::new(),
        rep,
    };
    m.run(onnx_units, ck_units);
    let mut rep = m.rep;
    if rep.complete() || req.partial {
        write_values(&mut model, &m.values, &req.output)?;
        rep.written = true;
    }
    Ok(rep)
}

/// Normalises names (refusing two that collide) and sets integer counters aside.
fn normalised(
    ck: Vec<CkptTensor>,
    path: &Path,
) -> Result<(Vec<CkptTensor>, Vec<String>), ImportError> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for mut t in ck {
        if t.integer {
            skipped.push(t.name);
            continue;
        }
        let n = normalise(&t.name).to_string();
        if let Some(first) = seen.insert(n.clone(), t.name.clone()) {
            return Err(ImportError::Ambiguous {
                path: path.to_path_buf(),
                first,
                second: t.name,
            });
        }
        t.name = n;
        out.push(t);
    }
    Ok((out, skipped))
}

fn onnx_units(graph: &GraphProto, index: &GraphIndex) -> Vec<OnnxUnit> {
    let mut seen = HashSet::new();
    let mut units = Vec::new();
    for &i in &index.topo {
        let node = &graph.node[i];
        let op = node.op_type();
        let slot = |pos: usize, seen: &mut HashSet<String>| -> Option<Slot> {
            let name = node.input.get(pos)?;
            let &ix = index.initializers.get(name)?;
            let t = graph.initializer.get(ix)?;
            let dt = DataType(t.data_type.unwrap_or(0));
            let param_op = matches!(op, "Conv" | "ConvTranspose" | "Gemm" | "MatMul" | "PRelu")
                || op.contains("Norm");
            if !dt.is_float() || !(param_op || t.numel() > 1) || !seen.insert(name.clone()) {
                return None;
            }
            let transposed = match op {
                "MatMul" => pos == 1,
                "Gemm" => pos == 1 && node.attr_i("transB").unwrap_or(0) == 0,
                _ => false,
            };
            Some(Slot {
                name: name.clone(),
                dims: t.dims.clone(),
                transposed: transposed && t.dims.len() == 2,
            })
        };
        if matches!(op, "Conv" | "ConvTranspose")
            && let Some(w) = slot(1, &mut seen)
        {
            let b = slot(2, &mut seen);
            let axis = usize::from(op == "ConvTranspose");
            units.push(OnnxUnit::Conv { w, b, axis });
            continue;
        }
        for pos in 0..node.input.len() {
            if let Some(s) = slot(pos, &mut seen) {
                units.push(OnnxUnit::Single(s));
            }
        }
    }
    units
}

/// Names of BatchNorm members absent from modules that have running statistics: a removed
/// `running_var` otherwise shows up only as a conv that no longer fits.
fn missing_bn_members(ck: &[CkptTensor]) -> Vec<String> {
    const MEMBERS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];
    let names: HashSet<&str> = ck.iter().map(|t| t.name.as_str()).collect();
    let mut prefixes: Vec<&str> = Vec::new();
    for t in ck {
        if let Some((p, last)) = t.name.rsplit_once('.')
            && last.starts_with("running_")
            && !prefixes.contains(&p)
        {
            prefixes.push(p);
        }
    }
    let mut out = Vec::new();
    for p in prefixes {
        for m in MEMBERS {
            let n = format!("{p}.{m}");
            if !names.contains(n.as_str()) {
                out.push(n);
            }
        }
    }
    out
}

/// Groups checkpoint tensors into conv modules (weight, bias, and the BatchNorm right after
/// when folding) and single tensors.
fn ck_units(ck: &[CkptTensor], fold: bool) -> Vec<CkUnit> {
    let idx: HashMap<&str, usize> = ck
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let bn_at = |prefix: &str| -> Option<Bn> {
        let g = |s: &str| idx.get(format!("{prefix}{s}").as_str()).copied();
        Some(Bn {
            prefix: prefix.trim_end_matches('.').to_string(),
            gamma: g("weight")?,
            beta: g("bias")?,
            mean: g("running_mean")?,
            var: g("running_var")?,
        })
    };
    let mut used = vec![false; ck.len()];
    let mut units = Vec::new();
    for (i, t) in ck.iter().enumerate() {
        if used[i] {
            continue;
        }
        let Some(prefix) = t.name.strip_suffix("weight") else {
            used[i] = true;
            units.push(CkUnit::Single(i));
            continue;
        };
        if !(3..=5).contains(&t.dims.len()) {
            used[i] = true;
            units.push(CkUnit::Single(i));
            continue;
        }
        let b = idx.get(format!("{prefix}bias").as_str()).copied();
        // The BatchNorm registered right after this conv: the next module in the checkpoint.
        let next_bn = ck[i + 1..]
            .iter()
            .position(|n| Some(n.name.as_str()) != b.map(|b| ck[b].name.as_str()))
            .map(|p| i + 1 + p)
            .and_then(|j| ck[j].name.rsplit_once('.').map(|(p, _)| format!("{p}.")))
            .and_then(|p| bn_at(&p))
            .filter(|_| fold);
        used[i] = true;
        if let Some(b) = b {
            used[b] = true;
        }
        if let Some(bn) = &next_bn {
            for j in [bn.gamma, bn.beta, bn.mean, bn.var] {
                used[j] = true;
            }
        }
        units.push(CkUnit::Conv {
            w: i,
            b,
            bn: next_bn,
        });
    }
    units
}

struct Matcher<'a> {
    ck: &'a [CkptTensor],
    eps: f64,
    /// New values per ONNX initializer.
    values: HashMap<String, Vec<f32>>,
    rep: ImportReport,
}

/// How a checkpoint tensor's layout maps onto a slot.
fn fit(slot: &Slot, t: &CkptTensor) -> Option<&'static str> {
    let squeeze = |d: &[i64]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
    if slot.dims == t.dims {
        Some("copy")
    } else if slot.transposed && t.dims.len() == 2 && slot.dims == [t.dims[1], t.dims[0]] {
        Some("transpose")
    } else if squeeze(&slot.dims) == squeeze(&t.dims) {
        Some("reshape")
    } else {
        None
    }
}

fn transpose2(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

impl Matcher<'_> {
    fn run(&mut self, onnx: Vec<OnnxUnit>, ck: Vec<CkUnit>) {
        // Pass 1: by name.
        let by_name: HashMap<&str, usize> = ck
            .iter()
            .enumerate()
            .map(|(i, u)| (self.ck[self.lead(u)].name.as_str(), i))
            .collect();
        let mut ck_used = vec![false; ck.len()];
        let mut rest = Vec::new();
        for u in onnx {
            let lead = normalise(&self.onnx_lead(&u).name).to_string();
            match by_name.get(lead.as_str()) {
                Some(&j) if !ck_used[j] => {
                    ck_used[j] = true;
                    self.pair(&u, &ck[j], true);
                }
                _ => rest.push(u),
            }
        }
        let remaining: Vec<CkUnit> = ck
            .into_iter()
            .zip(ck_used)
            .filter_map(|(u, used)| (!used).then_some(u))
            .collect();
        self.by_position(rest, remaining);
    }

    /// Pass 2: lockstep over the leftovers in order. On a misfit it looks a few units ahead on
    /// each side to resynchronise, so one missing or extra tensor is reported as exactly that.
    fn by_position(&mut self, onnx: Vec<OnnxUnit>, ck: Vec<CkUnit>) {
        const AHEAD: usize = 3;
        let (mut i, mut j) = (0, 0);
        while i < onnx.len() && j < ck.len() {
            if self.compatible(&onnx[i], &ck[j]) {
                self.pair(&onnx[i], &ck[j], false);
                i += 1;
                j += 1;
            } else if let Some(k) =
                (1..=AHEAD).find(|k| ck.get(j + k).is_some_and(|c| self.compatible(&onnx[i], c)))
            {
                for c in &ck[j..j + k] {
                    self.ck_unmatched(c);
                }
                j += k;
            } else if let Some(k) =
                (1..=AHEAD).find(|k| onnx.get(i + k).is_some_and(|o| self.compatible(o, &ck[j])))
            {
                for o in &onnx[i..i + k] {
                    self.onnx_unmatched(o);
                }
                i += k;
            } else {
                self.misfit(&onnx[i], &ck[j]);
                i += 1;
                j += 1;
            }
        }
        for o in &onnx[i..] {
            self.onnx_unmatched(o);
        }
        for c in &ck[j..] {
            self.ck_unmatched(c);
        }
    }

    fn lead(&self, u: &CkUnit) -> usize {
        match u {
            CkUnit::Conv { w, .. } => *w,
            CkUnit::Single(i) => *i,
        }
    }

    fn onnx_lead<'u>(&self, u: &'u OnnxUnit) -> &'u Slot {
        match u {
            OnnxUnit::Conv { w, .. } => w,
            OnnxUnit::Single(s) => s,
        }
    }

    fn compatible(&self, o: &OnnxUnit, c: &CkUnit) -> bool {
        match (o, c) {
            (OnnxUnit::Conv { w, b, axis }, CkUnit::Conv { w: cw, b: cb, bn }) => {
                w.dims == self.ck[*cw].dims
                    && bn.as_ref().is_none_or(|bn| {
                        Some(&(self.ck[bn.gamma].values.len() as i64)) == w.dims.get(*axis)
                    })
                    && matches!(
                        (b, cb, bn),
                        (Some(_), _, Some(_)) | (Some(_), Some(_), None) | (None, None, None)
                    )
            }
            (OnnxUnit::Single(s), CkUnit::Single(i)) => fit(s, &self.ck[*i]).is_some(),
            _ => false,
        }
    }

    /// Same kind of unit, different shapes: a shape mismatch; different kinds: unmatched.
    fn misfit(&mut self, o: &OnnxUnit, c: &CkUnit) {
        let same_kind = matches!(
            (o, c),
            (OnnxUnit::Conv { .. }, CkUnit::Conv { .. }) | (OnnxUnit::Single(_), CkUnit::Single(_))
        );
        if same_kind {
            let s = self.onnx_lead(o);
            let t = &self.ck[self.lead(c)];
            self.rep.shape_mismatches.push(Mismatch {
                onnx: s.name.clone(),
                onnx_dims: s.dims.clone(),
                checkpoint: t.name.clone(),
                checkpoint_dims: t.dims.clone(),
            });
        } else {
            self.onnx_unmatched(o);
            self.ck_unmatched(c);
        }
    }

    fn onnx_unmatched(&mut self, o: &OnnxUnit) {
        let slots = match o {
            OnnxUnit::Conv { w, b, .. } => std::iter::once(w).chain(b).collect::<Vec<_>>(),
            OnnxUnit::Single(s) => vec![s],
        };
        for s in slots {
            self.rep.unmatched_model.push(Unmatched {
                name: s.name.clone(),
                dims: s.dims.clone(),
            });
        }
    }

    fn ck_unmatched(&mut self, c: &CkUnit) {
        let ids: Vec<usize> = match c {
            CkUnit::Conv { w, b, bn } => {
                let mut v = vec![*w];
                v.extend(b);
                if let Some(bn) = bn {
                    v.extend([bn.gamma, bn.beta, bn.mean, bn.var]);
                }
                v
            }
            CkUnit::Single(i) => vec![*i],
        };
        for i in ids {
            self.rep.unmatched_checkpoint.push(Unmatched {
                name: self.ck[i].name.clone(),
                dims: self.ck[i].dims.clone(),
            });
        }
    }

    /// Records and computes the values of a compatible (or name-matched) pair.
    fn pair(&mut self, o: &OnnxUnit, c: &CkUnit, by_name: bool) {
        if !self.compatible(o, c) {
            self.misfit(o, c);
            return;
        }
        let pairs = match (o, c) {
            (OnnxUnit::Conv { w, b, axis }, CkUnit::Conv { w: cw, b: cb, bn }) => {
                self.conv_values(w, b.as_ref(), *axis, *cw, *cb, bn.as_ref())
            }
            (OnnxUnit::Single(s), CkUnit::Single(i)) => {
                let t = &self.ck[*i];
                let how = fit(s, t).unwrap_or("copy");
                let v = if how == "transpose" {
                    transpose2(&t.values, t.dims[0] as usize, t.dims[1] as usize)
                } else {
                    t.values.clone()
                };
                vec![(s.clone(), t.name.clone(), how.to_string(), v)]
            }
            _ => Vec::new(),
        };
        for (slot, ck_name, how, v) in pairs {
            let named = by_name && normalise(&slot.name) == ck_name;
            let p = Pair {
                onnx: slot.name.clone(),
                checkpoint: ck_name,
                dims: slot.dims.clone(),
                how,
            };
            if named {
                self.rep.matched.push(p);
            } else {
                self.rep.renamed.push(p);
            }
            self.values.insert(slot.name, v);
        }
    }

    fn conv_values(
        &self,
        w: &Slot,
        b: Option<&Slot>,
        axis: usize,
        cw: usize,
        cb: Option<usize>,
        bn: Option<&Bn>,
    ) -> Vec<(Slot, String, String, Vec<f32>)> {
        let wt = &self.ck[cw];
        let Some(bn) = bn else {
            let mut out = vec![(w.clone(), wt.name.clone(), "copy".into(), wt.values.clone())];
            if let (Some(b), Some(cb)) = (b, cb) {
                let t = &self.ck[cb];
                out.push((b.clone(), t.name.clone(), "copy".into(), t.values.clone()));
            }
            return out;
        };
        let (fw, fb) = fold_bn(self.ck, wt, cb, bn, axis, self.eps);
        let how = format!("fold-bn:{}", bn.prefix);
        let mut out = vec![(w.clone(), wt.name.clone(), how.clone(), fw)];
        if let Some(b) = b {
            let name = format!("{}.{{weight,bias,running_mean,running_var}}", bn.prefix);
            out.push((b.clone(), name, how, fb));
        }
        out
    }
}

/// Folds BatchNorm into the conv before it: `w' = w·γ/√(σ²+ε)` per output channel,
/// `b' = (b − μ)·γ/√(σ²+ε) + β` — computed in f64, as the exporter's folding does in f32 or
/// better, so outputs agree far inside 1e-5.
fn fold_bn(
    ck: &[CkptTensor],
    w: &CkptTensor,
    cb: Option<usize>,
    bn: &Bn,
    axis: usize,
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let g = &ck[bn.gamma].values;
    let scale: Vec<f64> = g
        .iter()
        .zip(&ck[bn.var].values)
        .map(|(&g, &v)| f64::from(g) / (f64::from(v) + eps).sqrt())
        .collect();
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let inner: usize = dims[axis + 1..].iter().product();
    let per = dims.get(axis).copied().unwrap_or(1);
    let fw = w
        .values
        .iter()
        .enumerate()
        .map(|(k, &x)| {
            let ch = (k / inner.max(1)) % per.max(1);
            (f64::from(x) * scale.get(ch).copied().unwrap_or(1.0)) as f32
        })
        .collect();
    let fb = (0..scale.len())
        .map(|c| {
            let b0 = cb.map_or(0.0, |i| f64::from(ck[i].values[c]));
            let mu = f64::from(ck[bn.mean].values[c]);
            ((b0 - mu) * scale[c] + f64::from(ck[bn.beta].values[c])) as f32
        })
        .collect();
    (fw, fb)
}

/// Replaces the matched initializers (keeping each one's name, shape and float type) and
/// writes the model atomically.
fn write_values(
    model: &mut Model,
    values: &HashMap<String, Vec<f32>>,
    out: &Path,
) -> Result<(), ImportError> {
    if let Some(g) = model.proto.graph.as_mut() {
        for t in g.initializer.iter_mut() {
            if let Some(v) = values.get(t.name()) {
                *t = retyped(t, v)?;
            }
        }
    }
    model.external_tensors.clear();
    save_model(model, out, &SaveOptions::default())?;
    Ok(())
}

fn retyped(t: &TensorProto, v: &[f32]) -> Result<TensorProto, ImportError> {
    let dt = DataType(t.data_type.unwrap_or(0));
    let raw: Vec<u8> = match dt {
        DataType::FLOAT => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DataType::FLOAT16 => v
            .iter()
            .flat_map(|&x| f32_to_f16(x).to_le_bytes())
            .collect(),
        DataType::DOUBLE => v.iter().flat_map(|&x| f64::from(x).to_le_bytes()).collect(),
        _ => {
            // Other float encodings (bfloat16, fp8): keep the original values' type via f32.
            let _ = to_f32(t)?;
            return Err(ImportError::Model(crate::PareError::Tensor {
                tensor: t.name().to_string(),
                message: format!("cannot write imported values as {}", dt.name()),
            }));
        }
    };
    Ok(TensorProto {
        dims: t.dims.clone(),
        data_type: t.data_type,
        name: t.name.clone(),
        raw_data: Some(raw.into()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_dropped_repeatedly() {
        assert_eq!(
            normalise("module.model.features.0.weight"),
            "features.0.weight"
        );
        assert_eq!(normalise("features.0.weight"), "features.0.weight");
        assert_eq!(normalise("_orig_mod.fc.bias"), "fc.bias");
    }

    #[test]
    fn fold_matches_hand_computation() {
        let t = |name: &str, dims: Vec<i64>, values: Vec<f32>| CkptTensor {
            name: name.into(),
            dims,
            values,
            integer: false,
        };
        let ck = vec![
            t("c.weight", vec![2, 1, 1, 1], vec![2.0, 3.0]),
            t("bn.weight", vec![2], vec![1.0, 2.0]),
            t("bn.bias", vec![2], vec![0.5, -0.5]),
            t("bn.running_mean", vec![2], vec![1.0, 0.0]),
            t("bn.running_var", vec![2], vec![3.0, 0.0]),
        ];
        let bn = Bn {
            prefix: "bn".into(),
            gamma: 1,
            beta: 2,
            mean: 3,
            var: 4,
        };
        let (w, b) = fold_bn(&ck, &ck[0], None, &bn, 0, 1.0);
        assert_eq!(w, [1.0, 6.0]);
        assert_eq!(b, [0.0, -0.5]);
        let units = ck_units(&ck, true);
        assert!(
            matches!(&units[..], [CkUnit::Conv { bn: Some(_), .. }]),
            "{units:?}"
        );
        assert_eq!(ck_units(&ck, false).len(), 5);
    }
}
