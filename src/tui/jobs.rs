//! Jobs as the TUI tracks them: a [`crate::jobs::Job`] plus everything its events said so far
//! (phase, progress, ETA, log, per-layer values) and its outcome.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::jobs::{ChannelProgress, Job, JobEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Prune,
    Quantize,
    Extract,
    Fix,
    Reduce,
    Convert,
    Sensitivity,
    Compare,
    Finetune,
}

impl JobKind {
    pub fn label(self) -> &'static str {
        match self {
            JobKind::Prune => "prune",
            JobKind::Quantize => "quantize",
            JobKind::Extract => "extract",
            JobKind::Fix => "fix",
            JobKind::Reduce => "reduce",
            JobKind::Convert => "convert",
            JobKind::Sensitivity => "sensitivity",
            JobKind::Compare => "compare",
            JobKind::Finetune => "finetune",
        }
    }
}

/// What a finished job hands back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobOutcome {
    /// Summary lines (params/MACs before → after, SQNR, …).
    pub summary: Vec<String>,
    /// Files written; the first one is what "open" loads.
    pub outputs: Vec<PathBuf>,
    /// A sensitivity measurement for the Groups view's column (taken once it arrives).
    pub sensitivity: Option<crate::prune::sensitivity::SensitivityReport>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum JobStatus {
    Running,
    Finished,
    Failed(String),
    Cancelled,
}

/// One per-layer measurement (quantization SQNR in dB).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerValue {
    pub node: String,
    pub value: f64,
    pub label: crate::jobs::LayerLabel,
}

/// One confirmation run of the mixed-precision search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FidelityValue {
    pub float_layers: usize,
    pub output_sqnr_db: Option<f64>,
    pub agreement: Option<f64>,
}

/// One step of a fine-tuning job, for its loss chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainingPoint {
    pub step: u64,
    pub loss: f64,
    /// Held-out top-1 agreement with the teacher, on the steps that were evaluated.
    pub agreement: Option<f64>,
}

pub struct JobEntry {
    pub kind: JobKind,
    pub title: String,
    /// The equivalent command line.
    pub command: String,
    job: Option<Job<JobOutcome>>,
    pub started: Instant,
    pub ended: Option<Instant>,
    pub phase: String,
    pub phase_started: Instant,
    pub total: Option<u64>,
    pub done: u64,
    pub message: String,
    pub log: Vec<String>,
    pub layers: Vec<LayerValue>,
    /// The latest whole-model fidelity (quantization's mixed-precision confirmation runs).
    pub fidelity: Option<FidelityValue>,
    /// Search trace points (budget search: MACs share, SQNR dB) for the chart.
    pub points: Vec<(f64, f64)>,
    /// Fine-tuning steps so far (loss, and agreement where evaluated) for the loss chart.
    pub training: Vec<TrainingPoint>,
    pub status: JobStatus,
    pub outcome: Option<JobOutcome>,
    pub cancel_requested: bool,
}

impl JobEntry {
    pub fn spawn<F>(kind: JobKind, title: String, command: String, work: F) -> Self
    where
        F: FnOnce(&ChannelProgress) -> crate::Result<JobOutcome> + Send + 'static,
    {
        let now = Instant::now();
        JobEntry {
            kind,
            title,
            command,
            job: Some(Job::spawn(work)),
            started: now,
            ended: None,
            phase: "starting".into(),
            phase_started: now,
            total: None,
            done: 0,
            message: String::new(),
            log: Vec::new(),
            layers: Vec::new(),
            fidelity: None,
            points: Vec::new(),
            training: Vec::new(),
            status: JobStatus::Running,
            outcome: None,
            cancel_requested: false,
        }
    }

    pub fn is_running(&self) -> bool {
        self.status == JobStatus::Running
    }

    pub fn cancel(&mut self) {
        if let Some(j) = &self.job {
            j.cancel();
            self.cancel_requested = true;
            self.log
                .push("cancel requested; stopping at the next step".into());
        }
    }

