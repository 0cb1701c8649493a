//! `pare diff A B`: what changed between two models and where B's numbers start to go wrong.
//! The structure half maps B's nodes onto A's ([`matching`]) and lists what was added,
//! removed, folded or changed, the channel groups whose width changed and params/MACs per
//! scope. The numeric half runs both on the same samples (the one sample loader, the one
//! runner) and compares every matched tensor, a bounded chunk at a time ([`numeric`]); the
//! first tensor along A's execution order below `threshold_db` is the first divergence (the
//! culprit layer of seed Q9, found without hand work).

pub mod flat;
pub mod keepmap;
pub mod matching;
pub mod numeric;
mod render;
pub mod structure;

use serde::Serialize;

use crate::data::{DataSource, Preprocess, SampleSet, analysis_decls};
use crate::error::Result;
use crate::jobs::{JobEvent, Progress};
use crate::model::Analysis;
use crate::report::Report;
use crate::runtime::{EngineChoice, EngineKind};

pub use numeric::TensorDiff;
pub use structure::Structure;

/// What to compare and how.
#[derive(Clone, Debug)]
pub struct DiffRequest {
    /// Samples for the numeric half; `None` compares structure only.
    pub data: Option<DiffData>,
    /// SQNR (dB) below which a tensor has diverged.
    pub threshold_db: f64,
    /// Extra outputs exposed per run (memory bound).
    pub chunk: usize,
}

impl Default for DiffRequest {
    fn default() -> Self {
        DiffRequest {
            data: Some(DiffData::default()),
            threshold_db: 30.0,
            chunk: 32,
        }
    }
}

/// Where the samples come from.
#[derive(Clone, Debug)]
pub struct DiffData {
    pub source: DataSource,
    pub samples: usize,
    pub preprocess: Preprocess,
    pub engine: EngineChoice,
}

impl Default for DiffData {
    fn default() -> Self {
        DiffData {
            source: DataSource::Random { seed: 0 },
            samples: 2,
            preprocess: Preprocess::default(),
            engine: EngineChoice::from_env(),
        }
    }
}

/// The first tensor below the threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    pub name: String,
    pub node: String,
    pub sqnr_db: Option<f64>,
}

/// One model output's SQNR.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputDiff {
    pub name: String,
    pub sqnr_db: Option<f64>,
    pub cosine: Option<f64>,
    pub max_abs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `pare diff` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    #[serde(flatten)]
    pub structure: Structure,
    /// Matched tensors, worst first (not comparable last).
    pub tensors: Vec<TensorDiff>,
    pub first_divergence: Option<Divergence>,
    pub outputs: Vec<OutputDiff>,
    pub threshold_db: f64,
    pub samples: usize,
    pub source: Option<String>,
    pub engine: Option<EngineKind>,
    pub notes: Vec<String>,
}

impl DiffReport {
    /// The lowest output SQNR; an output without numbers counts as failing (`None`).
    pub fn worst_output(&self) -> Option<Option<f64>> {
        self.outputs
            .iter()
            .map(|o| o.sqnr_db)
            .min_by(|x, y| match (x, y) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, _) => std::cmp::Ordering::Less,
                (_, None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.total_cmp(y),
            })
    }

    /// Whether some output is below `db` (or has no numbers).
    pub fn fails_below(&self, db: f64) -> bool {
        self.outputs
            .iter()
            .any(|o| o.sqnr_db.is_none_or(|s| s < db))
    }

    /// One line for a job's end and the Compare view's header.
    pub fn summary(&self) -> String {
        render::summary(self)
    }

    /// Whether B equals A in structure (no node added, removed, folded or changed).
    pub fn same_structure(&self) -> bool {
        let s = &self.structure;
        s.added.is_empty() && s.removed.is_empty() && s.folded.is_empty() && s.changed.is_empty()
    }
}

impl Report for DiffReport {
    fn render_text(&self) -> String {
        render::text(self)
    }
}

/// Compares `b` with `a`.
pub fn run(
    a: &Analysis,
    b: &Analysis,
    req: &DiffRequest,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    progress.phase("matching nodes", None);
    let cmp = structure::compare(a, b);
    let mut rep = DiffReport {
        a: label(a),
        b: label(b),
        structure: cmp.structure.clone(),
        tensors: Vec::new(),
        first_divergence: None,
        outputs: Vec::new(),
        threshold_db: req.threshold_db,
        samples: 0,
        source: None,
        engine: None,
        notes: Vec::new(),
    };
    if cmp.a.nodes.len() > cmp.a.main || cmp.b.nodes.len() > cmp.b.main {
        rep.notes
            .push("tensors inside If/Loop bodies are compared by structure only".into());
    }
    if let Some(d) = &req.data {
        let pairs = numeric::pairs(a, b, &cmp);
        drop(cmp);
        numbers(a, b, d, req, &pairs, &mut rep, progress)?;
    }
    progress.event(JobEvent::Finished {
        summary: render::summary(&rep),
    });
    Ok(rep)
}

fn label(a: &Analysis) -> String {
    a.model
        .path
        .as_ref()
        .map_or_else(|| "<in memory>".into(), |p| p.display().to_string())
}

fn numbers(
    a: &Analysis,
    b: &Analysis,
    d: &DiffData,
    req: &DiffRequest,
    pairs: &[numeric::Pair],
    rep: &mut DiffReport,
    progress: &dyn Progress,
) -> Result<()> {
    let set = SampleSet::open_with(
        analysis_decls(a)?,
        &d.source,
        d.samples,
        d.preprocess.clone(),
        crate::data::DynamicDims::Guess,
    )?;
    let engine = d.engine.resolve()?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let indices: Vec<usize> = (0..set.len()).collect();
    let opts = numeric::NumericOptions {
        chunk: req.chunk,
        engine,
        threads,
    };
    let mut tensors = numeric::compare(a, b, pairs, &set, &indices, &opts, progress)?;
    rep.samples = set.len();
    rep.source = Some(set.source.clone());
    rep.engine = Some(engine);
    rep.notes.extend(set.notes.iter().cloned());
    for o in &a.index.outputs {
        if let Some(t) = tensors.iter().find(|t| t.name == *o) {
            rep.outputs.push(OutputDiff {
                name: o.clone(),
                sqnr_db: t.sqnr_db,
                cosine: t.cosine,
                max_abs: t.max_abs,
                note: t.note.clone(),
            });
        }
    }
    rep.first_divergence = tensors
        .iter()
        .filter(|t| t.order != usize::MAX)
        .find(|t| t.sqnr_db.is_some_and(|s| s < req.threshold_db))
        .map(|t| Divergence {
            name: t.name.clone(),
            node: t.node.clone(),
            sqnr_db: t.sqnr_db,
        });
    tensors.sort_by(|x, y| match (x.sqnr_db, y.sqnr_db) {
        (Some(p), Some(q)) => p.total_cmp(&q).then(x.order.cmp(&y.order)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => x.order.cmp(&y.order),
    });
    rep.tensors = tensors;
    Ok(())
}
