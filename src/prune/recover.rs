//! Reconstruction after pruning, without training: every consumer of a pruned channel group
//! (a Conv, grouped and depthwise included, a Gemm, a MatMul) is re-fitted so its output
//! matches the *original* model's output of that node on calibration activations.
//!
//! Removing channels of a trained model shifts every consumer's output: the removed channels
//! carried signal (and, after BatchNorm folding, often a large constant). `lsq` solves, per
//! consumer and in topological order, a ridge least-squares problem over the kept input
//! channels (im2col patches on sampled output positions, one bias column), with inputs taken
//! from the pruned model as refitted so far and targets from the original; fitting toward the
//! original rather than the pruned upstream's own outputs lets each layer absorb the errors
//! of the layers before it. Conv/Gemm/MatMul nodes downstream of a pruned consumer that lost
//! no input channel are re-fitted the same way (`refit_downstream`): their inputs drifted, and
//! where the drift is partly linear a fit removes it rather than passing it on. The normal
//! equations XᵀX, XᵀY are accumulated sample by sample,
//! so memory is the size of the systems, not of the data. The ridge shrinks toward the pruned
//! weights (not toward zero), and its strength is chosen per layer by two-fold
//! cross-validation over samples, with "no fit" competing: late layers with few positions per
//! image and hundreds of inputs overfit otherwise (in-sample 30 dB, worse than nothing out of
//! sample). Mirrored copies of image inputs double the data. `bias` (and the fallback where a
//! least-squares fit does not apply) folds the removed channels' mean contribution into the
//! consumer's bias.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use faer::prelude::Solve;
use faer::{Accum, Mat, MatRef, Par, Side};
use serde::Serialize;

use crate::analysis::channels::{ChannelAnalysis, member_values};
use crate::data::SampleSet;
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::Analysis;
use crate::model::graph::{PrefixInputs, prefix};
use crate::model::proto::{ModelProto, NodeProto, TensorProto};
use crate::model::tensor::{f32_tensor, to_f32};
use crate::rng::Rng;
use crate::runtime::pool::{RunnerCache, for_each_sample};
use crate::runtime::{EngineKind, HostTensor};

use super::sensitivity::SampleSpec;
use super::{Pruned, RecoverMode};

/// Knobs of the reconstruction.
#[derive(Clone, Debug)]
pub struct RecoverOptions {
    pub mode: RecoverMode,
    /// Output positions sampled per sample and layer (rows of the least-squares system).
    pub positions: usize,
    /// Largest system (unknowns per output) solved; wider consumers get bias folding.
    pub max_unknowns: usize,
    pub engine: EngineKind,
    pub threads: usize,
    pub seed: u64,
    /// Also fit on left-right mirrored copies of image-like samples.
    pub flip: bool,
    /// With `lsq`, also re-fit every Conv/Gemm/MatMul downstream of a pruned consumer whose
    /// own channels were all kept: its input drifted from the original's, and a fit toward
    /// the original's output on the pruned model's actual input absorbs that drift instead
    /// of passing it on (on MobileNetV2 the error otherwise builds up from the first blocks).
    pub refit_downstream: bool,
    /// With `lsq`, a consumer whose output is only added to a residual stream is fitted
    /// toward the original *sum* minus the pruned model's other addend: the block then
    /// corrects the drift its skip connection carries instead of handing it to every later
    /// block (the check is `residual_add`).
    pub residual_targets: bool,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            mode: RecoverMode::Lsq,
            positions: 512,
            max_unknowns: 4096,
            engine: EngineKind::Tract,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 0,
            flip: true,
            refit_downstream: true,
            residual_targets: true,
        }
    }
}

/// What was done to one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FitMethod {
    Lsq,
    Bias,
    Unchanged,
}

/// What a least-squares fit aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FitTarget {
    /// The original node's output.
    Output,
    /// The original residual sum minus the pruned model's other addend.
    ResidualSum,
}

/// One consumer's repair, with the fit quality on the calibration rows (SQNR of the node's
/// output against the original's, before and after the fit).
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecovery {
    pub node: String,
    pub method: FitMethod,
    pub inputs_kept: usize,
    pub inputs_total: usize,
    pub fit_sqnr_before_db: Option<f64>,
    pub fit_sqnr_after_db: Option<f64>,
    /// The fit's SQNR on the fold it did not see (two-fold, by sample).
    pub cv_sqnr_db: Option<f64>,
    /// The chosen ridge strength (relative to XᵀX's mean diagonal).
    pub ridge: Option<f64>,
    /// What a least-squares fit aimed at (`None` for bias folding).
    pub target: Option<FitTarget>,
    pub note: Option<String>,
}

/// The whole reconstruction (`recovery` in `pare prune --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    pub mode: RecoverMode,
    /// Calibration samples the fits used (never the held-out ones).
    pub samples: usize,
    /// Indices (in the --calib set) of the samples the fits used.
    pub fit_samples: Vec<usize>,
    /// Indices of the held-out samples fidelity was measured on.
    pub eval_samples: Vec<usize>,
    pub layers: Vec<LayerRecovery>,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// How a consumer computes its output from its input.
#[derive(Clone, Debug)]
pub(super) enum OpKind {
    Conv(ConvGeom),
    Gemm {
        trans_b: bool,
        alpha: f64,
        beta: f64,
    },
    MatMul,
}

/// A 2-D convolution's geometry (pads resolved per input size for `auto_pad`).
#[derive(Clone, Debug)]
pub(super) struct ConvGeom {
    pub(super) kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    /// top, left (bottom/right follow from the output size).
    pads: [usize; 2],
    auto_pad: String,
}

/// A node whose input channels were pruned.
#[derive(Clone, Debug)]
pub(super) struct Consumer {
    pub(super) node: usize,
    pub(super) name: String,
    pub(super) kind: OpKind,
    pub(super) input: String,
    pub(super) output: String,
    pub(super) weight: String,
    /// Kept positions on the input's channel axis (original indices).
    pub(super) kept_in: Vec<usize>,
    pub(super) total_in: usize,
    /// Kept positions on the output's channel axis (original indices).
    pub(super) kept_out: Vec<usize>,
    /// Why a least-squares fit does not apply (bias folding only).
    pub(super) no_lsq: Option<String>,
    /// The 4-D tensor a Gemm/MatMul's input was global-average-pooled from (see
    /// [`pooled_source`]): the fit uses its spatial positions as rows.
    pub(super) pooled: Option<String>,
    /// The residual Add that alone reads the output (see [`residual_add`]).
    pub(super) residual: Option<ResidualAdd>,
}

/// The tensor `input` was computed from by GlobalAveragePool → Flatten/Reshape, when it has
/// the same channels. Averaging commutes with a linear map, so a Gemm on the pooled vector
/// can be fitted on every spatial position before the pool: a classifier then has
/// positions × samples rows instead of one per sample (MobileNetV2: 49× more).
fn pooled_source(a: &Analysis, ca: &ChannelAnalysis, input: &str) -> Option<String> {
    let g = a.graph();
    let flat = &g.node[*a.index.producer.get(input)?];
    if !matches!(flat.op_type(), "Flatten" | "Reshape") {
        return None;
    }
    let pool = &g.node[*a.index.producer.get(flat.input.first()?)?];
    if pool.op_type() != "GlobalAveragePool" {
        return None;
    }
    let src = pool.input.first()?;
    let (l, li) = (ca.layouts.get(src)?, ca.layouts.get(input)?);
    let rank2 = a.shapes.static_shape(input).is_some_and(|s| s.len() == 2);
    let rank4 = a.shapes.static_shape(src).is_some_and(|s| s.len() == 4);
    (l.axis == 1 && li.axis == 1 && l.atoms == li.atoms && rank2 && rank4).then(|| src.clone())
}

fn kept_positions(
    ca: &ChannelAnalysis,
    keep: &[bool],
    tensor: &str,
) -> Option<(Vec<usize>, usize)> {
    let l = ca.layouts.get(tensor)?;
    let kept = (0..l.atoms.len())
        .filter(|&i| keep[l.atoms[i] as usize])
        .collect();
    Some((kept, l.atoms.len()))
}

fn conv_geom(node: &NodeProto, wdims: &[i64]) -> Option<ConvGeom> {
    if wdims.len() != 4 {
        return None;
    }
    let two = |name: &str, def: usize| -> [usize; 2] {
        match node.attr_ints(name) {
            Some(v) if v.len() >= 2 => [v[0].max(0) as usize, v[1].max(0) as usize],
            _ => [def, def],
        }
    };
    Some(ConvGeom {
        kernel: [wdims[2] as usize, wdims[3] as usize],
        strides: two("strides", 1),
        dilations: two("dilations", 1),
        pads: two("pads", 0),
        auto_pad: node.attr_s("auto_pad").unwrap_or_default(),
    })
}