    /// Drains events; returns true when anything changed.
    pub fn poll(&mut self) -> bool {
        let Some(job) = &self.job else { return false };
        let mut events: Vec<JobEvent> = job.events.try_iter().collect();
        let finished = job.is_finished();
        if finished {
            // Events sent before the thread ended are all in the channel now.
            events.extend(job.events.try_iter());
        }
        let mut changed = !events.is_empty();
        for e in events {
            self.apply(e);
        }
        if finished {
            if let Some(job) = self.job.take() {
                match job.join() {
                    Ok(outcome) => {
                        self.status = JobStatus::Finished;
                        self.outcome = Some(outcome);
                    }
                    Err(crate::PareError::Cancelled) => self.status = JobStatus::Cancelled,
                    Err(e) if self.cancel_requested && e.to_string().contains("cancel") => {
                        self.status = JobStatus::Cancelled
                    }
                    Err(e) => self.status = JobStatus::Failed(e.to_string()),
                }
            }
            self.ended = Some(Instant::now());
            changed = true;
        }
        changed
    }

    fn apply(&mut self, e: JobEvent) {
        match e {
            JobEvent::Phase { name, total } => {
                self.log.push(format!("▸ {name}"));
                self.phase = name;
                self.total = total;
                self.done = 0;
                self.message.clear();
                self.phase_started = Instant::now();
            }
            JobEvent::Progress { done, message } => {
                self.done = done;
                self.message = message;
            }
            JobEvent::Log(line) => self.log.push(line),
            JobEvent::Layer { node, value, label } => {
                match self.layers.iter_mut().find(|l| l.node == node) {
                    Some(l) => {
                        l.value = value;
                        l.label = label;
                    }
                    None => self.layers.push(LayerValue { node, value, label }),
                }
            }
            JobEvent::Fidelity {
                float_layers,
                output_sqnr_db,
                agreement,
            } => {
                self.log.push(format!(
                    "{float_layers} layers float: output SQNR {}{}",
                    crate::report::fmt_db(output_sqnr_db),
                    agreement.map_or(String::new(), |a| format!(", task agreement {a:.3}"))
                ));
                self.fidelity = Some(FidelityValue {
                    float_layers,
                    output_sqnr_db,
                    agreement,
                });
            }
            JobEvent::Point { x, y } => self.points.push((x, y)),
            JobEvent::Training {
                step,
                loss,
                agreement,
            } => {
                if let Some(a) = agreement {
                    self.log
                        .push(format!("step {step}: loss {loss:.4}, agreement {a:.3}"));
                }
                self.training.push(TrainingPoint {
                    step,
                    loss,
                    agreement,
                });
            }
            JobEvent::Finished { summary } => self.log.push(format!("✓ {summary}")),
            JobEvent::Failed { error } => self.log.push(format!("✗ {error}")),
        }
    }

    /// Fraction of the current phase done, when it has a known length.
    pub fn ratio(&self) -> Option<f64> {
        match (self.status.clone(), self.total) {
            (JobStatus::Finished, _) => Some(1.0),
            (_, Some(t)) if t > 0 => Some((self.done as f64 / t as f64).clamp(0.0, 1.0)),
            _ => None,
        }
    }

    /// Remaining time of the current phase, from its rate so far.
    pub fn eta(&self, phase_elapsed: Duration) -> Option<Duration> {
        let t = self.total?;
        if self.done == 0 || self.done >= t || !self.is_running() {
            return None;
        }
        let per = phase_elapsed.as_secs_f64() / self.done as f64;
        Some(Duration::from_secs_f64(per * (t - self.done) as f64))
    }
}

/// `1m05s`, `12s`, `0.4s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1}s")
    } else if s < 60.0 {
        format!("{}s", s as u64)
    } else {
        format!("{}m{:02}s", s as u64 / 60, s as u64 % 60)
    }
}
