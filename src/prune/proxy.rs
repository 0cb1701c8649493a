//! A cheap stand-in for least-squares recovery inside a budget search.
//!
//! The search measures many candidates; running the real recovery (a pass over the samples
//! per consumer) on each is far too slow, and measuring candidates unrepaired (or only
//! bias-folded) misjudges them: a group whose channels the kept ones predict well looks
//! fragile although a fit restores it, and the search then prunes groups a fit cannot save.
//! Here the original model runs once and every 1x1 conv's (and pooled Gemm's) input second
//! moments E[[x;1][x;1]ᵀ] are kept (two folds by sample). For a candidate, each such consumer
//! is re-fitted in closed form from those moments: the ridge least squares of the original
//! consumer's output over the kept input channels, with the ridge chosen by two-fold
//! cross-validation as in the real recovery. Inputs come from the original model rather than
//! the pruned one (the real recovery also absorbs upstream errors), so this is a ranking
//! proxy, not the final repair. Other consumers (depthwise, kxk convs) are bias-folded.
//! Fits are cached per (consumer, kept inputs), so a candidate that changes one group costs
//! the solves of that group's consumers only.

use std::collections::HashMap;
use std::sync::Mutex;

use faer::prelude::Solve;
use faer::{Accum, Mat, MatRef, Par};

use super::Pruned;
use super::recover::{
    BiasFolder, CalibOptions, Consumer, FitContext, GroupSystem, LayerSystem, OpKind,
    RecoverOptions, choose_ridge, current_weights, find_consumers, layer_shape, open_samples,
    original_matrix, ridge_solve, variants, write_weights,
};
use crate::analysis::channels::ChannelAnalysis;
use crate::error::{PareError, Result};
use crate::jobs::Progress;
use crate::model::Analysis;
use crate::model::proto::ModelProto;
use crate::rng::Rng;
use crate::runtime::pool::{RunnerCache, for_each_sample};

/// Ridge strengths the proxy tries (a shorter grid than the real recovery's: it only ranks).
const GRID: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];

/// Cached fits older than this many `apply` calls are dropped (memory stays bounded: a round
/// of the search touches every group once).
const KEEP_GENERATIONS: u64 = 64;

/// Second moments of one tensor, per fold: `(C+1)×(C+1)`, the last index the constant 1.
type Moments = [Mat<f64>; 2];

/// The targets of one consumer per fold: `A·W` (moments times the original map) and `tr(WᵀAW)`.
struct Target {
    aw: [Mat<f64>; 2],
    yty: [f64; 2],
}

/// A fit's key: consumer node, kept inputs, kept outputs.
type FitKey = (usize, Vec<usize>, Vec<usize>);

#[derive(Default)]
struct Cache {
    generation: u64,
    /// Fits with the generation that last used them.
    fits: HashMap<FitKey, (u64, Option<Mat<f64>>)>,
    targets: HashMap<(usize, Vec<usize>), std::sync::Arc<Target>>,
}

pub struct LsqProxy {
    /// How many samples the search may measure on: the proxy fits on the others, so a
    /// candidate is judged out of sample, as the real recovery will be (in-sample, wide
    /// layers look restorable that are not).
    pub search_samples: usize,
    moments: HashMap<String, Moments>,
    folder: BiasFolder,
    cache: Mutex<Cache>,
}

/// The tensor whose moments a consumer's proxy fit needs: a 1x1 conv's input (group 1), a
/// pooled Gemm/MatMul's pre-pool tensor; `None` for the rest.
fn moment_tensor(c: &Consumer, groups: usize) -> Option<&str> {
    if c.no_lsq.is_some() {
        return None;
    }
    match &c.kind {
        OpKind::Conv(g) if g.kernel == [1, 1] && groups == 1 => Some(&c.input),
        OpKind::Conv(_) => None,
        _ => c.pooled.as_deref(),
    }
}