/// Every Conv/Gemm/MatMul whose input lost channels, in graph (topological) order.
pub(super) fn find_consumers(a: &Analysis, ca: &ChannelAnalysis, keep: &[bool]) -> Vec<Consumer> {
    consumers_and_drifted(a, ca, keep, &HashSet::new())
}

/// The tensors whose values differ from the original's once `consumers` changed: their
/// outputs and everything computed from them.
fn drifted_tensors(a: &Analysis, consumers: &[Consumer]) -> HashSet<String> {
    let mut changed: HashSet<String> = consumers.iter().map(|c| c.output.clone()).collect();
    for n in &a.graph().node {
        if n.input.iter().any(|i| changed.contains(i)) {
            changed.extend(n.output.iter().cloned());
        }
    }
    changed
}

/// Input channels of a Conv/Gemm/MatMul from its weight's dims (for an input with no layout).
fn weight_inputs(op: &str, node: &NodeProto, d: &[i64]) -> Option<usize> {
    let v = match op {
        "Conv" => d.get(1)? * node.attr_i("group").unwrap_or(1).max(1),
        "Gemm" if node.attr_i("transB").unwrap_or(0) != 0 => *d.get(1)?,
        _ => *d.first()?,
    };
    usize::try_from(v).ok()
}

/// Consumers of pruned channels, and (when `drifted` names their input) the Conv/Gemm/MatMul
/// nodes that lost no input channel but read a drifted tensor, all in graph order.
fn consumers_and_drifted(
    a: &Analysis,
    ca: &ChannelAnalysis,
    keep: &[bool],
    drifted: &HashSet<String>,
) -> Vec<Consumer> {
    let g = a.graph();
    let mut weight_uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().skip(1) {
            *weight_uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (k, n) in g.node.iter().enumerate() {
        if !matches!(n.op_type(), "Conv" | "Gemm" | "MatMul") || n.input.len() < 2 {
            continue;
        }
        let weight = n.input[1].clone();
        let wdims = a
            .index
            .initializers
            .get(&weight)
            .map(|&i| g.initializer[i].dims.clone());
        let (kept_in, total_in) = match kept_positions(ca, keep, &n.input[0]) {
            Some((k, t)) if k.len() < t => (k, t),
            _ if drifted.contains(&n.input[0]) => {
                let Some(t) = wdims
                    .as_deref()
                    .and_then(|d| weight_inputs(n.op_type(), n, d))
                else {
                    continue;
                };
                ((0..t).collect(), t)
            }
            _ => continue,
        };
        let mut no_lsq = None;
        let kind = match (n.op_type(), &wdims) {
            ("Conv", Some(d)) => match conv_geom(n, d) {
                Some(geom) => OpKind::Conv(geom),
                None => {
                    no_lsq = Some("only 2-D convolutions are re-fitted".to_string());
                    OpKind::MatMul
                }
            },
            ("Gemm", Some(_)) => {
                if n.attr_i("transA").unwrap_or(0) != 0 {
                    no_lsq = Some("Gemm with transA".into());
                }
                OpKind::Gemm {
                    trans_b: n.attr_i("transB").unwrap_or(0) != 0,
                    alpha: n.attr_f("alpha").unwrap_or(1.0) as f64,
                    beta: n.attr_f("beta").unwrap_or(1.0) as f64,
                }
            }
            ("MatMul", Some(d)) if d.len() == 2 => OpKind::MatMul,
            _ => continue,
        };
        if weight_uses.get(weight.as_str()).copied().unwrap_or(0) > 1 {
            no_lsq = Some(format!("weight '{weight}' is shared with another node"));
        }
        let total_out = match (&kind, &wdims) {
            (OpKind::Gemm { trans_b: false, .. }, Some(d)) | (OpKind::MatMul, Some(d)) => {
                d.get(1).copied().unwrap_or(0) as usize
            }
            (_, Some(d)) => d.first().copied().unwrap_or(0) as usize,
            _ => 0,
        };
        let kept_out = kept_positions(ca, keep, &n.output[0])
            .map(|(k, _)| k)
            .unwrap_or_else(|| (0..total_out).collect());
        let pooled = match kind {
            OpKind::Conv(_) => None,
            _ => pooled_source(a, ca, &n.input[0]),
        };
        out.push(Consumer {
            pooled,
            residual: residual_add(a, &n.output[0]),
            node: k,
            name: n.display_name(),
            kind,
            input: n.input[0].clone(),
            output: n.output[0].clone(),
            weight,
            kept_in,
            total_in,
            kept_out,
            no_lsq,
        });
    }
    out
}

/// The normal equations of one group of one consumer.
pub(super) struct GroupSystem {
    pub(super) xtx: Mat<f64>,
    pub(super) xty: Mat<f64>,
    pub(super) yty: f64,
}

impl GroupSystem {
    fn zeros(d: usize, m: usize) -> Self {
        GroupSystem {
            xtx: Mat::zeros(d, d),
            xty: Mat::zeros(d, m),
            yty: 0.0,
        }
    }

    pub(super) fn sum(a: &GroupSystem, b: &GroupSystem) -> GroupSystem {
        GroupSystem {
            xtx: &a.xtx + &b.xtx,
            xty: &a.xty + &b.xty,
            yty: a.yty + b.yty,
        }
    }
}

/// The normal equations of one consumer, over all its groups, in two folds (by sample) so
/// the ridge strength can be chosen on data the fit did not see.
pub(super) struct LayerSystem {
    pub(super) groups: Vec<[GroupSystem; 2]>,
    pub(super) rows: u64,
}

impl LayerSystem {
    fn new(groups: usize, d: usize, m: usize) -> Self {
        LayerSystem {
            groups: (0..groups)
                .map(|_| [GroupSystem::zeros(d, m), GroupSystem::zeros(d, m)])
                .collect(),
            rows: 0,
        }
    }
}

/// Ridge strengths tried (relative to the mean diagonal of XᵀX).
const RIDGE_GRID: [f64; 8] = [1e-7, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 3.0, 10.0];

/// Chooses λ by two-fold cross-validation over all groups of a layer (fit on one fold,
/// residual on the other, both ways) and returns it with the cross-validated residual; the
/// pruned weights themselves (no fit) compete as λ = ∞ and win as `None`.
pub(super) fn choose_ridge(
    sys: &LayerSystem,
    w0: &[Mat<f64>],
    intercept: bool,
    grid: &[f64],
) -> (Option<f64>, f64) {
    let keep: f64 = sys
        .groups
        .iter()
        .zip(w0)
        .map(|(f, w)| residual(&f[0], w.as_ref()) + residual(&f[1], w.as_ref()))
        .sum();
    let mut best = (None, keep);
    for &l in grid {
        let mut cv = 0.0;
        for (f, w) in sys.groups.iter().zip(w0) {
            for k in 0..2 {
                let fit = ridge_solve(
                    f[k].xtx.as_ref(),
                    f[k].xty.as_ref(),
                    Some(w.as_ref()),
                    l,
                    intercept,
                );
                cv += fit.map_or(f64::INFINITY, |x| residual(&f[1 - k], x.as_ref()));
            }
        }
        if cv < best.1 {
            best = (Some(l), cv);
        }
    }
    best
}

/// One consumer's layout in the pruned model: groups, unknowns per group, outputs per group.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub(super) groups: usize,
    cin_g: usize,
    cout_g: usize,
    /// Unknowns per output (inputs per group × kernel + the bias column when `intercept`).
    d: usize,
    pub(super) intercept: bool,
}

pub(super) fn layer_shape(c: &Consumer, pruned_node: &NodeProto) -> Shape {
    let cin = c.kept_in.len();
    let cout = c.kept_out.len();
    match &c.kind {
        OpKind::Conv(geom) => {
            let groups = pruned_node.attr_i("group").unwrap_or(1).max(1) as usize;
            let cin_g = cin / groups;
            Shape {
                groups,
                cin_g,
                cout_g: cout / groups,
                d: cin_g * geom.kernel[0] * geom.kernel[1] + 1,
                intercept: true,
            }
        }
        OpKind::Gemm { .. } => Shape {
            groups: 1,
            cin_g: cin,
            cout_g: cout,
            d: cin + 1,
            intercept: true,
        },
        OpKind::MatMul => Shape {
            groups: 1,
            cin_g: cin,
            cout_g: cout,
            d: cin,
            intercept: false,
        },
    }
}

fn f32s(t: &HostTensor, what: &str) -> Result<Vec<f32>> {
    match &t.data {
        crate::runtime::HostData::F32(v) => Ok(v.clone()),
        _ => Err(PareError::Runtime(format!("{what}: not a float32 tensor"))),
    }
}

/// Rows (X block `P×d` per group, Y block `P×m` per group) of one sample.
type Rows = Vec<(Vec<f64>, Vec<f64>)>;

