//! `pare fix`: safe rewrites of what the lint finds, each proven equal before anything is
//! written.
//!
//! The fixes run in a fixed order on a copy of the model, each re-analysing the result of the
//! previous one. Then the original and the fixed model run on seeded random inputs (tract;
//! where tract refuses the original — typically for the very `If` being removed — the original
//! runs in pieces: tract computes everything up to each `If`, the condition's value picks the
//! branch, and the branch runs as its own model). Outputs must agree within 1e-5 (absolute plus
//! relative, like numpy's allclose). When they do not, each intermediate model is checked to
//! name the fix that diverged, and nothing is written.

mod clip;
mod consts;
pub mod convtranspose;
pub mod edit;
mod fold;
mod gather;
mod hygiene;
pub mod reference;
mod resize;

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::proto::{Dimension, ModelProto};
use crate::model::shape::{Dim, Value};
use crate::model::{Analysis, InputPins, Model, SaveOptions, save_model};
use crate::runtime::{HostTensor, InputSpec, max_abs_diff};

use super::ctx::LintCtx;
use super::target::Target;
use edit::NameGen;

/// One automatic rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum FixKind {
    /// Inline `If` nodes whose condition is known (Q4).
    FoldIf,
    /// Replace shape computations with known values by constants (P11).
    FoldShapes,
    /// Make axes/K/pads/scales inputs constant; write explicit Squeeze axes.
    ConstInputs,
    /// Clip bounds as initializers, no empty inputs (Q5).
    ClipBounds,
    /// ConvTranspose with asymmetric padding → symmetric ConvTranspose + Slice/Pad (Q3).
    ConvTransposePads,
    /// Resize scales → constant sizes when shapes are static.
    ResizeSizes,
    /// Normalise negative GatherElements indices.
    GatherIndices,
    /// Drop value_info entries that contradict inference.
    ValueInfo,
    /// Drop unused initializers.
    DropUnused,
    /// Name unnamed nodes, rename duplicates.
    Names,
}

impl FixKind {
    /// Every fix, in the order they run.
    pub const ALL: [FixKind; 10] = [
        FixKind::FoldIf,
        FixKind::FoldShapes,
        FixKind::ConstInputs,
        FixKind::ClipBounds,
        FixKind::ConvTransposePads,
        FixKind::ResizeSizes,
        FixKind::GatherIndices,
        FixKind::ValueInfo,
        FixKind::DropUnused,
        FixKind::Names,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FixKind::FoldIf => "fold-if",
            FixKind::FoldShapes => "fold-shapes",
            FixKind::ConstInputs => "const-inputs",
            FixKind::ClipBounds => "clip-bounds",
            FixKind::ConvTransposePads => "convtranspose-pads",
            FixKind::ResizeSizes => "resize-sizes",
            FixKind::GatherIndices => "gather-indices",
            FixKind::ValueInfo => "value-info",
            FixKind::DropUnused => "drop-unused",
            FixKind::Names => "names",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FixKind::FoldIf => "inline If nodes whose condition is known under the input shapes",
            FixKind::FoldShapes => "fold shape computations with known values into constants",
            FixKind::ConstInputs => {
                "make axes/K/pads/scales inputs constants; explicit Squeeze axes"
            }
            FixKind::ClipBounds => "Clip min/max as initializers, no empty inputs",
            FixKind::ConvTransposePads => {
                "asymmetric ConvTranspose → symmetric ConvTranspose + Slice/Pad"
            }
            FixKind::ResizeSizes => "Resize scales → constant sizes when shapes are static",
            FixKind::GatherIndices => "normalise negative GatherElements indices",
            FixKind::ValueInfo => "drop value_info entries that contradict the inferred shapes",
            FixKind::DropUnused => "drop unused initializers",
            FixKind::Names => "name unnamed nodes, make node names unique",
        }
    }

    pub fn parse(s: &str) -> Option<FixKind> {
        FixKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }
}

/// What `pare fix` should do.
#[derive(Clone, Debug)]
pub struct FixOptions {
    /// Fix names (`fold-if`) or lint rule ids (`L7`); empty: every fix.
    pub only: Vec<String>,
    /// Apply only the fixes for findings on this target.
    pub target: Option<Target>,
    /// Seeds of the random inputs used for verification (one run per seed).
    pub seeds: Vec<u64>,
    /// Verification data (`--data`): input sets in model-input order, used instead of random
    /// inputs when not empty (checks then name set K as seed K).
    pub inputs: Vec<Vec<HostTensor>>,
    /// Run the verification (on by default; off only for experiments).
    pub verify: bool,
    /// Absolute and relative tolerance of the comparison.
    pub tolerance: f64,
}