/// Every tensor a proxy fit may need on `a` (any group pruned): the consumers when every
/// channel group is cut.
fn tensors(a: &Analysis, ca: &ChannelAnalysis) -> Vec<String> {
    let none = vec![false; ca.atom_group.len()];
    let mut out: Vec<String> = Vec::new();
    for c in find_consumers(a, ca, &none) {
        let groups = a.graph().node[c.node].attr_i("group").unwrap_or(1).max(1) as usize;
        if let Some(t) = moment_tensor(&c, groups)
            && !out.iter().any(|x| x == t)
            && !a.index.inputs.iter().any(|x| x == t)
        {
            out.push(t.to_string());
        }
    }
    out
}

/// Adds `P` sampled positions of `t` (`[N, C, ...]`) as rows `[x;1]` to `acc` (XᵀX).
fn add_rows(acc: &mut Mat<f64>, t: &crate::runtime::HostTensor, positions: usize, rng: &mut Rng) {
    let (Some(&n), Some(&ch)) = (t.shape.first(), t.shape.get(1)) else {
        return;
    };
    if ch + 1 != acc.nrows() {
        return;
    }
    let inner: usize = t.shape[2..].iter().product::<usize>().max(1);
    let v = t.to_f64();
    let mut pos = Vec::new();
    for b in 0..n {
        let mut all: Vec<usize> = (0..inner).collect();
        if inner > positions {
            for i in 0..positions {
                let j = i + rng.below((inner - i) as u64) as usize;
                all.swap(i, j);
            }
            all.truncate(positions);
        }
        pos.extend(all.into_iter().map(|q| (b, q)));
    }
    let x = Mat::from_fn(pos.len(), ch + 1, |r, j| {
        let (b, q) = pos[r];
        if j == ch {
            1.0
        } else {
            v.get((b * ch + j) * inner + q).copied().unwrap_or(0.0)
        }
    });
    faer::linalg::matmul::matmul(
        acc.as_mut(),
        Accum::Add,
        x.transpose(),
        x.as_ref(),
        1.0,
        Par::Seq,
    );
}