/// The resolved top/left pads of a conv for an input of `ih×iw` producing `oh×ow`.
fn resolved_pads(geom: &ConvGeom, ih: usize, iw: usize, oh: usize, ow: usize) -> [usize; 2] {
    let total = |i: usize, o: usize, k: usize, s: usize, d: usize| -> usize {
        ((o.saturating_sub(1)) * s + (k - 1) * d + 1).saturating_sub(i)
    };
    let pad = |t: usize| -> usize {
        match geom.auto_pad.as_str() {
            "SAME_UPPER" => t / 2,
            "SAME_LOWER" => t.div_ceil(2),
            _ => 0,
        }
    };
    match geom.auto_pad.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => [
            pad(total(
                ih,
                oh,
                geom.kernel[0],
                geom.strides[0],
                geom.dilations[0],
            )),
            pad(total(
                iw,
                ow,
                geom.kernel[1],
                geom.strides[1],
                geom.dilations[1],
            )),
        ],
        "VALID" => [0, 0],
        _ => geom.pads,
    }
}

/// The width axis of a 4-D float input that looks like a photo: 3 for `[N, C, H, W]`, 2
/// for `[N, H, W, C]` (1, 3 or 4 channels, both spatial sides over 4); `None` for anything
/// else, which is never mirrored.
fn width_axis(t: &HostTensor) -> Option<usize> {
    let (&[_, a, b, c], crate::runtime::HostData::F32(_)) = (&t.shape[..], &t.data) else {
        return None;
    };
    let few = |n: usize| matches!(n, 1 | 3 | 4);
    match (few(a), few(c)) {
        (true, _) if b > 4 && c > 4 => Some(3),
        (false, true) if a > 4 && b > 4 => Some(2),
        _ => None,
    }
}

/// `t` mirrored along its width axis.
fn mirrored(t: &HostTensor, axis: usize) -> Option<HostTensor> {
    let crate::runtime::HostData::F32(v) = &t.data else {
        return None;
    };
    let w = t.shape[axis];
    let stride: usize = t.shape[axis + 1..].iter().product();
    let block = w * stride;
    let mut out = vec![0.0f32; v.len()];
    for (dst, src) in out.chunks_mut(block).zip(v.chunks(block)) {
        for x in 0..w {
            let (d, s) = (x * stride, (w - 1 - x) * stride);
            dst[d..d + stride].copy_from_slice(&src[s..s + stride]);
        }
    }
    Some(HostTensor {
        shape: t.shape.clone(),
        data: crate::runtime::HostData::F32(out),
    })
}

/// The inputs mirrored left-right when every one is image-like (see [`width_axis`]; an
/// NHWC photo is mirrored along W, not along its channels): a mirrored photo is as natural
/// as the photo, so it doubles the fitting data for free.
fn hflip(inputs: &[HostTensor]) -> Option<Vec<HostTensor>> {
    inputs.iter().map(|t| mirrored(t, width_axis(t)?)).collect()
}

/// The versions of one calibration sample a fit sees: the sample, and with `flip` its
/// mirror when every input is image-like. (A zoomed-in view as a third version was tried:
/// on MobileNetV2 it doubled recovery time for +0.1 dB.)
pub(super) fn variants(inputs: &[HostTensor], o: &RecoverOptions) -> Vec<Vec<HostTensor>> {
    let mut out = vec![inputs.to_vec()];
    if o.flip {
        out.extend(hflip(inputs));
    }
    out
}

/// `k` of `0..n` without repetition (all of them when `n <= k`), in increasing order.
fn sample_positions(n: usize, k: usize, rng: &mut Rng) -> impl Iterator<Item = usize> {
    let mut all: Vec<usize> = (0..n).collect();
    if n > k {
        for i in 0..k {
            let j = i + rng.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
    }
    all.into_iter()
}

/// im2col rows of a conv on sampled output positions: X from the pruned input, Y from the
/// original output at the kept output channels.
fn conv_rows(
    c: &Consumer,
    geom: &ConvGeom,
    s: &Shape,
    x: &HostTensor,
    y: &HostTensor,
    positions: usize,
    rng: &mut Rng,
) -> Result<Rows> {
    let (xs, ys) = (f32s(x, &c.input)?, f32s(y, &c.output)?);
    let bad = || {
        PareError::Runtime(format!(
            "recover '{}': unexpected activation shapes",
            c.name
        ))
    };
    let [n, cin, ih, iw] = x.shape[..] else {
        return Err(bad());
    };
    let [n2, cout_all, oh, ow] = y.shape[..] else {
        return Err(bad());
    };
    if n != n2 || cin != s.groups * s.cin_g || c.kept_out.iter().any(|&o| o >= cout_all) {
        return Err(bad());
    }
    let pads = resolved_pads(geom, ih, iw, oh, ow);
    let [kh, kw] = geom.kernel;
    let mut pos: Vec<(usize, usize)> = Vec::new();
    for b in 0..n {
        pos.extend(sample_positions(oh * ow, positions, rng).map(|q| (b, q)));
    }
    let p = pos.len();
    let mut out = Vec::with_capacity(s.groups);
    for g in 0..s.groups {
        let mut xb = vec![0.0f64; p * s.d];
        let mut yb = vec![0.0f64; p * s.cout_g];
        for (r, &(b, q)) in pos.iter().enumerate() {
            let (oy, ox) = (q / ow, q % ow);
            let row = &mut xb[r * s.d..(r + 1) * s.d];
            for ci in 0..s.cin_g {
                let ch = g * s.cin_g + ci;
                let base = (b * cin + ch) * ih * iw;
                for ky in 0..kh {
                    let iy =
                        (oy * geom.strides[0] + ky * geom.dilations[0]) as isize - pads[0] as isize;
                    for kx in 0..kw {
                        let ix = (ox * geom.strides[1] + kx * geom.dilations[1]) as isize
                            - pads[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                            row[(ci * kh + ky) * kw + kx] =
                                xs[base + iy as usize * iw + ix as usize] as f64;
                        }
                    }
                }
            }
            row[s.d - 1] = 1.0;
            for o in 0..s.cout_g {
                let orig = c.kept_out[g * s.cout_g + o];
                yb[r * s.cout_g + o] = ys[(b * cout_all + orig) * oh * ow + q] as f64;
            }
        }
        out.push((xb, yb));
    }
    Ok(out)
}

/// Rows of a Gemm/MatMul: the last axis is features, every leading index a row.
fn dense_rows(
    c: &Consumer,
    s: &Shape,
    x: &HostTensor,
    y: &HostTensor,
    positions: usize,
    rng: &mut Rng,
) -> Result<Rows> {
    let (xs, ys) = (f32s(x, &c.input)?, f32s(y, &c.output)?);
    let k = *x.shape.last().unwrap_or(&0);
    let m_all = *y.shape.last().unwrap_or(&0);
    if k != s.cin_g || k == 0 || m_all == 0 || xs.len() / k != ys.len() / m_all {
        return Err(PareError::Runtime(format!(
            "recover '{}': unexpected activation shapes",
            c.name
        )));
    }
    let n = xs.len() / k;
    let rows: Vec<usize> = sample_positions(n, positions, rng).collect();
    let mut xb = vec![0.0f64; rows.len() * s.d];
    let mut yb = vec![0.0f64; rows.len() * s.cout_g];
    for (r, &i) in rows.iter().enumerate() {
        for j in 0..k {
            xb[r * s.d + j] = xs[i * k + j] as f64;
        }
        if s.intercept {
            xb[r * s.d + s.d - 1] = 1.0;
        }
        for (o, &orig) in c.kept_out.iter().enumerate() {
            yb[r * s.cout_g + o] = ys[i * m_all + orig] as f64;
        }
    }
    Ok(vec![(xb, yb)])
}

/// The original consumer as one `(total_in + 1) × kept_out` matrix (rows: input channels,
/// then the bias; alpha and beta applied): the linear map a pooled fit's targets and the
/// search's proxy fits come from. 1x1 convs (group 1), Gemm and MatMul only.
pub(super) fn original_matrix(original: &ModelProto, c: &Consumer) -> Result<Mat<f64>> {
    let (dims, w) = values_of(original, &c.weight)?;
    let node = original
        .graph
        .as_ref()
        .map(|g| &g.node[c.node])
        .ok_or_else(|| PareError::InvalidModel("no graph".into()))?;
    let k = c.total_in;
    let (alpha, beta) = match c.kind {
        OpKind::Gemm { alpha, beta, .. } => (alpha, beta),
        _ => (1.0, 1.0),
    };
    let n_all = match c.kind {
        OpKind::Gemm { trans_b: true, .. } | OpKind::Conv(_) => dims.first(),
        _ => dims.get(1),
    }
    .copied()
    .unwrap_or(0)
    .max(0) as usize;
    if w.len() != n_all * k || c.kept_out.iter().any(|&o| o >= n_all) {
        return Err(PareError::Tensor {
            tensor: c.weight.clone(),
            message: format!("'{}': not a {k}-input linear map", c.name),
        });
    }
    let bias: Vec<f32> = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) if !matches!(c.kind, OpKind::MatMul) => values_of(original, b)?.1,
        _ => Vec::new(),
    };
    Ok(Mat::from_fn(k + 1, c.kept_out.len(), |i, j| {
        let o = c.kept_out[j];
        if i == k {
            let b = match bias.len() {
                1 => bias[0],
                _ => bias.get(o).copied().unwrap_or(0.0),
            };
            return b as f64 * beta;
        }
        let v = match c.kind {
            OpKind::Gemm { trans_b: true, .. } | OpKind::Conv(_) => w[o * k + i],
            _ => w[i * n_all + o],
        };
        v as f64 * alpha
    }))
}