impl Default for FixOptions {
    fn default() -> Self {
        Self {
            only: Vec::new(),
            target: None,
            seeds: vec![0, 1],
            inputs: Vec::new(),
            verify: true,
            tolerance: 1e-5,
        }
    }
}

/// One change a fix made.
#[derive(Clone, Debug, Serialize)]
pub struct FixAction {
    pub fix: String,
    /// Lint rules this addresses.
    pub rules: Vec<String>,
    /// Nodes changed, replaced or removed.
    pub nodes: Vec<String>,
    pub description: String,
}

/// One output compared in the verification.
#[derive(Clone, Debug, Serialize)]
pub struct OutputCheck {
    pub name: String,
    pub seed: u64,
    pub shape: Vec<usize>,
    /// `None` when shapes differ.
    pub max_abs_diff: Option<f64>,
    pub ok: bool,
}

/// Proof (or not) that the fixed model computes what the original does.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Verification {
    pub status: VerifyStatus,
    /// How the original ran ("tract", or "tract, in pieces around If nodes").
    pub reference: String,
    /// How the fixed model ran.
    pub fixed: String,
    /// The engine that ran both models (`None`: they did not run). Verification runs on
    /// tract: what tract refuses (a data-dependent `If`) is what the piecewise run covers.
    pub engine: Option<crate::runtime::EngineKind>,
    pub inputs: Vec<String>,
    pub seeds: Vec<u64>,
    pub tolerance: f64,
    pub outputs: Vec<OutputCheck>,
    pub max_abs_diff: Option<f64>,
    /// The first fix whose result diverged from the original.
    pub diverged_fix: Option<String>,
    pub notes: Vec<String>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.status == VerifyStatus::Passed
    }
}

/// Outcome of running the fixed model against the original (`"passed"`, `"failed"`,
/// `"not-run"`, `"impossible"` in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyStatus {
    /// Outputs equal within the tolerance on every seeded input set.
    Passed,
    /// Outputs differ: the fixed model is never written.
    Failed,
    /// Nothing changed, or verification was switched off.
    #[default]
    NotRun,
    /// The models could not be run (unsupported op, no inputs to make up).
    Impossible,
}

impl std::fmt::Display for VerifyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyStatus::Passed => "passed",
            VerifyStatus::Failed => "failed",
            VerifyStatus::NotRun => "not-run",
            VerifyStatus::Impossible => "impossible",
        })
    }
}

/// Result of [`fix_model`]: the fixed model (not yet written) and the report.
#[derive(Clone, Debug, Serialize)]
pub struct FixOutcome {
    #[serde(skip)]
    pub model: Model,
    pub actions: Vec<FixAction>,
    pub fixes_applied: Vec<String>,
    pub verification: Verification,
    /// Inputs whose declared shape was pinned because a fold depended on it.
    pub pinned_inputs: Vec<(String, Vec<i64>)>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Set by [`write_fixed`].
    pub written: Option<String>,
}

impl FixOutcome {
    pub fn changed(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// Everything a fix pass may look at.
pub struct Pass<'a> {
    /// The current model, with the user's pinned shapes.
    pub cx: LintCtx<'a>,
    /// The current model without pins (== `cx.a` when none were given).
    pub un: &'a Analysis,
    pub names: NameGen,
    /// Set when a rewrite used a value that holds only under the pinned shapes.
    pub pin_dependent: bool,
    /// Insert run-time index normalisation for GatherElements (not only constant indices).
    pub runtime_gather: bool,
}

impl<'a> Pass<'a> {
    fn note_pins(&mut self, name: &str) {
        if self.cx.a.pins.is_empty() || self.pin_dependent {
            return;
        }
        let known_unpinned = self.cx.const_tensor(name).is_some()
            || self
                .un
                .shapes
                .get(name)
                .and_then(|i| i.value.as_ref())
                .is_some_and(|v| match v {
                    Value::Int(d) => d.iter().all(|x| x.known().is_some()),
                    Value::Float(_) => true,
                });
        if !known_unpinned {
            self.pin_dependent = true;
        }
    }

