//! Background computations the views ask for on demand: weight statistics of a tensor and
//! importance scores of a channel group. One thread per model; requests are deduplicated by
//! the caller and answered over a channel that the UI drains every tick.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::analysis::channels::{ChannelAnalysis, member_values};
use crate::model::Analysis;
use crate::prune::Criterion;
use crate::prune::importance::{WeightCache, unit_scores};

/// min/max/mean/std and the share of exact zeros of a weight tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorStats {
    pub numel: usize,
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub std: f64,
    pub zeros: f64,
}

pub fn tensor_stats(values: &[f32]) -> TensorStats {
    let n = values.len();
    if n == 0 {
        return TensorStats {
            numel: 0,
            min: 0.0,
            max: 0.0,
            mean: 0.0,
            std: 0.0,
            zeros: 0.0,
        };
    }
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    let (mut sum, mut sq, mut zeros) = (0f64, 0f64, 0usize);
    for &v in values {
        min = min.min(v);
        max = max.max(v);
        sum += v as f64;
        sq += (v as f64) * (v as f64);
        if v == 0.0 {
            zeros += 1;
        }
    }
    let mean = sum / n as f64;
    let var = (sq / n as f64 - mean * mean).max(0.0);
    TensorStats {
        numel: n,
        min,
        max,
        mean,
        std: var.sqrt(),
        zeros: zeros as f64 / n as f64,
    }
}

/// Why a tensor has no statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Not an initializer readable as f32 (integer, external and unreadable, or not a weight).
    #[error("not a float weight")]
    NotFloatWeight,
}

pub enum Request {
    Stats(String),
    Importance(Vec<usize>),
}

pub enum Reply {
    Stats(String, Result<TensorStats, StatsError>),
    /// Scores of one group's units (L1), sorted high to low.
    Importance(usize, Vec<f64>),
}

pub struct Worker {
    tx: Option<Sender<Request>>,
    pub rx: Receiver<Reply>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(a: Arc<Analysis>, ca: Arc<ChannelAnalysis>) -> Self {
        let (tx, req_rx) = channel::<Request>();
        let (reply_tx, rx) = channel::<Reply>();
        let handle = std::thread::Builder::new()
            .name("pare-tui-worker".into())
            .spawn(move || {
                let mut cache = WeightCache::default();
                while let Ok(req) = req_rx.recv() {
                    let reply = match req {
                        Request::Stats(t) => {
                            let r = member_values(&a, &t)
                                .map(|(_, v)| tensor_stats(&v))
                                .ok_or(StatsError::NotFloatWeight);
                            Reply::Stats(t, r)
                        }
                        Request::Importance(gids) => {
                            for gid in gids {
                                let Some(g) = ca.groups.get(gid) else {
                                    continue;
                                };
                                let mut s = unit_scores(&a, &ca, g, Criterion::L1, 0, &mut cache);
                                s.sort_by(|x, y| y.total_cmp(x));
                                if reply_tx.send(Reply::Importance(gid, s)).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                    };
                    if reply_tx.send(reply).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Worker {
            tx: Some(tx),
            rx,
            handle,
        }
    }

    pub fn send(&self, r: Request) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after its current request.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            drop(h);
        }
    }
}