/// Rows of a Gemm/MatMul on a pooled vector, one per spatial position before the pool: X
/// from the pruned model's pre-pool activation, Y the original map applied to the original's.
fn pooled_rows(
    s: &Shape,
    x: &HostTensor,
    xo: &HostTensor,
    wfull: &Mat<f64>,
    positions: usize,
    rng: &mut Rng,
) -> Result<Rows> {
    let (xs, xos) = (f32s(x, "pre-pool")?, f32s(xo, "pre-pool")?);
    let bad = || PareError::Runtime("recover: unexpected pre-pool activation shapes".into());
    let ([n, k, h, w], [n2, c_all, h2, w2]) = (&x.shape[..], &xo.shape[..]) else {
        return Err(bad());
    };
    let (n, k, c_all, hw) = (*n, *k, *c_all, h * w);
    if n != *n2 || hw != h2 * w2 || k != s.cin_g || c_all + 1 != wfull.nrows() {
        return Err(bad());
    }
    let mut pos: Vec<(usize, usize)> = Vec::new();
    for b in 0..n {
        pos.extend(sample_positions(hw, positions, rng).map(|q| (b, q)));
    }
    let p = pos.len();
    let mut xb = vec![0.0f64; p * s.d];
    let mut xo_rows = Mat::<f64>::zeros(p, c_all + 1);
    for (r, &(b, q)) in pos.iter().enumerate() {
        for j in 0..k {
            xb[r * s.d + j] = xs[(b * k + j) * hw + q] as f64;
        }
        if s.intercept {
            xb[r * s.d + s.d - 1] = 1.0;
        }
        for j in 0..c_all {
            xo_rows[(r, j)] = xos[(b * c_all + j) * hw + q] as f64;
        }
        xo_rows[(r, c_all)] = 1.0;
    }
    let y = &xo_rows * wfull;
    let mut yb = vec![0.0f64; p * s.cout_g];
    for r in 0..p {
        for o in 0..s.cout_g {
            yb[r * s.cout_g + o] = y[(r, o)];
        }
    }
    Ok(vec![(xb, yb)])
}

/// Adds one sample's rows to the system (XᵀX and XᵀY with faer's matmul).
fn accumulate(sys: &mut LayerSystem, rows: &Rows, d: usize, m: usize, fold: usize) {
    for (gs, (xb, yb)) in sys.groups.iter_mut().zip(rows) {
        let gs = &mut gs[fold % 2];
        let p = xb.len() / d.max(1);
        let x = MatRef::from_row_major_slice(xb, p, d);
        let y = MatRef::from_row_major_slice(yb, p, m);
        faer::linalg::matmul::matmul(&mut gs.xtx, Accum::Add, x.transpose(), x, 1.0, Par::Seq);
        faer::linalg::matmul::matmul(&mut gs.xty, Accum::Add, x.transpose(), y, 1.0, Par::Seq);
        gs.yty += yb.iter().map(|v| v * v).sum::<f64>();
    }
    sys.rows += rows
        .first()
        .map_or(0, |(xb, _)| (xb.len() / d.max(1)) as u64);
}

/// Ridge solution `(XᵀX + λI)⁻¹ (XᵀY + λW₀)`: least squares shrunk toward `w0` (the pruned
/// layer's own weights, the best guess where the calibration data says little) rather than
/// toward zero. λ is `ridge` times the mean diagonal of XᵀX; the bias row is not shrunk. A
/// failed Cholesky retries with a stronger ridge.
pub fn ridge_solve(
    xtx: MatRef<'_, f64>,
    xty: MatRef<'_, f64>,
    w0: Option<MatRef<'_, f64>>,
    ridge: f64,
    intercept: bool,
) -> Option<Mat<f64>> {
    let d = xtx.nrows();
    let reg = if intercept { d.saturating_sub(1) } else { d };
    let mean_diag = (0..reg).map(|i| xtx[(i, i)]).sum::<f64>() / reg.max(1) as f64;
    let mut lambda = (ridge * mean_diag).max(1e-12);
    for _ in 0..6 {
        let mut a = xtx.to_owned();
        let mut rhs = xty.to_owned();
        for i in 0..reg {
            a[(i, i)] += lambda;
            if let Some(w0) = w0 {
                for j in 0..rhs.ncols() {
                    rhs[(i, j)] += lambda * w0[(i, j)];
                }
            }
        }
        if intercept && reg < d {
            a[(d - 1, d - 1)] += 1e-12 * (1.0 + a[(d - 1, d - 1)]);
        }
        if let Ok(llt) = a.as_ref().llt(Side::Lower) {
            let w: Mat<f64> = llt.solve(&rhs);
            let finite = (0..w.ncols()).all(|j| (0..w.nrows()).all(|i| w[(i, j)].is_finite()));
            if finite {
                return Some(w);
            }
        }
        lambda *= 100.0;
    }
    None
}

/// Σ‖y − Xw‖² from the normal equations.
pub(super) fn residual(gs: &GroupSystem, w: MatRef<'_, f64>) -> f64 {
    let mut xtxw = Mat::<f64>::zeros(w.nrows(), w.ncols());
    faer::linalg::matmul::matmul(&mut xtxw, Accum::Replace, gs.xtx.as_ref(), w, 1.0, Par::Seq);
    let mut quad = 0.0;
    let mut lin = 0.0;
    for j in 0..w.ncols() {
        for i in 0..w.nrows() {
            quad += w[(i, j)] * xtxw[(i, j)];
            lin += w[(i, j)] * gs.xty[(i, j)];
        }
    }
    (gs.yty - 2.0 * lin + quad).max(0.0)
}

fn db(signal: f64, noise: f64) -> Option<f64> {
    crate::quant::diag::db(signal, noise)
}

fn initializer<'m>(m: &'m ModelProto, name: &str) -> Option<&'m TensorProto> {
    m.graph
        .as_ref()?
        .initializer
        .iter()
        .find(|t| t.name() == name)
}

fn values_of(m: &ModelProto, name: &str) -> Result<(Vec<i64>, Vec<f32>)> {
    let t = initializer(m, name).ok_or_else(|| PareError::Tensor {
        tensor: name.to_string(),
        message: "not an initializer of the pruned model".into(),
    })?;
    Ok((t.dims.clone(), to_f32(t)?))
}

/// Replaces (or adds) a float32 initializer.
fn set_initializer(m: &mut ModelProto, name: &str, dims: &[i64], values: &[f32]) -> Result<()> {
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| PareError::InvalidModel("no graph".into()))?;
    let t = f32_tensor(name, dims, values);
    match g.initializer.iter_mut().find(|t| t.name() == name) {
        Some(old) => *old = t,
        None => g.initializer.push(t),
    }
    Ok(())
}

/// The bias of the consumer in the pruned model (name, values, divisor from Gemm's beta),
/// created as zeros when the node has none.
fn ensure_bias(m: &mut ModelProto, c: &Consumer) -> Result<(String, Vec<f32>, f64)> {
    let n_out = c.kept_out.len();
    let no_graph = || PareError::InvalidModel("no graph".into());
    let node = &m.graph.as_ref().ok_or_else(no_graph)?.node[c.node];
    let mut beta = match c.kind {
        OpKind::Gemm { beta, .. } => beta,
        _ => 1.0,
    };
    let existing = node.input.get(2).filter(|b| !b.is_empty()).cloned();
    if beta == 0.0 {
        // beta 0 ignores C: a fitted bias needs it counted.
        let node = &mut m.graph.as_mut().ok_or_else(no_graph)?.node[c.node];
        node.attribute.retain(|a| a.name() != "beta");
        beta = 1.0;
        if let Some(b) = existing {
            return Ok((b, vec![0.0; n_out], beta));
        }
    } else if let Some(b) = existing {
        let (dims, v) = values_of(m, &b)?;
        if v.len() != n_out || dims.iter().filter(|&&d| d != 1).count() > 1 {
            return Err(PareError::Tensor {
                tensor: b,
                message: format!("bias of '{}' is not one value per output", c.name),
            });
        }
        return Ok((b, v, beta));
    }
    let name = format!("{}__pare_bias", c.weight);
    let node = &mut m.graph.as_mut().ok_or_else(no_graph)?.node[c.node];
    node.input.truncate(2);
    node.input.push(name.clone());
    Ok((name, vec![0.0; n_out], beta))
}