    /// Known integer values (marks the pass pin-dependent when only the pins make them known).
    pub fn ints(&mut self, name: &str) -> Option<Vec<i64>> {
        let v = self.cx.ints(name)?;
        self.note_pins(name);
        Some(v)
    }

    pub fn floats(&mut self, name: &str) -> Option<Vec<f64>> {
        let v = self.cx.floats(name)?;
        self.note_pins(name);
        Some(v)
    }

    /// Static shape (marks pin dependence when the unpinned model does not have it).
    pub fn static_shape(&mut self, name: &str) -> Option<Vec<i64>> {
        let s = self.cx.static_shape(name)?;
        if !self.cx.a.pins.is_empty()
            && !self.pin_dependent
            && self.un.shapes.static_shape(name).is_none()
        {
            self.pin_dependent = true;
        }
        Some(s)
    }

    /// The known value of `name` as a new initializer called `new_name`.
    pub fn constant_of(
        &mut self,
        name: &str,
        new_name: &str,
    ) -> Option<crate::model::proto::TensorProto> {
        if let Some(t) = self.cx.const_tensor(name) {
            let mut t = t.clone();
            t.name = Some(new_name.to_string());
            return Some(t);
        }
        let info = self.cx.info(name)?;
        let dtype = info.dtype?;
        let dims = info.static_shape()?;
        let v = info.value.as_ref()?;
        if let Value::Int(d) = v
            && d.iter().any(|x| !matches!(x, Dim::Known(_)))
        {
            return None;
        }
        let t = edit::tensor_from_value(new_name, dtype, &dims, v)?;
        self.note_pins(name);
        Some(t)
    }
}

/// Which fixes `opts` selects.
pub fn selected_fixes(a: &Analysis, opts: &FixOptions) -> Result<Vec<FixKind>> {
    let mut set: HashSet<FixKind> = HashSet::new();
    for tok in &opts.only {
        if let Some(k) = FixKind::parse(tok) {
            set.insert(k);
        } else if let Some(rule) = super::rule_by_id(tok) {
            match rule.fix {
                Some(k) => {
                    set.insert(k);
                }
                None => {
                    return Err(PareError::Usage(format!(
                        "rule {} ({}) has no automatic fix; see `pare lint` for the source-side fix",
                        rule.id, rule.title
                    )));
                }
            }
        } else {
            return Err(PareError::Usage(format!(
                "--rule '{tok}': not a rule id or fix name (fixes: {})",
                FixKind::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if opts.only.is_empty() {
        match opts.target {
            Some(t) => {
                let report = super::lint(
                    a,
                    &super::LintOptions {
                        target: t,
                        rules: Vec::new(),
                    },
                );
                for d in report.diagnostics.iter().filter(|d| d.fixable) {
                    if let Some(k) = d.fix.as_deref().and_then(FixKind::parse) {
                        set.insert(k);
                    }
                }
            }
            None => set.extend(FixKind::ALL),
        }
    }
    Ok(FixKind::ALL
        .into_iter()
        .filter(|k| set.contains(k))
        .collect())
}

fn rules_of(kind: FixKind) -> Vec<String> {
    super::all_rules()
        .filter(|r| r.fix == Some(kind))
        .map(|r| r.id.to_string())
        .collect()
}

/// Runs one fix pass on `model` (already analysed as `an`).
fn run_pass(
    kind: FixKind,
    an: &Analysis,
    un: &Analysis,
    runtime_gather: bool,
) -> Result<(ModelProto, Vec<FixAction>, bool)> {
    let mut pass = Pass {
        cx: LintCtx::new(an, Target::default()),
        un,
        names: NameGen::of(&an.model.proto),
        pin_dependent: false,
        runtime_gather,
    };
    let mut m = an.model.proto.clone();
    let g = m
        .graph
        .as_mut()
        .ok_or_else(|| PareError::InvalidModel("model has no graph".into()))?;
    let mut actions = match kind {
        FixKind::FoldIf => fold::fold_if(&mut pass, g)?,
        FixKind::FoldShapes => fold::fold_shapes(&mut pass, g),
        FixKind::ConstInputs => consts::const_inputs(&mut pass, g),
        FixKind::ClipBounds => clip::clip_bounds(&mut pass, g),
        FixKind::ConvTransposePads => convtranspose::convtranspose_pads(&mut pass, g),
        FixKind::ResizeSizes => resize::resize_sizes(&mut pass, g),
        FixKind::GatherIndices => gather::gather_indices(&mut pass, g),
        FixKind::ValueInfo => hygiene::value_info(&mut pass, g),
        FixKind::DropUnused => hygiene::drop_unused(&mut pass, g),
        FixKind::Names => hygiene::names(&mut pass, g),
    };
    if !actions.is_empty() {
        let removed = edit::dce(g);
        if !removed.is_empty()
            && let Some(a) = actions.last_mut()
        {
            for r in removed {
                if !a.nodes.contains(&r) {
                    a.nodes.push(r);
                }
            }
        }
        edit::sort_topologically(g)?;
    }
    for a in &mut actions {
        a.fix = kind.name().to_string();
        a.rules = rules_of(kind);
    }
    Ok((m, actions, pass.pin_dependent))
}

fn analyse(proto: ModelProto, like: &Model, pins: &InputPins) -> Result<Analysis> {
    let model = Model {
        proto,
        path: None,
        file_size: like.file_size,
        external_tensors: like.external_tensors.clone(),
    };
    Analysis::new(model, pins)
}

/// Writes pinned dims into the declared inputs, and known dims into the declared outputs.
fn pin_declarations(
    m: &mut ModelProto,
    an: &Analysis,
    pins: &InputPins,
) -> Vec<(String, Vec<i64>)> {
    let mut pinned = Vec::new();
    let Some(g) = m.graph.as_mut() else {
        return pinned;
    };
    for vi in &mut g.input {
        let Some(p) = pins.get(vi.name()) else {
            continue;
        };
        if let Some(crate::model::proto::TypeValue::TensorType(tt)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            let shape = tt.shape.get_or_insert_with(Default::default);
            shape.dim = p
                .iter()
                .map(|&d| crate::model::proto::TensorShapeDimension {
                    value: Some(Dimension::DimValue(d)),
                    denotation: None,
                })
                .collect();
            pinned.push((vi.name().to_string(), p.clone()));
        }
    }
    for vi in &mut g.output {
        let Some(s) = an.shapes.static_shape(vi.name()) else {
            continue;
        };
        if let Some(crate::model::proto::TypeValue::TensorType(tt)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(shape) = tt.shape.as_mut()
            && shape.dim.len() == s.len()
        {
            for (d, &v) in shape.dim.iter_mut().zip(&s) {
                if !matches!(d.value, Some(Dimension::DimValue(_))) {
                    d.value = Some(Dimension::DimValue(v));
                }
            }
        }
    }
    pinned
}

/// Applies the selected fixes to an analysed model and verifies the result. Nothing is
/// written; see [`write_fixed`].
pub fn fix_model(a: &Analysis, opts: &FixOptions, progress: &dyn Progress) -> Result<FixOutcome> {
    let kinds = selected_fixes(a, opts)?;
    let runtime_gather = opts.target.is_some_and(|t| t.trt_in(702, 800))
        || opts
            .only
            .iter()
            .any(|o| o.eq_ignore_ascii_case("L12") || o.eq_ignore_ascii_case("gather-indices"));
    let pins = &a.pins;
    progress.phase("fixing", Some(kinds.len() as u64));
    let mut current = a.clone();
    let mut unpinned = if pins.is_empty() {
        None
    } else {
        Some(analyse(a.model.proto.clone(), &a.model, &InputPins::new())?)
    };
    let mut actions = Vec::new();
    let mut stages: Vec<(FixKind, ModelProto)> = Vec::new();
    let mut pin_dependent = false;
    for (k, kind) in kinds.iter().enumerate() {
        progress.check_cancel()?;
        progress.step(k as u64, kind.name());
        // Fold passes repeat until nothing changes (inlining can expose nested Ifs).
        let rounds = if matches!(kind, FixKind::FoldIf | FixKind::FoldShapes) {
            16
        } else {
            1
        };
        let mut changed = false;
        for _ in 0..rounds {
            let un = unpinned.as_ref().unwrap_or(&current);
            let (m, acts, pdep) = run_pass(*kind, &current, un, runtime_gather)?;
            if acts.is_empty() {
                break;
            }
            for act in &acts {
                progress.log(&format!("{}: {}", act.fix, act.description));
            }
            pin_dependent |= pdep;
            actions.extend(acts);
            changed = true;
            if unpinned.is_some() {
                unpinned = Some(analyse(m.clone(), &a.model, &InputPins::new())?);
            }
            current = analyse(m, &a.model, pins)?;
        }
        if changed {
            stages.push((*kind, current.model.proto.clone()));
        }
    }
    progress.step(kinds.len() as u64, "done");
    let mut pinned_inputs = Vec::new();
    let mut final_proto = current.model.proto.clone();
    if pin_dependent {
        pinned_inputs = pin_declarations(&mut final_proto, &current, pins);
        if let Some(last) = stages.last_mut() {
            last.1 = final_proto.clone();
        }
    }
    let verification = if actions.is_empty() {
        Verification {
            status: VerifyStatus::NotRun,
            notes: vec!["nothing to fix".into()],
            ..Default::default()
        }
    } else if !opts.verify {
        Verification {
            status: VerifyStatus::NotRun,
            notes: vec!["verification disabled".into()],
            ..Default::default()
        }
    } else {
        verify(a, &stages, opts, progress)
    };
    let nodes_after = final_proto.graph.as_ref().map_or(0, |g| g.node.len());
    let model = Model {
        proto: final_proto,
        path: None,
        file_size: a.model.file_size,
        external_tensors: a.model.external_tensors.clone(),
    };
    let mut applied: Vec<String> = Vec::new();
    for act in &actions {
        if !applied.contains(&act.fix) {
            applied.push(act.fix.clone());
        }
    }
    progress.event(crate::jobs::JobEvent::Finished {
        summary: format!(
            "{} change(s); verification {}",
            actions.len(),
            verification.status
        ),
    });
    Ok(FixOutcome {
        model,
        fixes_applied: applied,
        actions,
        verification,
        pinned_inputs,
        nodes_before: a.graph().node.len(),
        nodes_after,
        written: None,
    })
}

/// Concrete input shapes for verification: pinned or declared dims, dynamic dims as 1 (first
/// axis) or 64, with a note (the one random-spec builder, [`crate::data::input_specs`]).
pub fn verification_inputs(a: &Analysis) -> Result<(Vec<InputSpec>, Vec<String>)> {
    crate::data::input_specs(a)
}

/// Input specs, input sets and notes of a verification.
type VerifySets = (Vec<InputSpec>, Vec<Vec<HostTensor>>, Vec<String>);

/// Specs and input sets for verification: the given data, else random sets per seed.
fn verification_sets(a: &Analysis, opts: &FixOptions) -> Result<VerifySets> {
    if let Some(first) = opts.inputs.first() {
        let specs = a
            .index
            .inputs
            .iter()
            .zip(first)
            .map(|(name, t)| InputSpec {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape.clone(),
            })
            .collect();
        return Ok((specs, opts.inputs.clone(), Vec::new()));
    }
    let (specs, notes) = verification_inputs(a)?;
    let sets = opts
        .seeds
        .iter()
        .map(|&seed| reference::random_inputs(&specs, seed))
        .collect::<Result<Vec<_>>>()?;
    Ok((specs, sets, notes))
}

fn compare(
    reference: &[HostTensor],
    got: &[HostTensor],
    names: &[String],
    seed: u64,
    tol: f64,
) -> Vec<OutputCheck> {
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let (Some(r), Some(g)) = (reference.get(k), got.get(k)) else {
                return OutputCheck {
                    name: name.clone(),
                    seed,
                    shape: Vec::new(),
                    max_abs_diff: None,
                    ok: false,
                };
            };
            let d = max_abs_diff(r, g);
            let ok = d.is_some() && {
                let (x, y) = (r.to_f64(), g.to_f64());
                x.iter().zip(&y).all(|(p, q)| {
                    (p.is_nan() && q.is_nan()) || (p - q).abs() <= tol + tol * p.abs()
                })
            };
            OutputCheck {
                name: name.clone(),
                seed,
                shape: r.shape.clone(),
                max_abs_diff: d,
                ok,
            }
        })
        .collect()
}

fn verify(
    a: &Analysis,
    stages: &[(FixKind, ModelProto)],
    opts: &FixOptions,
    progress: &dyn Progress,
) -> Verification {
    let mut v = Verification {
        tolerance: opts.tolerance,
        seeds: opts.seeds.clone(),
        ..Default::default()
    };
    if !opts.inputs.is_empty() {
        v.seeds = (0..opts.inputs.len() as u64).collect();
    }
    let (specs, sets, notes) = match verification_sets(a, opts) {
        Ok(x) => x,
        Err(e) => {
            v.status = VerifyStatus::Impossible;
            v.notes.push(e.to_string());
            return v;
        }
    };
    v.notes.extend(notes);
    v.inputs = specs
        .iter()
        .map(|s| {
            format!(
                "{}: {} {}",
                s.name,
                s.dtype,
                s.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            )
        })
        .collect();
    let names: Vec<String> = a.index.outputs.clone();
    let Some((_, fixed)) = stages.last() else {
        v.status = VerifyStatus::NotRun;
        return v;
    };
    progress.phase("verifying", Some(2));
    let refs = match reference::run_many(&a.model.proto, &specs, &sets) {
        Ok((out, how)) => {
            v.reference = how;
            v.engine = Some(reference::ENGINE);
            out
        }
        Err(e) => {
            v.status = VerifyStatus::Impossible;
            v.notes.push(format!(
                "the original model does not run in tract, even in pieces: {e}"
            ));
            return v;
        }
    };
    progress.step(1, "original");
    let labels = v.seeds.clone();
    let run_stage = |proto: &ModelProto, v: &mut Verification| -> Result<Vec<OutputCheck>> {
        let (got, how) = reference::run_many(proto, &specs, &sets)?;
        v.fixed = how;
        let mut checks = Vec::new();
        for ((seed, out), got) in labels.iter().zip(&refs).zip(&got) {
            checks.extend(compare(out, got, &names, *seed, opts.tolerance));
        }
        Ok(checks)
    };
    match run_stage(fixed, &mut v) {
        Ok(checks) => {
            progress.step(2, "fixed");
            v.max_abs_diff = checks
                .iter()
                .filter_map(|c| c.max_abs_diff)
                .fold(None, |m, d| Some(m.map_or(d, |x: f64| x.max(d))));
            let ok = checks.iter().all(|c| c.ok);
            v.outputs = checks;
            if ok {
                v.status = VerifyStatus::Passed;
                return v;
            }
            v.status = VerifyStatus::Failed;
        }
        Err(e) => {
            v.status = VerifyStatus::Failed;
            v.notes
                .push(format!("the fixed model does not run in tract: {e}"));
        }
    }
    // Find the first fix whose result diverges.
    for (kind, proto) in stages {
        let mut scratch = Verification::default();
        let bad = match run_stage(proto, &mut scratch) {
            Ok(checks) => !checks.iter().all(|c| c.ok),
            Err(_) => true,
        };
        if bad {
            v.diverged_fix = Some(kind.name().to_string());
            v.notes.push(format!(
                "fix '{}' changed the outputs; rerun without it (--rule with the other fixes) or report the model",
                kind.name()
            ));
            break;
        }
    }
    v
}

/// Writes a verified fixed model atomically; refuses an unverified or diverging one unless
/// `allow_unverified`, and never overwrites the input.
pub fn write_fixed(
    outcome: &mut FixOutcome,
    input: &Path,
    output: &Path,
    allow_unverified: bool,
) -> Result<()> {
    crate::report::check_output(Some(input), output)?;
    let v = &outcome.verification;
    if v.status == VerifyStatus::Failed {
        return Err(PareError::Runtime(format!(
            "not written: the fixed model's outputs differ from the original's{}",
            v.diverged_fix
                .as_ref()
                .map(|f| format!(" (fix '{f}' diverged)"))
                .unwrap_or_default()
        )));
    }
    if outcome.changed() && !v.passed() && !allow_unverified {
        return Err(PareError::Runtime(format!(
            "not written: the fix could not be verified ({}); pass --allow-unverified to write it anyway",
            v.notes
                .last()
                .cloned()
                .unwrap_or_else(|| v.status.to_string())
        )));
    }
    let mut model = outcome.model.clone();
    model.path = Some(input.to_path_buf());
    save_model(&model, output, &SaveOptions::default())?;
    outcome.written = Some(output.display().to_string());
    Ok(())
}