impl LsqProxy {
    /// One pass of the original model over the fit part of `opts`, keeping the moments of
    /// every tensor a proxy fit may need (and the channel means for bias folding).
    /// `search` is the budget search's (holdout, most samples): the search gets half of the
    /// fit samples at most, the proxy the rest.
    pub fn new(
        a: &Analysis,
        opts: &CalibOptions,
        search: (f64, usize),
        progress: &dyn Progress,
    ) -> Result<Self> {
        let folder = BiasFolder::new(a, opts, progress)?;
        let ca = crate::analysis::channels::analyze_channels(a);
        let names = tensors(a, &ca);
        let set = open_samples(a, &opts.data)?;
        let all_fit = crate::fidelity::holdout(set.len(), search.0).fit;
        let search_samples = search.1.min(all_fit.len() / 2).max(1);
        let measured = super::sensitivity::search_indices(&all_fit, search_samples);
        let fit: Vec<usize> = all_fit
            .iter()
            .copied()
            .filter(|i| !measured.contains(i))
            .collect();
        let ropts = RecoverOptions {
            engine: opts.data.engine.resolve()?,
            ..opts.recover.clone()
        };
        let cx = FitContext {
            set: &set,
            fit: &fit,
            opts: &ropts,
            progress,
        };
        let moments = if names.is_empty() {
            HashMap::new()
        } else {
            progress.phase("moments for the search", Some(cx.fit.len() as u64));
            moments(a, &names, &cx)?
        };
        Ok(LsqProxy {
            search_samples,
            moments,
            folder,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// `p`'s model with every consumer of a pruned channel re-fitted from the moments (or
    /// bias-folded where no moments apply).
    pub fn apply(&self, a: &Analysis, p: &Pruned) -> Result<ModelProto> {
        let keep = super::rewrite::kept_atoms(&p.channels, &p.plan);
        let mut m = p.model.proto.clone();
        let generation = {
            let mut c = self.cache.lock().map_err(|_| poisoned())?;
            c.generation += 1;
            let g = c.generation;
            c.fits.retain(|_, (used, _)| *used + KEEP_GENERATIONS >= g);
            g
        };
        for c in find_consumers(a, &p.channels, &keep) {
            let fitted = match self.fit(a, &m, &c, generation) {
                Ok(f) => f,
                Err(PareError::Cancelled) => return Err(PareError::Cancelled),
                Err(_) => None,
            };
            match fitted {
                Some(w) => {
                    let node = &m.graph.as_ref().ok_or_else(no_graph)?.node[c.node];
                    let s = layer_shape(&c, node);
                    write_weights(&mut m, &c, &s, std::slice::from_ref(&w))?;
                }
                None => self.folder.fold(a, &mut m, &c)?,
            }
        }
        Ok(m)
    }

    /// The proxy fit of one consumer (cached), `None` when it does not apply or loses to the
    /// pruned weights.
    fn fit(
        &self,
        a: &Analysis,
        m: &ModelProto,
        c: &Consumer,
        generation: u64,
    ) -> Result<Option<Mat<f64>>> {
        let node = &m.graph.as_ref().ok_or_else(no_graph)?.node[c.node];
        let s = layer_shape(c, node);
        let Some(mo) = moment_tensor(c, s.groups).and_then(|t| self.moments.get(t)) else {
            return Ok(None);
        };
        let key = (c.node, c.kept_in.clone(), c.kept_out.clone());
        {
            let mut cache = self.cache.lock().map_err(|_| poisoned())?;
            if let Some((used, w)) = cache.fits.get_mut(&key) {
                *used = generation;
                return Ok(w.clone());
            }
        }
        let target = self.target(a, c, mo)?;
        let w0 = current_weights(m, c, &s)?;
        let mut idx = c.kept_in.clone();
        if s.intercept {
            idx.push(c.total_in);
        }
        let rows = mo[0][(c.total_in, c.total_in)] + mo[1][(c.total_in, c.total_in)];
        if mo[0].nrows() != c.total_in + 1 || rows < idx.len() as f64 {
            return Ok(None);
        }
        let sys = LayerSystem {
            groups: vec![[0, 1].map(|f| GroupSystem {
                xtx: Mat::from_fn(idx.len(), idx.len(), |i, j| mo[f][(idx[i], idx[j])]),
                xty: Mat::from_fn(idx.len(), target.aw[f].ncols(), |i, j| {
                    target.aw[f][(idx[i], j)]
                }),
                yty: target.yty[f],
            })],
            rows: rows as u64,
        };
        let (ridge, _) = choose_ridge(&sys, &w0, s.intercept, &GRID);
        let w = ridge.and_then(|l| {
            let gs = GroupSystem::sum(&sys.groups[0][0], &sys.groups[0][1]);
            ridge_solve(
                gs.xtx.as_ref(),
                gs.xty.as_ref(),
                Some(w0[0].as_ref()),
                l,
                s.intercept,
            )
        });
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        cache.fits.insert(key, (generation, w.clone()));
        Ok(w)
    }

    /// `A·W` and `tr(WᵀAW)` of a consumer per fold (cached: they do not depend on the kept
    /// inputs).
    fn target(&self, a: &Analysis, c: &Consumer, mo: &Moments) -> Result<std::sync::Arc<Target>> {
        let key = (c.node, c.kept_out.clone());
        if let Some(t) = self.cache.lock().map_err(|_| poisoned())?.targets.get(&key) {
            return Ok(t.clone());
        }
        let w = original_matrix(&a.model.proto, c)?;
        let aw = [0, 1].map(|f| &mo[f] * &w);
        let yty = [0, 1].map(|f| trace_product(w.as_ref(), aw[f].as_ref()));
        let t = std::sync::Arc::new(Target { aw, yty });
        self.cache
            .lock()
            .map_err(|_| poisoned())?
            .targets
            .insert(key, t.clone());
        Ok(t)
    }
}

impl LsqProxy {
    /// Refit-aware channel scores for groups with exactly one re-fittable consumer (a 1x1
    /// conv or pooled Gemm whose input channels are the group's units): the order of a greedy
    /// least-squares elimination on that consumer's input moments, so the channels the
    /// others predict best go first (score = elimination step; higher = keep). Weight or
    /// activation size says nothing about redundancy, and redundancy is what a re-fit uses.
    pub fn refit_scores(
        &self,
        a: &Analysis,
        ca: &ChannelAnalysis,
    ) -> Result<HashMap<usize, Vec<f64>>> {
        let mut by_group: HashMap<usize, Vec<(Consumer, Vec<usize>)>> = HashMap::new();
        // Per group, the consumers when only that group is cut (their outputs whole).
        let cut_alone = |g: usize| -> Vec<bool> { ca.atom_group.iter().map(|&x| x != g).collect() };
        let consumers = (0..ca.groups.len()).flat_map(|g| find_consumers(a, ca, &cut_alone(g)));
        for c in consumers {
            let groups = a.graph().node[c.node].attr_i("group").unwrap_or(1).max(1) as usize;
            let Some(t) = moment_tensor(&c, groups) else {
                continue;
            };
            let Some(l) = ca.layouts.get(t) else {
                continue;
            };
            let Some(&g) = l.atoms.first().map(|&x| &ca.atom_group[x as usize]) else {
                continue;
            };
            let units: Vec<usize> = l.atoms.iter().map(|&x| ca.atom_unit[x as usize]).collect();
            let one_group = l.atoms.iter().all(|&x| ca.atom_group[x as usize] == g);
            let mut sorted = units.clone();
            sorted.sort_unstable();
            let bijective = sorted.iter().enumerate().all(|(i, &u)| i == u)
                && units.len() == ca.groups[g].channels;
            if one_group && bijective && self.moments.contains_key(t) {
                by_group.entry(g).or_default().push((c, units));
            }
        }
        let mut out = HashMap::new();
        for (g, cs) in by_group {
            let [(c, units)] = &cs[..] else {
                continue;
            };
            let t = moment_tensor(c, 1).unwrap_or(&c.input);
            let Some(mo) = self.moments.get(t) else {
                continue;
            };
            let Ok(w) = original_matrix(&a.model.proto, c) else {
                continue;
            };
            let order = elimination_order(&(&mo[0] + &mo[1]), &w);
            let mut scores = vec![0.0; units.len()];
            for (ch, &u) in units.iter().enumerate() {
                scores[u] = order.get(ch).copied().unwrap_or(0.0);
            }
            out.insert(g, scores);
        }
        Ok(out)
    }
}

/// Greedy backward elimination for the regression of `Y = X·W` on `X` (moments `s` =
/// XᵀX with the constant last, always kept): each step drops the input whose removal raises
/// the residual least (`‖bⱼ‖² / Pⱼⱼ` with P the inverse moments of the kept set and b the
/// current coefficients) and downdates P and b. Returns, per input, the step it was dropped
/// at (the last survivor scores highest).
fn elimination_order(s: &Mat<f64>, w: &Mat<f64>) -> Vec<f64> {
    let n = s.nrows();
    let k = n.saturating_sub(1);
    if k == 0 || w.nrows() != n {
        return vec![0.0; k];
    }
    let mean_diag = (0..k).map(|i| s[(i, i)]).sum::<f64>() / k as f64;
    let mut reg = s.clone();
    for i in 0..k {
        reg[(i, i)] += 1e-4 * mean_diag.max(1e-12);
    }
    reg[(k, k)] += 1e-12 * (1.0 + reg[(k, k)]);
    let Ok(llt) = reg.as_ref().llt(faer::Side::Lower) else {
        return vec![0.0; k];
    };
    let mut p: Mat<f64> = llt.solve(Mat::<f64>::identity(n, n));
    // The ridge coefficients of the full set (W itself is optimal only up to the ridge, and
    // not the minimum-norm choice where inputs are collinear).
    let sw = s * w;
    let mut b: Mat<f64> = &p * &sw;
    let mut alive = vec![true; n];
    let mut order = vec![0.0; k];
    for step in 0..k {
        let cost = |j: usize| -> f64 {
            let bj: f64 = (0..b.ncols()).map(|o| b[(j, o)] * b[(j, o)]).sum();
            bj / p[(j, j)].max(1e-300)
        };
        let Some(j) = (0..k)
            .filter(|&j| alive[j])
            .min_by(|&x, &y| cost(x).total_cmp(&cost(y)))
        else {
            break;
        };
        order[j] = step as f64;
        alive[j] = false;
        let pjj = p[(j, j)];
        if pjj.abs() < 1e-300 {
            continue;
        }
        let live: Vec<usize> = (0..n).filter(|&i| alive[i]).collect();
        let pj: Vec<f64> = (0..n).map(|i| p[(i, j)]).collect();
        let bjr: Vec<f64> = (0..b.ncols()).map(|o| b[(j, o)]).collect();
        for &x in &live {
            let f = pj[x] / pjj;
            for &y in &live {
                p[(x, y)] -= f * pj[y];
            }
            for (o, bj) in bjr.iter().enumerate() {
                b[(x, o)] -= f * bj;
            }
        }
    }
    order
}

/// `Σ w ∘ aw` = tr(Wᵀ A W).
fn trace_product(w: MatRef<'_, f64>, aw: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..w.ncols() {
        for i in 0..w.nrows() {
            s += w[(i, j)] * aw[(i, j)];
        }
    }
    s
}

/// Second moments of `names` (channel axis 1) on the original model over the fit samples,
/// sample `k` of the fit list into fold `k % 2`.
fn moments(a: &Analysis, names: &[String], cx: &FitContext) -> Result<HashMap<String, Moments>> {
    let cache = RunnerCache::watching(a.model.proto.clone(), names.to_vec(), "search moments")
        .on(cx.opts.engine, cx.opts.threads);
    let widths: Vec<usize> = names
        .iter()
        .map(|n| a.shapes.static_shape(n).and_then(|s| s.get(1).copied()))
        .map(|c| c.unwrap_or(0).max(0) as usize + 1)
        .collect();
    let acc: Mutex<Vec<Moments>> = Mutex::new(
        widths
            .iter()
            .map(|&w| [Mat::zeros(w, w), Mat::zeros(w, w)])
            .collect(),
    );
    for_each_sample(
        &cache,
        cx.set,
        cx.fit,
        cx.opts.threads,
        cx.progress,
        0,
        |sample, r| {
            let fold = cx.fit.iter().position(|&i| i == sample.index).unwrap_or(0) % 2;
            let variants = variants(&sample.tensors, cx.opts);
            for (v, inputs) in variants.iter().enumerate() {
                let outs = r.run(inputs)?;
                let mut rng =
                    Rng::new(cx.opts.seed ^ ((sample.index as u64) << 20) ^ ((v as u64) << 40));
                let mut acc = acc.lock().map_err(|_| poisoned())?;
                for (t, m) in outs.iter().zip(acc.iter_mut()) {
                    add_rows(&mut m[fold], t, cx.opts.positions, &mut rng);
                }
            }
            Ok(())
        },
    )?;
    let acc = acc.into_inner().map_err(|_| poisoned())?;
    Ok(names.iter().cloned().zip(acc).collect())
}

fn poisoned() -> PareError {
    PareError::Runtime("search proxy: a worker thread failed".into())
}

fn no_graph() -> PareError {
    PareError::InvalidModel("no graph".into())
}