/// Writes a bias vector back with the dims it had (or `[n]` when new).
fn write_bias(m: &mut ModelProto, name: &str, values: &[f32]) -> Result<()> {
    let dims = initializer(m, name)
        .map(|t| t.dims.clone())
        .unwrap_or_else(|| vec![values.len() as i64]);
    set_initializer(m, name, &dims, values)
}

/// The consumer's current weights in the pruned model as one `d×m` matrix per group
/// (rows: input channel × kernel position, then the bias).
pub(super) fn current_weights(m: &ModelProto, c: &Consumer, s: &Shape) -> Result<Vec<Mat<f64>>> {
    let (_, w) = values_of(m, &c.weight)?;
    let bias: Vec<f32> = match m.graph.as_ref().and_then(|g| g.node[c.node].input.get(2)) {
        Some(b) if !b.is_empty() => values_of(m, b)?.1,
        _ => vec![0.0; c.kept_out.len()],
    };
    let ksz = (s.d - usize::from(s.intercept)) / s.cin_g.max(1);
    let mut out = Vec::with_capacity(s.groups);
    for g in 0..s.groups {
        let mat = Mat::from_fn(s.d, s.cout_g, |i, o| {
            let og = g * s.cout_g + o;
            if s.intercept && i == s.d - 1 {
                let beta = match c.kind {
                    OpKind::Gemm { beta, .. } => beta,
                    _ => 1.0,
                };
                return bias.get(og).copied().unwrap_or(0.0) as f64 * beta;
            }
            let v = match c.kind {
                OpKind::Conv(_) => w.get(og * s.cin_g * ksz + i),
                OpKind::Gemm { trans_b: true, .. } => w.get(og * s.cin_g + i),
                _ => w.get(i * c.kept_out.len() + og),
            };
            let alpha = match c.kind {
                OpKind::Gemm { alpha, .. } => alpha,
                _ => 1.0,
            };
            v.copied().unwrap_or(0.0) as f64 * alpha
        });
        out.push(mat);
    }
    Ok(out)
}

/// Writes fitted `d×m` matrices (one per group) into the consumer's weight and bias.
pub(super) fn write_weights(
    m: &mut ModelProto,
    c: &Consumer,
    s: &Shape,
    ws: &[Mat<f64>],
) -> Result<()> {
    let (dims, mut w) = values_of(m, &c.weight)?;
    let ksz = (s.d - usize::from(s.intercept)) / s.cin_g.max(1);
    let n_out = c.kept_out.len();
    let alpha = match c.kind {
        OpKind::Gemm { alpha, .. } if alpha != 0.0 => alpha,
        _ => 1.0,
    };
    let mut bias = vec![0.0f64; n_out];
    for (g, mat) in ws.iter().enumerate() {
        for o in 0..s.cout_g {
            let og = g * s.cout_g + o;
            for i in 0..s.d - usize::from(s.intercept) {
                let idx = match c.kind {
                    OpKind::Conv(_) => og * s.cin_g * ksz + i,
                    OpKind::Gemm { trans_b: true, .. } => og * s.cin_g + i,
                    _ => i * n_out + og,
                };
                if let Some(x) = w.get_mut(idx) {
                    *x = (mat[(i, o)] / alpha) as f32;
                }
            }
            if s.intercept {
                bias[og] = mat[(s.d - 1, o)];
            }
        }
    }
    set_initializer(m, &c.weight, &dims, &w)?;
    if s.intercept {
        let (name, _, beta) = ensure_bias(m, c)?;
        let b: Vec<f32> = bias.iter().map(|v| (v / beta) as f32).collect();
        write_bias(m, &name, &b)?;
    }
    Ok(())
}

/// What a fit needs besides the consumer: data, engine, knobs.
pub struct FitContext<'a> {
    pub set: &'a SampleSet,
    pub fit: &'a [usize],
    pub opts: &'a RecoverOptions,
    pub progress: &'a dyn Progress,
}

/// Accumulates one consumer's normal equations over the fit samples: inputs from the pruned
/// model as it stands, targets from the original.
fn layer_system(
    original: &ModelProto,
    pruned: &ModelProto,
    c: &Consumer,
    s: &Shape,
    cx: &FitContext,
) -> Result<(LayerSystem, FitTarget)> {
    let o = cx.opts;
    // A pooled consumer is fitted on the positions before the pool, with targets computed
    // from the original's pre-pool activation.
    let (x_name, mut y_name) = match &c.pooled {
        Some(t) => (t, t),
        None => (&c.input, &c.output),
    };
    let wfull = match &c.pooled {
        Some(_) => Some(original_matrix(original, c)?),
        None => None,
    };
    let skip = match (&c.pooled, o.residual_targets) {
        (None, true) => c.residual.as_ref(),
        _ => None,
    };
    let mut x_names = vec![x_name.clone()];
    if let Some(r) = skip {
        x_names.push(r.skip.clone());
        y_name = &r.sum;
    }
    let cur = RunnerCache::new(
        prefix(pruned, &x_names, PrefixInputs::All)?,
        "recovery (pruned)",
    )
    .on(o.engine, o.threads);
    let orig = RunnerCache::new(
        prefix(original, std::slice::from_ref(y_name), PrefixInputs::All)?,
        "recovery (original)",
    )
    .on(o.engine, o.threads);
    let sys = Mutex::new(LayerSystem::new(s.groups, s.d, s.cout_g));
    let poisoned = || PareError::Runtime("recovery: a worker thread failed".into());
    for_each_sample(
        &cur,
        cx.set,
        cx.fit,
        o.threads,
        cx.progress,
        0,
        |sample, r| {
            let variants = variants(&sample.tensors, o);
            let orig = orig.get(cx.set, sample.index)?;
            let fold = cx.fit.iter().position(|&i| i == sample.index).unwrap_or(0);
            for (v, inputs) in variants.iter().enumerate() {
                let xs = r.run(inputs)?;
                let ys = orig.run(inputs)?;
                let (Some(x), Some(y)) = (xs.first(), ys.first()) else {
                    return Err(PareError::Runtime(format!(
                        "recover '{}': no activation",
                        c.name
                    )));
                };
                let adjusted = match xs.get(1) {
                    Some(sk) => Some(minus_skip(c, y, sk)?),
                    None => None,
                };
                let y = adjusted.as_ref().unwrap_or(y);
                let mut rng = Rng::new(
                    o.seed ^ ((sample.index as u64) << 20) ^ ((v as u64) << 40) ^ c.node as u64,
                );
                let rows = match (&c.kind, &wfull) {
                    (_, Some(wf)) => pooled_rows(s, x, y, wf, o.positions, &mut rng)?,
                    (OpKind::Conv(geom), None) => {
                        conv_rows(c, geom, s, x, y, o.positions, &mut rng)?
                    }
                    _ => dense_rows(c, s, x, y, o.positions, &mut rng)?,
                };
                let mut g = sys.lock().map_err(|_| poisoned())?;
                accumulate(&mut g, &rows, s.d, s.cout_g, fold);
            }
            Ok(())
        },
    )?;
    let target = match skip {
        Some(_) => FitTarget::ResidualSum,
        None => FitTarget::Output,
    };
    Ok((sys.into_inner().map_err(|_| poisoned())?, target))
}

/// The residual Add a consumer's output feeds: its output (the stream) and its other input.
#[derive(Clone, Debug)]
pub(super) struct ResidualAdd {
    sum: String,
    skip: String,
}

/// The Add that is the only reader of `output`, when the other addend is computed by a node
/// and both addends have the same static shape (a residual block's projection): fitting the
/// consumer toward the original sum minus the pruned skip lets the block absorb drift the
/// stream carries. `None` for anything else: a broadcast (a bias or a per-pixel map added),
/// a constant or graph input as the other addend, a graph output, several readers.
fn residual_add(a: &Analysis, output: &str) -> Option<ResidualAdd> {
    let g = a.graph();
    if g.output.iter().any(|o| o.name() == output) {
        return None;
    }
    let mut readers = g
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == output));
    let add = readers.next()?;
    if readers.next().is_some() || add.op_type() != "Add" || add.input.len() != 2 {
        return None;
    }
    let skip = add.input.iter().find(|i| *i != output)?.clone();
    let computed = g.node.iter().any(|n| n.output.contains(&skip));
    let shape = a.shapes.static_shape(output)?;
    let same = a.shapes.static_shape(&skip).is_some_and(|s| s == shape);
    let sum = add.output.first()?.clone();
    (computed && same).then_some(ResidualAdd { sum, skip })
}

