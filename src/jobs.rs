//! Long work (pruning, quantization, fixes, extraction, reduction) as jobs that report
//! progress events. Library functions take a `&dyn Progress` and never print: the CLI turns
//! events into an indicatif bar, the TUI into a gauge and a live log, tests into a Vec. A job
//! checks `cancelled()` between steps so Esc in the TUI stops it cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{PareError, Result};

/// What a job reports while it runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum JobEvent {
    /// A new phase begins (`"calibrating"`, `"validating"`), with its number of steps if known.
    Phase {
        name: String,
        total: Option<u64>,
    },
    /// `done` of the current phase's steps are finished.
    Progress {
        done: u64,
        message: String,
    },
    /// A line for the job's log.
    Log(String),
    /// A per-layer measurement (quantization SQNR as it fills in).
    Layer {
        node: String,
        value: f64,
        label: LayerLabel,
    },
    /// A whole-model fidelity measurement (quantization's mixed-precision search: each
    /// confirmation run, with the number of layers it kept float).
    Fidelity {
        float_layers: usize,
        output_sqnr_db: Option<f64>,
        /// Lowest task agreement (top-1 / mask IoU / pixel agreement) with the float model.
        agreement: Option<f64>,
    },
    /// One training step (fine-tuning): its loss, and the held-out top-1 agreement with the
    /// teacher when the step was evaluated, for the job's loss chart.
    Training {
        step: u64,
        loss: f64,
        agreement: Option<f64>,
    },
    /// A point of a search trace (budget search: MACs kept as a share of the original, and
    /// the lowest output SQNR in dB), for the job's chart.
    Point {
        x: f64,
        y: f64,
    },
    /// The job ended; `summary` is a short human line.
    Finished {
        summary: String,
    },
    Failed {
        error: String,
    },
}

/// What a [`JobEvent::Layer`] value measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerLabel {
    /// SQNR (dB) of the layer's quantized input, estimated from the calibration statistics
    /// so far.
    Estimate,
    /// Isolated SQNR (dB) of the layer, refined with every diagnosed sample.
    SqnrDb,
    /// The layer went back to float (`--target-sqnr` / `--min-agreement`); the value is its
    /// isolated SQNR (dB).
    Fallback,
}

/// Sink for job events.
pub trait Progress: Send + Sync {
    fn event(&self, e: JobEvent);
    /// True once the user asked to cancel; jobs stop at the next step boundary.
    fn cancelled(&self) -> bool {
        false
    }
    fn phase(&self, name: &str, total: Option<u64>) {
        self.event(JobEvent::Phase {
            name: name.to_string(),
            total,
        });
    }
    fn step(&self, done: u64, message: &str) {
        self.event(JobEvent::Progress {
            done,
            message: message.to_string(),
        });
    }
    fn log(&self, line: &str) {
        self.event(JobEvent::Log(line.to_string()));
    }
    /// Returns an error if cancelled, for `?` at step boundaries.
    fn check_cancel(&self) -> Result<()> {
        if self.cancelled() {
            Err(PareError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Discards events.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _e: JobEvent) {}
}

/// Records events (tests, reports).
#[derive(Default)]
pub struct RecordProgress(pub Mutex<Vec<JobEvent>>);

impl Progress for RecordProgress {
    fn event(&self, e: JobEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
}

impl RecordProgress {
    pub fn events(&self) -> Vec<JobEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Sends events over a channel and carries a cancel flag: what a background job gets.
#[derive(Clone)]
pub struct ChannelProgress {
    tx: Sender<JobEvent>,
    cancel: Arc<AtomicBool>,
}

impl Progress for ChannelProgress {
    fn event(&self, e: JobEvent) {
        let _ = self.tx.send(e);
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A job running on a background thread.
pub struct Job<T> {
    pub events: Receiver<JobEvent>,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Job<T> {
    /// Starts `work` on a new thread. Panics inside it become a failed job, not a crash.
    pub fn spawn<F>(work: F) -> Self
    where
        F: FnOnce(&ChannelProgress) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = ChannelProgress {
            tx,
            cancel: cancel.clone(),
        };
        let handle = std::thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&progress)))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "job panicked".into());
                    Err(PareError::Runtime(format!("internal error: {msg}")))
                });
            match &result {
                Ok(_) => {}
                Err(e) => progress.event(JobEvent::Failed {
                    error: e.to_string(),
                }),
            }
            result
        });
        Self {
            events: rx,
            cancel,
            handle: Some(handle),
        }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the result.
    pub fn join(mut self) -> Result<T> {
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(PareError::Runtime("job thread panicked".into()))),
            None => Err(PareError::Runtime("job already joined".into())),
        }
    }
}

/// indicatif progress bar for the CLI (on stderr; hidden when stderr is not a terminal).
pub struct CliProgress {
    bar: indicatif::ProgressBar,
    quiet: bool,
}

impl CliProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(0)
        };
        Self { bar, quiet }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for CliProgress {
    fn event(&self, e: JobEvent) {
        match e {
            JobEvent::Phase { name, total } => {
                self.bar.reset();
                match total {
                    Some(t) => {
                        self.bar.set_length(t);
                        self.bar.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{prefix:>12} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                    }
                    None => self.bar.set_style(
                        indicatif::ProgressStyle::with_template("{prefix:>12} {spinner} {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    ),
                }
                self.bar.set_prefix(name);
            }
            JobEvent::Progress { done, message } => {
                self.bar.set_position(done);
                self.bar.set_message(message);
            }
            JobEvent::Log(line) if !self.quiet => self.bar.println(line),
            _ => {}
        }
    }
}
