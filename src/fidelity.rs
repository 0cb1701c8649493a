//! Task fidelity: how close a compressed model (pruned, quantized, converted) stays to the
//! original on the same samples. Output SQNR alone hides what users care about (a classifier
//! whose top-1 changed, a detector whose mask vanished), so every output also gets the measure
//! that fits its shape: top-1 agreement for class scores, mask IoU for dense maps in [0, 1]
//! (sigmoid heatmaps), per-pixel argmax agreement for dense multi-channel maps (segmentation
//! logits). Numbers are only meaningful on samples that chose or fitted nothing, so
//! [`holdout`] splits a sample set into a fitting part and an evaluation part.
//!
//! Everything streams: [`Accumulator`] keeps sums, never outputs, so memory does not grow with
//! the number of samples.

use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;

use crate::data::SampleSet;
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::report::fmt_db;
use crate::runtime::pool::{RunnerCache, for_each_sample};
use crate::runtime::{EngineKind, HostTensor};

/// Which task measure an output gets, decided from its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// `[N, C]` (or `[C]`, or `[N, C, 1, 1]`) with C ≥ 2: top-1 agreement.
    ClassScores,
    /// Rank ≥ 3 with more than one spatial position: mask IoU / pixel agreement.
    DenseMap,
    /// Anything else (boxes, embeddings, scalars): SQNR and cosine only.
    Other,
}

/// Fidelity of one output over all evaluated samples.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OutputFidelity {
    pub name: String,
    pub kind: OutputKind,
    /// 10·log10(Σref² / Σ(ref−got)²); `None` when the reference is all zero.
    pub sqnr_db: Option<f64>,
    /// Cosine similarity of the flattened outputs, over all samples.
    pub cosine: Option<f64>,
    /// Share of rows whose argmax is the reference's (class scores only).
    pub top1_agreement: Option<f64>,
    /// IoU of the maps thresholded at 0.5 (dense maps whose reference stays within [0, 1]).
    pub mask_iou: Option<f64>,
    /// Share of positions whose argmax over channels is the reference's (dense maps with
    /// several channels).
    pub pixel_agreement: Option<f64>,
    pub max_abs_diff: f64,
}

/// How close a candidate stayed to the reference, on which samples.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fidelity {
    /// Samples evaluated.
    pub samples: usize,
    /// True when none of the samples chose or fitted anything (calibration, recovery).
    pub held_out: bool,
    /// Where the samples came from (`random (seed 0)`, a folder, …).
    pub source: String,
    /// Engine that ran both models.
    pub engine: Option<EngineKind>,
    pub outputs: Vec<OutputFidelity>,
    pub notes: Vec<String>,
}

impl Fidelity {
    /// The lowest SQNR over outputs (what a `--min-sqnr` floor compares against).
    pub fn min_sqnr_db(&self) -> Option<f64> {
        self.outputs
            .iter()
            .filter_map(|o| o.sqnr_db)
            .min_by(f64::total_cmp)
    }

    /// The lowest top-1 agreement over class-score outputs.
    pub fn top1_agreement(&self) -> Option<f64> {
        self.outputs
            .iter()
            .filter_map(|o| o.top1_agreement)
            .min_by(f64::total_cmp)
    }

    /// The lowest task measure over outputs (top-1, mask IoU, pixel agreement), the number a
    /// `--min-agreement` floor compares against.
    pub fn task_agreement(&self) -> Option<f64> {
        self.outputs
            .iter()
            .flat_map(|o| [o.top1_agreement, o.mask_iou, o.pixel_agreement])
            .flatten()
            .min_by(f64::total_cmp)
    }