/// The original sum with the pruned skip subtracted at the kept channels: what `c` must
/// output for the pruned stream to match the original's. [`residual_add`] checked the shapes
/// statically; a run that still disagrees is an error (the consumer stays unchanged).
fn minus_skip(c: &Consumer, sum: &HostTensor, skip: &HostTensor) -> Result<HostTensor> {
    let (mut ys, sk) = (f32s(sum, &c.output)?, f32s(skip, &c.output)?);
    let bad = || {
        PareError::Runtime(format!(
            "recover '{}': residual addend shapes do not match",
            c.name
        ))
    };
    let (Some(&n), Some(&ch)) = (sum.shape.first(), sum.shape.get(1)) else {
        return Err(bad());
    };
    let inner: usize = sum.shape[2..].iter().product();
    let kept = c.kept_out.len();
    if skip.shape.len() != sum.shape.len()
        || skip.shape[2..] != sum.shape[2..]
        || skip.shape[..2] != [n, kept]
        || c.kept_out.iter().any(|&o| o >= ch)
    {
        return Err(bad());
    }
    for b in 0..n {
        for (j, &o) in c.kept_out.iter().enumerate() {
            let dst = (b * ch + o) * inner;
            let src = (b * kept + j) * inner;
            for (y, s) in ys[dst..dst + inner].iter_mut().zip(&sk[src..src + inner]) {
                *y -= s;
            }
        }
    }
    Ok(HostTensor {
        shape: sum.shape.clone(),
        data: crate::runtime::HostData::F32(ys),
    })
}

/// Re-fits one consumer by ridge least squares; `None` when the data cannot determine it
/// (fewer rows than unknowns, or no solution), so the caller folds the bias instead.
fn fit_lsq(
    original: &ModelProto,
    pruned: &mut ModelProto,
    c: &Consumer,
    cx: &FitContext,
) -> Result<Option<LayerRecovery>> {
    let node = pruned
        .graph
        .as_ref()
        .map(|g| g.node[c.node].clone())
        .ok_or_else(|| PareError::InvalidModel("no graph".into()))?;
    let s = layer_shape(c, &node);
    if s.groups * s.cin_g != c.kept_in.len() || s.groups * s.cout_g != c.kept_out.len() {
        return Ok(None);
    }
    let (sys, target) = layer_system(original, pruned, c, &s, cx)?;
    if sys.rows < s.d as u64 {
        return Ok(None);
    }
    let w0 = current_weights(pruned, c, &s)?;
    let (ridge, cv) = choose_ridge(&sys, &w0, s.intercept, &RIDGE_GRID);
    let (mut signal, mut before, mut after) = (0.0, 0.0, 0.0);
    let mut ws = Vec::with_capacity(s.groups);
    for (f, w0) in sys.groups.iter().zip(&w0) {
        let gs = GroupSystem::sum(&f[0], &f[1]);
        signal += gs.yty;
        before += residual(&gs, w0.as_ref());
        let w = match ridge {
            Some(l) => ridge_solve(
                gs.xtx.as_ref(),
                gs.xty.as_ref(),
                Some(w0.as_ref()),
                l,
                s.intercept,
            ),
            None => Some(w0.clone()),
        };
        let Some(w) = w else {
            return Ok(None);
        };
        after += residual(&gs, w.as_ref());
        ws.push(w);
    }
    let mut rec = LayerRecovery {
        node: c.name.clone(),
        method: FitMethod::Lsq,
        inputs_kept: c.kept_in.len(),
        inputs_total: c.total_in,
        fit_sqnr_before_db: db(signal, before),
        fit_sqnr_after_db: db(signal, after),
        cv_sqnr_db: db(signal, cv),
        ridge,
        target: Some(target),
        note: None,
    };
    if ridge.is_none() {
        rec.method = FitMethod::Unchanged;
        rec.note = Some("on held-out calibration samples no fit beat the pruned weights".into());
        return Ok(Some(rec));
    }
    write_weights(pruned, c, &s, &ws)?;
    Ok(Some(rec))
}

/// Per-channel means of `tensors` (name, channel axis) of the original model over the fit
/// samples, in one pass.
fn channel_means(
    original: &ModelProto,
    tensors: &[(String, usize)],
    cx: &FitContext,
) -> Result<HashMap<String, Vec<f64>>> {
    channel_moments(original, tensors, cx, 1)
}

/// Per-channel mean of the `power`-th power (1: mean, 2: mean square) of `tensors`.
fn channel_moments(
    original: &ModelProto,
    tensors: &[(String, usize)],
    cx: &FitContext,
    power: i32,
) -> Result<HashMap<String, Vec<f64>>> {
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    let cache = RunnerCache::watching(original.clone(), names, "recovery (means)")
        .on(cx.opts.engine, cx.opts.threads);
    let sums: Mutex<Vec<(Vec<f64>, u64)>> = Mutex::new(vec![(Vec::new(), 0); tensors.len()]);
    let poisoned = || PareError::Runtime("recovery: a worker thread failed".into());
    for_each_sample(
        &cache,
        cx.set,
        cx.fit,
        cx.opts.threads,
        cx.progress,
        0,
        |s, r| {
            let outs = r.run(&s.tensors)?;
            let mut acc = sums.lock().map_err(|_| poisoned())?;
            for ((t, (sum, count)), (_, axis)) in outs.iter().zip(acc.iter_mut()).zip(tensors) {
                let Some(&ch) = t.shape.get(*axis) else {
                    continue;
                };
                let inner: usize = t.shape[axis + 1..].iter().product();
                if sum.is_empty() {
                    *sum = vec![0.0; ch];
                }
                for (i, v) in t.to_f64().into_iter().enumerate() {
                    if let Some(x) = sum.get_mut((i / inner.max(1)) % ch.max(1)) {
                        *x += v.powi(power);
                    }
                }
                *count += (t.len() / ch.max(1)) as u64;
            }
            Ok(())
        },
    )?;
    let sums = sums.into_inner().map_err(|_| poisoned())?;
    Ok(tensors
        .iter()
        .zip(sums)
        .map(|((n, _), (s, c))| (n.clone(), s.iter().map(|v| v / c.max(1) as f64).collect()))
        .collect())
}

