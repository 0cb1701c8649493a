//! `pare finetune` (feature `torch`): distils a compressed student from its original teacher on
//! unlabeled samples, training the student's float initializers (conv, BatchNorm, Gemm/MatMul
//! weights) on libtorch through [`super::exec::TorchGraph`], then writes the same graph with
//! the new initializers and checks it by running it.
//!
//! Samples come from the shared loader at a size a little larger than the crop, so every step
//! sees random crops and flips (augmentation); `eval_samples` of them are held out and only
//! ever centre-cropped, to measure top-1 agreement with the teacher before and after.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::exec::{ExecError, TorchGraph};
use crate::data::{DataSource, Preprocess, SampleSet, input_decls};
use crate::model::tensor::f32_tensor;
use crate::model::{InputPins, Model, SaveOptions, load_model, save_model};
use crate::report::Report;
use crate::rng::Rng;
use crate::runtime::HostData;

/// The distillation loss between student and teacher outputs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    Mse,
    /// KL divergence of the softmax over the last axis (classifier logits).
    Kl,
}

/// What to fine-tune, on what, for how long.
#[derive(Clone, Debug)]
pub struct FinetuneRequest {
    pub student: PathBuf,
    pub teacher: PathBuf,
    pub output: PathBuf,
    pub data: DataSource,
    pub preprocess: Preprocess,
    /// At most this many samples are read (training + held out).
    pub samples: usize,
    /// Training crop (H, W); samples are loaded at 8/7 of it.
    pub crop: (i64, i64),
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub loss: Loss,
    pub device: Device,
    pub eval_samples: usize,
    pub seed: u64,
    /// Measure held-out agreement every this many steps (0: only before and after).
    pub eval_every: usize,
}

/// One point of the training curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub step: usize,
    pub seconds: f64,
    pub loss: f64,
    pub agreement: Option<f64>,
}

/// What fine-tuning did: the JSON `finetune` object.
#[derive(Clone, Debug, Serialize)]
pub struct FinetuneReport {
    pub output: String,
    pub steps: usize,
    pub seconds: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    pub train_samples: usize,
    pub eval_samples: usize,
    /// Held-out top-1 agreement with the teacher before and after.
    pub fidelity_before: f64,
    pub fidelity_after: f64,
    /// Agreement of the written model re-loaded from disk (the check that it was written right).
    pub fidelity_written: f64,
    pub curve: Vec<CurvePoint>,
}

impl Report for FinetuneReport {
    fn render_text(&self) -> String {
        let mut s = format!(
            "finetune: {} steps in {:.0} s on {} samples ({} held out)\n",
            self.steps, self.seconds, self.train_samples, self.eval_samples
        );
        s += &format!(
            "  loss          {:.4} -> {:.4}\n",
            self.loss_first, self.loss_last
        );
        s += &format!(
            "  top-1 agreement with the teacher (held out): {:.3} -> {:.3} (written model {:.3})\n",
            self.fidelity_before, self.fidelity_after, self.fidelity_written
        );
        for p in self.curve.iter().filter(|p| p.agreement.is_some()) {
            s += &format!(
                "  step {:>5}  {:>6.0} s  loss {:.4}  agreement {:.3}\n",
                p.step,
                p.seconds,
                p.loss,
                p.agreement.unwrap_or(0.0)
            );
        }
        s += &format!("wrote {}\n", self.output);
        s
    }
}

/// Errors of fine-tuning (bad input: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Pare(#[from] crate::PareError),
    #[error("{0}")]
    Usage(String),
}

/// Loads every sample as a [1, C, H, W] f32 tensor at the load size.
fn load_samples(req: &FinetuneRequest, student: &Model) -> Result<Vec<Tensor>, FinetuneError> {
    let graph = student.proto.graph.as_ref().ok_or_else(|| {
        FinetuneError::Usage(format!("{}: model has no graph", req.student.display()))
    })?;
    let (h, w) = load_size(req.crop);
    let mut decls = input_decls(graph, &InputPins::new())?;
    if decls.len() != 1 {
        return Err(FinetuneError::Usage(format!(
            "{}: finetune supports models with one image input, this one has {}",
            req.student.display(),
            decls.len()
        )));
    }
    let name = decls[0].name.clone();
    let mut pins = InputPins::new();
    pins.insert(name, vec![1, 3, h, w]);
    decls = input_decls(graph, &pins)?;
    let mut pp = req.preprocess.clone();
    pp.resize = Some((h as usize, w as usize));
    let set = SampleSet::open(decls, &req.data, req.samples, pp)?;
    let mut out = Vec::with_capacity(set.len());
    for k in 0..set.len() {
        let s = set.load(k)?;
        let t = &s.tensors[0];
        let HostData::F32(v) = &t.data else {
            return Err(FinetuneError::Usage(format!(
                "{}: not float data",
                set.label(k)
            )));
        };
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        out.push(Tensor::from_slice(v).reshape(dims));
    }
    Ok(out)
}