    /// Text lines for reports: one per output, then the notes.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let which = if self.held_out {
            "held-out"
        } else {
            "NOT held-out"
        };
        let engine = self.engine.map(|e| format!(", {e}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "fidelity   {} {which} samples from {}{engine}",
            self.samples, self.source
        );
        for o in &self.outputs {
            let mut line = format!(
                "  {:<24} SQNR {:>9}  cosine {}",
                crate::report::truncate(&o.name, 24),
                fmt_db(o.sqnr_db),
                o.cosine.map_or("-".into(), |c| format!("{c:.5}"))
            );
            for (label, v) in [
                ("top-1 agreement", o.top1_agreement),
                ("mask IoU", o.mask_iou),
                ("pixel agreement", o.pixel_agreement),
            ] {
                if let Some(v) = v {
                    let _ = write!(line, "  {label} {v:.3}");
                }
            }
            let _ = writeln!(s, "{line}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

/// Running sums for one output.
#[derive(Clone, Debug, Default)]
struct OutAcc {
    kind: Option<OutputKind>,
    signal: f64,
    noise: f64,
    dot: f64,
    ref_sq: f64,
    got_sq: f64,
    rows: u64,
    rows_same: u64,
    inter: u64,
    union: u64,
    /// False once a reference value falls outside [0, 1]: not a probability map.
    unit_range: bool,
    positions: u64,
    positions_same: u64,
    multi_channel: bool,
    max_abs: f64,
}

/// The kind of an output of `shape` (batch first).
pub fn output_kind(shape: &[usize]) -> OutputKind {
    let mut dims = shape.to_vec();
    while dims.len() > 2 && dims.last() == Some(&1) {
        dims.pop();
    }
    match dims.as_slice() {
        [c] | [_, c] if *c >= 2 => OutputKind::ClassScores,
        [_, _, rest @ ..] if rest.iter().product::<usize>() > 1 => OutputKind::DenseMap,
        _ => OutputKind::Other,
    }
}

fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in xs.iter().enumerate() {
        if v.total_cmp(&xs[best]).is_gt() {
            best = i;
        }
    }
    best
}

impl OutAcc {
    fn add(&mut self, r: &HostTensor, g: &HostTensor) {
        let kind = *self.kind.get_or_insert_with(|| {
            self.unit_range = true;
            output_kind(&r.shape)
        });
        let (x, y) = (r.to_f64(), g.to_f64());
        for (a, b) in x.iter().zip(&y) {
            let d = a - b;
            self.signal += a * a;
            self.noise += d * d;
            self.dot += a * b;
            self.ref_sq += a * a;
            self.got_sq += b * b;
            self.max_abs = self
                .max_abs
                .max(if d.is_nan() { f64::INFINITY } else { d.abs() });
        }
        match kind {
            OutputKind::ClassScores => self.add_rows(&r.shape, &x, &y),
            OutputKind::DenseMap => self.add_map(&r.shape, &x, &y),
            OutputKind::Other => {}
        }
    }

    fn add_rows(&mut self, shape: &[usize], x: &[f64], y: &[f64]) {
        let rows = if shape.len() >= 2 { shape[0].max(1) } else { 1 };
        let width = x.len() / rows;
        if width == 0 {
            return;
        }
        for (a, b) in x.chunks(width).zip(y.chunks(width)) {
            self.rows += 1;
            self.rows_same += u64::from(argmax(a) == argmax(b));
        }
    }

    fn add_map(&mut self, shape: &[usize], x: &[f64], y: &[f64]) {
        for (a, b) in x.iter().zip(y) {
            if !(0.0..=1.0).contains(a) {
                self.unit_range = false;
            }
            let (pa, pb) = (*a > 0.5, *b > 0.5);
            self.inter += u64::from(pa && pb);
            self.union += u64::from(pa || pb);
        }
        let (n, c) = (shape[0].max(1), shape[1]);
        if c < 2 {
            return;
        }
        self.multi_channel = true;
        let spatial = x.len() / (n * c).max(1);
        let mut col_a = vec![0.0; c];
        let mut col_b = vec![0.0; c];
        for b in 0..n {
            for p in 0..spatial {
                for ch in 0..c {
                    let i = (b * c + ch) * spatial + p;
                    col_a[ch] = x[i];
                    col_b[ch] = y[i];
                }
                self.positions += 1;
                self.positions_same += u64::from(argmax(&col_a) == argmax(&col_b));
            }
        }
    }

    fn merge(&mut self, o: &OutAcc) {
        if self.kind.is_none() {
            *self = o.clone();
            return;
        }
        if o.kind.is_none() {
            return;
        }
        self.signal += o.signal;
        self.noise += o.noise;
        self.dot += o.dot;
        self.ref_sq += o.ref_sq;
        self.got_sq += o.got_sq;
        self.rows += o.rows;
        self.rows_same += o.rows_same;
        self.inter += o.inter;
        self.union += o.union;
        self.unit_range &= o.unit_range;
        self.positions += o.positions;
        self.positions_same += o.positions_same;
        self.multi_channel |= o.multi_channel;
        self.max_abs = self.max_abs.max(o.max_abs);
    }

    fn finish(&self, name: &str) -> OutputFidelity {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let kind = self.kind.unwrap_or(OutputKind::Other);
        let dense = kind == OutputKind::DenseMap;
        OutputFidelity {
            name: name.to_string(),
            kind,
            sqnr_db: crate::quant::diag::db(self.signal, self.noise),
            cosine: (self.ref_sq > 0.0 && self.got_sq > 0.0)
                .then(|| self.dot / (self.ref_sq.sqrt() * self.got_sq.sqrt())),
            top1_agreement: ratio(self.rows_same, self.rows),
            // Both maps empty everywhere: nothing detected by either, which is agreement.
            mask_iou: (dense && self.unit_range)
                .then(|| ratio(self.inter, self.union).unwrap_or(1.0)),
            pixel_agreement: if dense && self.multi_channel {
                ratio(self.positions_same, self.positions)
            } else {
                None
            },
            max_abs_diff: self.max_abs,
        }
    }
}

/// Streaming fidelity sums over outputs; add sample pairs, then [`Accumulator::finish`].
#[derive(Clone, Debug)]
pub struct Accumulator {
    names: Vec<String>,
    outs: Vec<OutAcc>,
    samples: usize,
}

impl Accumulator {
    pub fn new(output_names: Vec<String>) -> Self {
        let outs = vec![OutAcc::default(); output_names.len()];
        Accumulator {
            names: output_names,
            outs,
            samples: 0,
        }
    }

    /// Adds one sample's outputs (model output order). Shapes must match: a candidate whose
    /// output shape changed is not comparable and is reported as an error naming the output.
    pub fn add(&mut self, reference: &[HostTensor], candidate: &[HostTensor]) -> Result<()> {
        if reference.len() != candidate.len() || reference.len() != self.names.len() {
            return Err(PareError::Runtime(format!(
                "fidelity: {} reference outputs, {} candidate outputs, {} names",
                reference.len(),
                candidate.len(),
                self.names.len()
            )));
        }
        for (i, (r, g)) in reference.iter().zip(candidate).enumerate() {
            if r.shape != g.shape {
                return Err(PareError::Runtime(format!(
                    "fidelity: output '{}' has shape {:?} in the reference but {:?} in the candidate",
                    self.names[i], r.shape, g.shape
                )));
            }
            self.outs[i].add(r, g);
        }
        self.samples += 1;
        Ok(())
    }

    /// Folds another accumulator's sums into this one (one per worker thread).
    pub fn merge(&mut self, other: &Accumulator) {
        for (a, b) in self.outs.iter_mut().zip(&other.outs) {
            a.merge(b);
        }
        self.samples += other.samples;
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The per-output measures so far.
    pub fn outputs(&self) -> Vec<OutputFidelity> {
        self.outs
            .iter()
            .zip(&self.names)
            .map(|(a, n)| a.finish(n))
            .collect()
    }

    /// The finished report.
    pub fn finish(&self, held_out: bool, source: &str, engine: Option<EngineKind>) -> Fidelity {
        Fidelity {
            samples: self.samples,
            held_out,
            source: source.to_string(),
            engine,
            outputs: self.outputs(),
            notes: Vec::new(),
        }
    }
}

/// The evaluation flags prune and quantize share: what share of `--data` is held out to
/// measure fidelity (never used to calibrate, choose channels or reconstruct).
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct HoldoutArgs {
    /// Share of the --data samples held out to measure fidelity (every k-th sample); 0 uses
    /// all samples for fitting and says the fidelity is not held-out.
    #[arg(long, value_name = "F", default_value_t = 0.25)]
    pub holdout: f64,
}

impl Default for HoldoutArgs {
    fn default() -> Self {
        HoldoutArgs { holdout: 0.25 }
    }
}

impl HoldoutArgs {
    /// The split of `n` samples, or a usage error for a share outside [0, 1).
    pub fn split(&self, n: usize) -> Result<Split> {
        if !(0.0..1.0).contains(&self.holdout) {
            return Err(PareError::Usage(format!(
                "--holdout {}: give a share in [0, 1), e.g. 0.25",
                self.holdout
            )));
        }
        Ok(holdout(n, self.holdout))
    }
}

/// Which samples fit (calibrate, choose channels, reconstruct) and which evaluate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Split {
    pub fit: Vec<usize>,
    pub eval: Vec<usize>,
    /// False when there were too few samples to hold any out: both lists are everything.
    pub held_out: bool,
}

/// Splits `n` samples: every k-th (k = round(1/fraction)) evaluates, the rest fit, so both
/// parts cover the whole folder (sorted file names are often grouped by scene). Fewer than
/// two samples, or a fraction of 0, cannot hold anything out: both parts are all samples and
/// `held_out` is false, which reports must say.
pub fn holdout(n: usize, fraction: f64) -> Split {
    let all: Vec<usize> = (0..n).collect();
    if n < 2 || fraction.is_nan() || fraction <= 0.0 {
        return Split {
            fit: all.clone(),
            eval: all,
            held_out: false,
        };
    }
    let k = ((1.0 / fraction.min(1.0)).round() as usize).max(2);
    let (mut fit, mut eval) = (Vec::new(), Vec::new());
    for i in all {
        if i % k == k - 1 {
            eval.push(i);
        } else {
            fit.push(i);
        }
    }
    if eval.is_empty() {
        // n < k: hold out the last sample rather than nothing.
        eval.push(fit.pop().unwrap_or(0));
    }
    Split {
        fit,
        eval,
        held_out: true,
    }
}

/// The reference model's outputs on a few samples, kept so several candidates can be compared
/// without re-running the reference (sensitivity, budget search).
pub struct ReferenceOutputs {
    pub indices: Vec<usize>,
    pub outputs: Vec<Vec<HostTensor>>,
    pub names: Vec<String>,
}

/// Runs `reference` on `indices` of `set` and keeps the outputs in index order.
pub fn reference_outputs(
    reference: &RunnerCache,
    set: &SampleSet,
    indices: &[usize],
    threads: usize,
    progress: &dyn Progress,
) -> Result<ReferenceOutputs> {
    let slots: Mutex<Vec<Option<Vec<HostTensor>>>> = Mutex::new(vec![None; set.len()]);
    let names: Mutex<Vec<String>> = Mutex::new(Vec::new());
    for_each_sample(reference, set, indices, threads, progress, 0, |s, r| {
        let out = r.run(&s.tensors)?;
        let mut n = names.lock().map_err(|_| poisoned())?;
        if n.is_empty() {
            *n = r.output_names().to_vec();
        }
        slots.lock().map_err(|_| poisoned())?[s.index] = Some(out);
        Ok(())
    })?;
    let mut slots = slots.into_inner().map_err(|_| poisoned())?;
    let outputs = indices
        .iter()
        .map(|&k| slots[k].take().ok_or_else(poisoned))
        .collect::<Result<Vec<_>>>()?;
    Ok(ReferenceOutputs {
        indices: indices.to_vec(),
        outputs,
        names: names.into_inner().map_err(|_| poisoned())?,
    })
}

fn poisoned() -> PareError {
    PareError::Runtime("fidelity: a worker thread failed".into())
}

/// Compares `candidate` with stored reference outputs on the same samples.
pub fn measure_against(
    reference: &ReferenceOutputs,
    candidate: &RunnerCache,
    set: &SampleSet,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Accumulator> {
    let pos: std::collections::HashMap<usize, usize> = reference
        .indices
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, i))
        .collect();
    let acc = Mutex::new(Accumulator::new(reference.names.clone()));
    for_each_sample(
        candidate,
        set,
        &reference.indices,
        threads,
        progress,
        0,
        |s, r| {
            let got = r.run(&s.tensors)?;
            let want = &reference.outputs[pos[&s.index]];
            acc.lock().map_err(|_| poisoned())?.add(want, &got)
        },
    )?;
    acc.into_inner().map_err(|_| poisoned())
}

/// Runs both models on `indices` of `set` and compares them, one sample at a time.
pub fn measure(
    reference: &RunnerCache,
    candidate: &RunnerCache,
    set: &SampleSet,
    indices: &[usize],
    threads: usize,
    progress: &dyn Progress,
) -> Result<Accumulator> {
    let acc: Mutex<Option<Accumulator>> = Mutex::new(None);
    for_each_sample(reference, set, indices, threads, progress, 0, |s, r| {
        let want = r.run(&s.tensors)?;
        let got = candidate.get(set, s.index)?.run(&s.tensors)?;
        let mut a = acc.lock().map_err(|_| poisoned())?;
        a.get_or_insert_with(|| Accumulator::new(r.output_names().to_vec()))
            .add(&want, &got)
    })?;
    acc.into_inner()
        .map_err(|_| poisoned())?
        .ok_or_else(|| PareError::Usage("fidelity: no samples to evaluate".into()))
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> HostTensor {
        HostTensor::f32(shape.to_vec(), v.to_vec())
    }

    #[test]
    fn kinds_follow_shapes() {
        assert_eq!(output_kind(&[1, 1000]), OutputKind::ClassScores);
        assert_eq!(output_kind(&[4, 10, 1, 1]), OutputKind::ClassScores);
        assert_eq!(output_kind(&[1, 1, 8, 8]), OutputKind::DenseMap);
        assert_eq!(output_kind(&[1, 4]), OutputKind::ClassScores);
        assert_eq!(output_kind(&[1, 1]), OutputKind::Other);
        assert_eq!(output_kind(&[]), OutputKind::Other);
    }

    #[test]
    fn top1_counts_rows_whose_argmax_moved() {
        let mut a = Accumulator::new(vec!["logits".into()]);
        let r = t(&[2, 3], &[0.1, 0.9, 0.0, 0.5, 0.2, 0.3]);
        let g = t(&[2, 3], &[0.1, 0.8, 0.0, 0.1, 0.2, 0.3]);
        a.add(&[r.clone()], &[g]).unwrap();
        a.add(&[r.clone()], &[r]).unwrap();
        let o = &a.outputs()[0];
        assert_eq!(o.kind, OutputKind::ClassScores);
        assert_eq!(o.top1_agreement, Some(0.75));
        assert!(o.sqnr_db.unwrap() > 5.0 && o.sqnr_db.unwrap() < 30.0);
        assert!((o.max_abs_diff - 0.4).abs() < 1e-6);
    }

    #[test]
    fn mask_iou_only_for_probability_maps() {
        let mut a = Accumulator::new(vec!["heat".into()]);
        // Reference mask: 2 positions on; candidate: 1 of them plus 1 other → IoU 1/3.
        let r = t(&[1, 1, 2, 2], &[0.9, 0.8, 0.1, 0.0]);
        let g = t(&[1, 1, 2, 2], &[0.9, 0.2, 0.7, 0.0]);
        a.add(&[r], &[g]).unwrap();
        let o = &a.outputs()[0];
        assert!((o.mask_iou.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(o.pixel_agreement, None);
        let mut b = Accumulator::new(vec!["logits".into()]);
        let r = t(&[1, 2, 1, 2], &[3.0, -1.0, 1.0, 2.0]);
        let g = t(&[1, 2, 1, 2], &[3.0, 5.0, 1.0, 2.0]);
        b.add(&[r], &[g]).unwrap();
        let o = &b.outputs()[0];
        assert_eq!(o.mask_iou, None, "logits are not a probability map");
        assert_eq!(o.pixel_agreement, Some(0.5));
    }

    #[test]
    fn shape_mismatch_names_the_output() {
        let mut a = Accumulator::new(vec!["y".into()]);
        let e = a.add(&[t(&[1, 2], &[1.0, 2.0])], &[t(&[1, 3], &[1.0, 2.0, 3.0])]);
        assert!(e.unwrap_err().to_string().contains("'y'"));
    }

    #[test]
    fn merge_equals_one_pass() {
        let r = t(&[1, 3], &[1.0, 2.0, 3.0]);
        let g = t(&[1, 3], &[1.1, 2.0, 2.5]);
        let mut one = Accumulator::new(vec!["y".into()]);
        one.add(&[r.clone()], &[g.clone()]).unwrap();
        one.add(&[g.clone()], &[r.clone()]).unwrap();
        let mut a = Accumulator::new(vec!["y".into()]);
        let mut b = a.clone();
        a.add(&[r.clone()], &[g.clone()]).unwrap();
        b.add(&[g], &[r]).unwrap();
        a.merge(&b);
        assert_eq!(a.outputs(), one.outputs());
        assert_eq!(a.samples(), 2);
    }

    #[test]
    fn holdout_is_disjoint_and_covers_everything() {
        let s = holdout(32, 0.25);
        assert_eq!(s.eval.len(), 8);
        assert_eq!(s.fit.len(), 24);
        assert!(s.eval.iter().all(|e| !s.fit.contains(e)));
        assert!(s.held_out);
        let s = holdout(3, 0.25);
        assert_eq!((s.fit.len(), s.eval.len()), (2, 1));
        let s = holdout(1, 0.25);
        assert!(!s.held_out);
        assert_eq!(s.fit, s.eval);
        assert!(!holdout(10, 0.0).held_out);
    }
}