/// Folds the removed input channels' mean contribution (mean activation × weight summed over
/// the kernel) into the consumer's bias, from the original weights.
pub(super) fn fold_bias(
    a: &Analysis,
    pruned: &mut ModelProto,
    c: &Consumer,
    means: &[f64],
    why: Option<String>,
) -> Result<LayerRecovery> {
    let mut rec = LayerRecovery {
        node: c.name.clone(),
        method: FitMethod::Bias,
        inputs_kept: c.kept_in.len(),
        inputs_total: c.total_in,
        fit_sqnr_before_db: None,
        fit_sqnr_after_db: None,
        cv_sqnr_db: None,
        ridge: None,
        target: None,
        note: why,
    };
    let Some((dims, w)) = member_values(a, &c.weight) else {
        rec.method = FitMethod::Unchanged;
        rec.note = Some(format!("weight '{}' is not a float initializer", c.weight));
        return Ok(rec);
    };
    let kept: HashSet<usize> = c.kept_in.iter().copied().collect();
    let removed: Vec<usize> = (0..c.total_in).filter(|i| !kept.contains(i)).collect();
    let d: Vec<usize> = dims.iter().map(|&x| x.max(0) as usize).collect();
    let delta: Vec<f64> = match c.kind {
        OpKind::Conv(_) if d.len() >= 3 => {
            let (cout, cin_g) = (d[0], d[1].max(1));
            let ksz: usize = d[2..].iter().product();
            let cout_g = cout / (c.total_in / cin_g).max(1);
            let mut delta = vec![0.0; cout];
            for &ch in &removed {
                let (g, cl) = (ch / cin_g, ch % cin_g);
                let mu = means.get(ch).copied().unwrap_or(0.0);
                for (o, x) in delta.iter_mut().enumerate().skip(g * cout_g).take(cout_g) {
                    let base = (o * cin_g + cl) * ksz;
                    *x += mu * w[base..base + ksz].iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            delta
        }
        OpKind::Gemm { trans_b, alpha, .. } if d.len() == 2 => {
            let n = if trans_b { d[0] } else { d[1] };
            (0..n)
                .map(|o| {
                    removed
                        .iter()
                        .map(|&ch| {
                            let wv = if trans_b {
                                w[o * d[1] + ch]
                            } else {
                                w[ch * d[1] + o]
                            };
                            means.get(ch).copied().unwrap_or(0.0) * wv as f64 * alpha
                        })
                        .sum()
                })
                .collect()
        }
        _ => {
            rec.method = FitMethod::Unchanged;
            rec.note = Some("no bias to fold into (MatMul, or not a 2-D weight)".into());
            return Ok(rec);
        }
    };
    let (name, mut bias, beta) = ensure_bias(pruned, c)?;
    for (j, &o) in c.kept_out.iter().enumerate() {
        if let (Some(b), Some(dv)) = (bias.get_mut(j), delta.get(o)) {
            *b += (dv / beta) as f32;
        }
    }
    write_bias(pruned, &name, &bias)?;
    Ok(rec)
}

/// A failed repair leaves the layer as pruned and says why (a cancel still stops).
pub(super) fn or_unchanged(c: &Consumer, r: Result<LayerRecovery>) -> Result<LayerRecovery> {
    match r {
        Err(PareError::Cancelled) => Err(PareError::Cancelled),
        Err(e) => Ok(LayerRecovery {
            node: c.name.clone(),
            method: FitMethod::Unchanged,
            inputs_kept: c.kept_in.len(),
            inputs_total: c.total_in,
            fit_sqnr_before_db: None,
            fit_sqnr_after_db: None,
            cv_sqnr_db: None,
            ridge: None,
            target: None,
            note: Some(e.to_string()),
        }),
        ok => ok,
    }
}

/// Whether least squares can fit `c`: supported op, system small enough, enough rows.
fn lsq_blocker(
    a: &Analysis,
    c: &Consumer,
    fit_samples: usize,
    opts: &RecoverOptions,
) -> Option<String> {
    if let Some(w) = &c.no_lsq {
        return Some(w.clone());
    }
    let d = match &c.kind {
        OpKind::Conv(g) => c.kept_in.len() * g.kernel[0] * g.kernel[1] + 1,
        _ => c.kept_in.len() + 1,
    };
    let groups = a
        .graph()
        .node
        .get(c.node)
        .and_then(|n| n.attr_i("group"))
        .unwrap_or(1)
        .max(1) as usize;
    let per_group = if matches!(c.kind, OpKind::Conv(_)) && groups > 1 {
        d / groups + 1
    } else {
        d
    };
    if per_group > opts.max_unknowns {
        return Some(format!(
            "{per_group} unknowns per output (limit {})",
            opts.max_unknowns
        ));
    }
    if !matches!(c.kind, OpKind::Conv(_)) {
        let pooled_rows = c.pooled.as_ref().and_then(|t| a.shapes.static_shape(t));
        let rows: usize = pooled_rows
            .map(|s| (s[0] * s[2] * s[3]).max(1) as usize)
            .or_else(|| {
                a.shapes.static_shape(&c.input).map(|s| {
                    s[..s.len().saturating_sub(1)]
                        .iter()
                        .product::<i64>()
                        .max(1) as usize
                })
            })
            .unwrap_or(1);
        if rows * fit_samples < per_group {
            return Some(format!(
                "{} calibration rows for {per_group} unknowns",
                rows * fit_samples
            ));
        }
    }
    None
}

/// Repairs every consumer of a pruned group of `pruned` (the rewrite of `a` by `plan`), in
/// topological order. `fit` are the sample indices used; the held-out ones must not be.
pub fn recover(
    a: &Analysis,
    ca: &ChannelAnalysis,
    plan: &super::PrunePlan,
    pruned: &mut ModelProto,
    cx: &FitContext,
) -> Result<Recovery> {
    let start = Instant::now();
    let mode = cx.opts.mode;
    let mut rep = Recovery {
        mode,
        samples: cx.fit.len(),
        fit_samples: cx.fit.to_vec(),
        eval_samples: Vec::new(),
        layers: Vec::new(),
        seconds: 0.0,
        notes: Vec::new(),
    };
    if mode == RecoverMode::None {
        return Ok(rep);
    }
    let keep = super::rewrite::kept_atoms(ca, plan);
    let mut consumers = find_consumers(a, ca, &keep);
    if mode == RecoverMode::Lsq && cx.opts.refit_downstream {
        consumers = consumers_and_drifted(a, ca, &keep, &drifted_tensors(a, &consumers));
    }
    let blockers: Vec<Option<String>> = consumers
        .iter()
        .map(|c| match mode {
            RecoverMode::Lsq => lsq_blocker(a, c, cx.fit.len(), cx.opts),
            _ => Some(String::new()),
        })
        .collect();
    let fold_inputs: Vec<(String, usize)> = consumers
        .iter()
        .zip(&blockers)
        .filter(|(c, b)| b.is_some() && c.kept_in.len() < c.total_in)
        .filter_map(|(c, _)| Some((c.input.clone(), ca.layouts.get(&c.input)?.axis)))
        .collect();
    let original = &a.model.proto;
    let means = if fold_inputs.is_empty() {
        HashMap::new()
    } else {
        cx.progress
            .phase("recovery: channel means", Some(cx.fit.len() as u64));
        channel_means(original, &fold_inputs, cx)?
    };
    let mut done: Vec<Option<LayerRecovery>> = vec![None; consumers.len()];
    for (k, (c, b)) in consumers.iter().zip(&blockers).enumerate() {
        if let Some(why) = b {
            let m = means.get(&c.input).map(Vec::as_slice).unwrap_or(&[]);
            let why = (!why.is_empty()).then(|| why.clone());
            done[k] = Some(or_unchanged(c, fold_bias(a, pruned, c, m, why))?);
        }
    }
    let todo = consumers.len() - fold_inputs.len();
    let mut n = 0;
    for (k, c) in consumers.iter().enumerate() {
        if done[k].is_some() {
            continue;
        }
        n += 1;
        cx.progress.phase(
            &format!("recovery: least squares {n}/{todo} ({})", c.name),
            Some(cx.fit.len() as u64),
        );
        cx.progress.check_cancel()?;
        done[k] = Some(match fit_lsq(original, pruned, c, cx) {
            Ok(Some(r)) => r,
            Err(PareError::Cancelled) => return Err(PareError::Cancelled),
            Err(e) => or_unchanged(c, Err(e))?,
            Ok(None) => {
                let axis = ca.layouts.get(&c.input).map_or(1, |l| l.axis);
                let m = channel_means(original, &[(c.input.clone(), axis)], cx)?;
                let m = m.get(&c.input).map(Vec::as_slice).unwrap_or(&[]);
                let r = fold_bias(a, pruned, c, m, Some("too few rows or no solution".into()));
                or_unchanged(c, r)?
            }
        });
    }
    rep.layers = done.into_iter().flatten().collect();
    rep.seconds = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// Per-channel RMS of every consumer's input (nodes with input-channel weight slices) on the
/// fit part of the calibration samples, for `--criterion activation`.
pub fn activation_stats(
    a: &Analysis,
    opts: &CalibOptions,
    progress: &dyn Progress,
) -> Result<HashMap<String, Vec<f64>>> {
    let ca = crate::analysis::channels::analyze_channels(a);
    let consumers: HashSet<&str> = ca
        .members
        .iter()
        .filter(|m| m.role == crate::analysis::channels::Role::ConsumerWeight)
        .map(|m| m.node.as_str())
        .collect();
    let is_consumer = |n: &NodeProto| consumers.contains(n.display_name().as_str());
    let m = input_moments(
        a,
        &ca,
        opts,
        &is_consumer,
        2,
        "activation statistics",
        progress,
    )?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.into_iter().map(f64::sqrt).collect()))
        .collect())
}

/// Per-channel moments (`power` 1: means, 2: mean squares) of the channel-tracked first
/// inputs of the nodes `select` picks, on the fit part of the calibration samples: one pass
/// over the original model for all of them.
fn input_moments(
    a: &Analysis,
    ca: &ChannelAnalysis,
    opts: &CalibOptions,
    select: &dyn Fn(&NodeProto) -> bool,
    power: i32,
    phase: &str,
    progress: &dyn Progress,
) -> Result<HashMap<String, Vec<f64>>> {
    let mut tensors: Vec<(String, usize)> = Vec::new();
    for n in &a.graph().node {
        if select(n)
            && let Some(x) = n.input.first()
            && let Some(l) = ca.layouts.get(x)
            && !tensors.iter().any(|t| &t.0 == x)
            && !a.index.inputs.contains(x)
        {
            tensors.push((x.clone(), l.axis));
        }
    }
    let set = open_samples(a, &opts.data)?;
    let split = crate::fidelity::HoldoutArgs {
        holdout: opts.holdout,
    }
    .split(set.len())?;
    let ropts = RecoverOptions {
        engine: opts.data.engine.resolve()?,
        ..opts.recover.clone()
    };
    let cx = FitContext {
        set: &set,
        fit: &split.fit,
        opts: &ropts,
        progress,
    };
    progress.phase(phase, Some(split.fit.len() as u64));
    channel_moments(&a.model.proto, &tensors, &cx, power)
}

/// The cheap stand-in for recovery inside a budget search: bias folding with the original's
/// channel means, measured once for every conv/Gemm input, so each candidate is repaired
/// without running anything. Choosing on repaired candidates keeps the search from
/// avoiding channels whose loss is mostly a constant a fit would restore anyway.
pub struct BiasFolder {
    means: HashMap<String, Vec<f64>>,
}