fn load_size((h, w): (i64, i64)) -> (i64, i64) {
    (h + h / 7, w + w / 7)
}

/// A random crop (and a coin-flip horizontal flip) of each chosen sample, stacked.
fn train_batch(pool: &[Tensor], batch: usize, crop: (i64, i64), rng: &mut Rng) -> Tensor {
    let parts: Vec<Tensor> = (0..batch)
        .map(|_| {
            let x = &pool[rng.below(pool.len() as u64) as usize];
            let size = x.size();
            let (h, w) = (size[2], size[3]);
            let y0 = rng.below((h - crop.0 + 1).max(1) as u64) as i64;
            let x0 = rng.below((w - crop.1 + 1).max(1) as u64) as i64;
            let c = x.narrow(2, y0, crop.0).narrow(3, x0, crop.1);
            if rng.below(2) == 1 { c.flip([3]) } else { c }
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// Centre crops of the held-out samples, stacked.
fn eval_batch(held: &[Tensor], crop: (i64, i64)) -> Option<Tensor> {
    if held.is_empty() {
        return None;
    }
    let parts: Vec<Tensor> = held
        .iter()
        .map(|x| {
            let size = x.size();
            let y0 = (size[2] - crop.0).max(0) / 2;
            let x0 = (size[3] - crop.1).max(0) / 2;
            x.narrow(2, y0, crop.0).narrow(3, x0, crop.1)
        })
        .collect();
    Some(Tensor::cat(&parts, 0))
}

fn loss_of(loss: Loss, s: &Tensor, t: &Tensor) -> Tensor {
    match loss {
        Loss::Mse => (s - t).square().mean(Kind::Float),
        Loss::Kl => {
            let lt = t.log_softmax(-1, Kind::Float);
            let ls = s.log_softmax(-1, Kind::Float);
            (lt.exp() * (&lt - ls))
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float)
        }
    }
}

/// Fraction of rows whose arg-max over the last axis agree (top-1 agreement).
fn agreement(a: &Tensor, b: &Tensor) -> f64 {
    let n = a.size().iter().rev().skip(1).product::<i64>().max(1);
    let c = *a.size().last().unwrap_or(&1);
    let am = a.reshape([-1, c]).argmax(-1, false);
    let bm = b.reshape([-1, c]).argmax(-1, false);
    am.eq_tensor(&bm)
        .to_kind(Kind::Float)
        .sum(Kind::Float)
        .double_value(&[])
        / n as f64
}

/// Adam over the trainable initializers.
struct Adam {
    names: Vec<String>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
    lr: f64,
}

impl Adam {
    fn new(g: &mut TorchGraph, lr: f64) -> Self {
        let mut names: Vec<String> = g
            .params
            .iter()
            .filter(|(_, t)| t.numel() > 1)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        for n in &names {
            if let Some(p) = g.params.get_mut(n) {
                *p = p.set_requires_grad(true);
            }
        }
        let zeros = |n: &String| g.params[n].zeros_like();
        Adam {
            m: names.iter().map(zeros).collect(),
            v: names.iter().map(zeros).collect(),
            names,
            t: 0,
            lr,
        }
    }

    fn step(&mut self, g: &mut TorchGraph) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.t += 1;
        let bc1 = 1.0 - B1.powi(self.t);
        let bc2 = 1.0 - B2.powi(self.t);
        tch::no_grad(|| {
            for (k, n) in self.names.iter().enumerate() {
                let Some(p) = g.params.get_mut(n) else {
                    continue;
                };
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                self.m[k] = &self.m[k] * B1 + &grad * (1.0 - B1);
                self.v[k] = &self.v[k] * B2 + (&grad * &grad) * (1.0 - B2);
                let upd = (&self.m[k] / bc1) / ((&self.v[k] / bc2).sqrt() + 1e-8) * self.lr;
                let _ = p.g_sub_(&upd);
                p.zero_grad();
            }
        });
    }
}

fn first_output(g: &TorchGraph, x: &Tensor) -> Result<Tensor, FinetuneError> {
    let mut outs = g.forward(std::slice::from_ref(x))?;
    if outs.is_empty() {
        return Err(FinetuneError::Usage("the model has no outputs".into()));
    }
    Ok(outs.swap_remove(0))
}

fn held_out_agreement(
    teacher_out: &Option<Tensor>,
    student: &TorchGraph,
    x: &Option<Tensor>,
) -> Result<f64, FinetuneError> {
    match (teacher_out, x) {
        (Some(t), Some(x)) => {
            let s = tch::no_grad(|| first_output(student, x))?;
            Ok(agreement(&s, t))
        }
        _ => Ok(f64::NAN),
    }
}

/// Runs distillation and writes the student with its trained initializers.
pub fn finetune(req: &FinetuneRequest) -> Result<FinetuneReport, FinetuneError> {
    crate::report::check_output(Some(&req.student), &req.output)?;
    if req.batch == 0 || req.steps == 0 {
        return Err(FinetuneError::Usage(
            "--steps and --batch must be at least 1".into(),
        ));
    }
    let student_model = load_model(&req.student)?;
    let teacher = TorchGraph::new(&load_model(&req.teacher)?, req.device)?;
    let mut student = TorchGraph::new(&student_model, req.device)?;
    let all = load_samples(req, &student_model)?;
    let held_n = req.eval_samples.min(all.len().saturating_sub(1));
    let (pool, held) = all.split_at(all.len() - held_n);
    let pool: Vec<Tensor> = pool.iter().map(|t| t.to_device(req.device)).collect();
    let held: Vec<Tensor> = held.iter().map(|t| t.to_device(req.device)).collect();
    let eval_x = eval_batch(&held, req.crop);
    let eval_t = match &eval_x {
        Some(x) => Some(tch::no_grad(|| first_output(&teacher, x))?),
        None => None,
    };
    let before = held_out_agreement(&eval_t, &student, &eval_x)?;
    let mut opt = Adam::new(&mut student, req.lr);
    let mut rng = Rng::new(req.seed);
    tch::manual_seed(req.seed as i64);
    let start = Instant::now();
    let mut curve = Vec::new();
    for step in 1..=req.steps {
        let x = train_batch(&pool, req.batch, req.crop, &mut rng);
        let t = tch::no_grad(|| first_output(&teacher, &x))?;
        let s = first_output(&student, &x)?;
        let loss = loss_of(req.loss, &s, &t);
        loss.backward();
        opt.step(&mut student);
        let eval_now =
            (req.eval_every > 0 && step.is_multiple_of(req.eval_every)) || step == req.steps;
        let agreement = if eval_now {
            Some(held_out_agreement(&eval_t, &student, &eval_x)?)
        } else {
            None
        };
        curve.push(CurvePoint {
            step,
            seconds: start.elapsed().as_secs_f64(),
            loss: loss.double_value(&[]),
            agreement,
        });
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = held_out_agreement(&eval_t, &student, &eval_x)?;
    write_trained(&student_model, &student, req)?;
    let written = TorchGraph::new(&load_model(&req.output)?, req.device)?;
    let fidelity_written = held_out_agreement(&eval_t, &written, &eval_x)?;
    Ok(FinetuneReport {
        output: req.output.display().to_string(),
        steps: req.steps,
        seconds,
        loss_first: curve.first().map_or(f64::NAN, |p| p.loss),
        loss_last: curve.last().map_or(f64::NAN, |p| p.loss),
        train_samples: pool.len(),
        eval_samples: held.len(),
        fidelity_before: before,
        fidelity_after: after,
        fidelity_written,
        curve,
    })
}

/// The student's graph with its trained float initializers, written atomically.
fn write_trained(
    model: &Model,
    g: &TorchGraph,
    req: &FinetuneRequest,
) -> Result<(), FinetuneError> {
    let mut m = model.clone();
    let values: HashMap<&str, &Tensor> = g.params.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if let Some(graph) = m.proto.graph.as_mut() {
        for t in graph.initializer.iter_mut() {
            let is_f32 = t.data_type == Some(1);
            if let (true, Some(v)) = (is_f32, values.get(t.name())) {
                let flat = v.detach().to_device(Device::Cpu).flatten(0, -1);
                let data = Vec::<f32>::try_from(&flat)
                    .map_err(|e| FinetuneError::Exec(ExecError::Torch(e)))?;
                *t = f32_tensor(t.name(), &t.dims.clone(), &data);
            }
        }
    }
    m.external_tensors.clear();
    save_model(&m, &req.output, &SaveOptions::default())?;
    Ok(())
}