impl BiasFolder {
    /// Channel means of every channel-tracked conv/Gemm input on the fit part of `opts`.
    pub fn new(a: &Analysis, opts: &CalibOptions, progress: &dyn Progress) -> Result<Self> {
        let ca = crate::analysis::channels::analyze_channels(a);
        let conv_or_gemm = |n: &NodeProto| matches!(n.op_type(), "Conv" | "Gemm");
        let phase = "channel means for the search";
        Ok(BiasFolder {
            means: input_moments(a, &ca, opts, &conv_or_gemm, 1, phase, progress)?,
        })
    }

    /// Folds the removed inputs of one consumer of `m` into its bias.
    pub(super) fn fold(&self, a: &Analysis, m: &mut ModelProto, c: &Consumer) -> Result<()> {
        let means = self.means.get(&c.input).map(Vec::as_slice).unwrap_or(&[]);
        or_unchanged(c, fold_bias(a, m, c, means, None)).map(|_| ())
    }

    /// `p`'s model with every consumer of a pruned channel bias-folded.
    pub fn apply(&self, a: &Analysis, p: &Pruned) -> Result<ModelProto> {
        let keep = super::rewrite::kept_atoms(&p.channels, &p.plan);
        let mut m = p.model.proto.clone();
        for c in find_consumers(a, &p.channels, &keep) {
            let means = self.means.get(&c.input).map(Vec::as_slice).unwrap_or(&[]);
            or_unchanged(&c, fold_bias(a, &mut m, &c, means, None))?;
        }
        Ok(m)
    }
}

/// Fidelity of `candidate` against `original` on samples `indices` of `set`.
pub fn measure_fidelity(
    original: &ModelProto,
    candidate: &ModelProto,
    set: &SampleSet,
    indices: &[usize],
    held_out: bool,
    engine: EngineKind,
    progress: &dyn Progress,
) -> Result<crate::fidelity::Fidelity> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let r = RunnerCache::new(original.clone(), "fidelity (original)").on(engine, threads);
    let c = RunnerCache::new(candidate.clone(), "fidelity (pruned)").on(engine, threads);
    progress.phase("measuring fidelity", Some(indices.len() as u64));
    let acc = crate::fidelity::measure(&r, &c, set, indices, threads, progress)?;
    let engine = indices
        .first()
        .and_then(|&k| r.get(set, k).ok())
        .map(|x| x.engine());
    Ok(acc.finish(held_out, &set.source, engine))
}

/// Where fidelity and recovery get their samples (`--calib`, `--samples`, `--holdout`).
#[derive(Clone, Debug)]
pub struct CalibOptions {
    pub data: SampleSpec,
    /// False when the user gave no `--calib`: a few random inputs measure fidelity only.
    pub given: bool,
    /// Share of the samples held out for fidelity.
    pub holdout: f64,
    /// Knobs of the fits (the mode comes from the request).
    pub recover: RecoverOptions,
}

/// The samples of `spec` for the inputs of `a`.
pub(super) fn open_samples(a: &Analysis, spec: &SampleSpec) -> Result<SampleSet> {
    SampleSet::open_with(
        crate::data::analysis_decls(a)?,
        &spec.source,
        spec.samples,
        spec.preprocess.clone(),
        crate::data::DynamicDims::Guess,
    )
}

/// How long one phase of a prune took (`phases` in `pare prune --json`).
#[derive(Clone, Debug, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

impl PhaseTime {
    pub fn since(phase: &str, start: Instant) -> Self {
        PhaseTime {
            phase: phase.to_string(),
            seconds: start.elapsed().as_secs_f64(),
        }
    }
}

/// What calibration data produced: fidelity (after recovery), fidelity before it, the
/// recovery itself, and the time of each phase.
#[derive(Clone, Debug, Default)]
pub struct CalibOutcome {
    pub fidelity: Option<crate::fidelity::Fidelity>,
    pub fidelity_before_recovery: Option<crate::fidelity::Fidelity>,
    pub recovery: Option<Recovery>,
    pub phases: Vec<PhaseTime>,
}

/// Opens the samples, repairs `pruned` on the fit part and measures fidelity on the held-out
/// part (all of it without `--calib`: random inputs fit nothing).
pub fn calibrate_and_measure(
    a: &Analysis,
    p: &Pruned,
    pruned: &mut ModelProto,
    opts: &CalibOptions,
    mode: RecoverMode,
    progress: &dyn Progress,
) -> Result<CalibOutcome> {
    let (ca, plan) = (&p.channels, &p.plan);
    let mut out = CalibOutcome::default();
    let t = Instant::now();
    let set = open_samples(a, &opts.data)?;
    let mode = if opts.given { mode } else { RecoverMode::None };
    let split = if mode == RecoverMode::None && !opts.given {
        crate::fidelity::holdout(set.len(), 0.0)
    } else {
        crate::fidelity::HoldoutArgs {
            holdout: opts.holdout,
        }
        .split(set.len())?
    };
    // Without recovery nothing was fitted: every sample is as good as held out, except
    // that `--calib` users asked for a split and get the same samples either way.
    let held_out = split.held_out || (mode == RecoverMode::None && !opts.given);
    let engine = opts.data.engine.resolve()?;
    out.phases.push(PhaseTime::since("loading samples", t));
    let original = &a.model.proto;
    if mode != RecoverMode::None {
        let t = Instant::now();
        out.fidelity_before_recovery = Some(measure_fidelity(
            original,
            pruned,
            &set,
            &split.eval,
            held_out,
            engine,
            progress,
        )?);
        out.phases
            .push(PhaseTime::since("fidelity before recovery", t));
        let t = Instant::now();
        let ropts = RecoverOptions {
            engine,
            mode,
            ..opts.recover.clone()
        };
        let cx = FitContext {
            set: &set,
            fit: &split.fit,
            opts: &ropts,
            progress,
        };
        let mut r = recover(a, ca, plan, pruned, &cx)?;
        r.eval_samples = split.eval.clone();
        out.recovery = Some(r);
        out.phases.push(PhaseTime::since("recovery", t));
    }
    let t = Instant::now();
    let mut f = measure_fidelity(
        original,
        pruned,
        &set,
        &split.eval,
        held_out,
        engine,
        progress,
    )?;
    if !opts.given {
        f.notes.push(format!(
            "random inputs ({} samples): give --calib DIR for fidelity on real data",
            set.len()
        ));
    }
    if !held_out {
        f.notes
            .push("too few samples to hold any out: fidelity is on the fit samples".into());
    }
    out.fidelity = Some(f);
    out.phases.push(PhaseTime::since("fidelity", t));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::HostData;

    fn tensor(shape: &[usize]) -> HostTensor {
        let n = shape.iter().product::<usize>();
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::F32((0..n).map(|i| i as f32).collect()),
        }
    }

    fn values(t: &HostTensor) -> &[f32] {
        match &t.data {
            HostData::F32(v) => v,
            _ => panic!("not f32"),
        }
    }

    #[test]
    fn photos_are_mirrored_along_their_width_in_either_layout() {
        // NCHW [1, 3, 5, 6]: element (c, y, x) moves to (c, y, 5 - x).
        let t = tensor(&[1, 3, 5, 6]);
        let f = hflip(std::slice::from_ref(&t)).expect("image");
        let at = |c: usize, y: usize, x: usize| (c * 5 + y) * 6 + x;
        assert_eq!(values(&f[0])[at(2, 1, 0)], values(&t)[at(2, 1, 5)]);
        assert_eq!(values(&f[0])[at(0, 4, 2)], values(&t)[at(0, 4, 3)]);
        // NHWC [1, 5, 6, 3]: channels stay in place, x moves.
        let t = tensor(&[1, 5, 6, 3]);
        let f = hflip(std::slice::from_ref(&t)).expect("image");
        let at = |y: usize, x: usize, c: usize| (y * 6 + x) * 3 + c;
        assert_eq!(values(&f[0])[at(1, 0, 2)], values(&t)[at(1, 5, 2)]);
        assert_eq!(values(&f[0])[at(3, 2, 0)], values(&t)[at(3, 3, 0)]);
        // Mirroring twice is the identity.
        let ff = hflip(&f).expect("image");
        assert_eq!(values(&ff[0]), values(&t));
    }

    #[test]
    fn inputs_that_are_not_photos_are_not_mirrored() {
        for shape in [
            &[1, 64, 8, 8][..],
            &[1, 3, 224],
            &[1, 3, 1, 224],
            &[1, 8, 8, 16],
        ] {
            assert!(hflip(&[tensor(shape)]).is_none(), "{shape:?}");
        }
        // One photo and one non-photo input: no mirrored sample at all.
        assert!(hflip(&[tensor(&[1, 3, 8, 8]), tensor(&[1, 10])]).is_none());
    }
}
