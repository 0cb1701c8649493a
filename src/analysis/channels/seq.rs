//! Channel rules for sequence models: LayerNorm, attention heads (Reshape to heads, the
//! activation × activation products), Expand, and recurrent layers (LSTM / GRU / RNN).
//!
//! Attention heads become units by unifying: a Reshape that splits the channel axis
//! `[…, S·H·D]` into `[…, S, H, D]` ties every channel of one head (all `D` entries, and the
//! `S` copies of a fused q/k/v projection) into one class, and carries the head axis on. The
//! score and context products then tie the heads of q, k and v together, and the Reshape
//! that merges `[…, H, D]` back repeats each head over its `D` entries for the output
//! projection. Pruning such a group removes whole heads, and the head-count entries of the
//! Reshape targets are counts to rewrite.

use super::{Atom, Builder, CountMember, CountPlace, Layout, Role, SpaceKind, norm_axis};
use crate::model::proto::NodeProto;
use crate::model::shape::Dim;
use crate::model::tensor::DataType;
use crate::ops::ShapeFlow;

impl Builder<'_> {
    /// LayerNormalization over `axis..rank`.
    pub(super) fn layer_norm(&mut self, node: &NodeProto) {
        let x = node.input.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let Some(rank) = self.rank(&x) else {
            self.barrier(
                node,
                "input rank unknown, so the normalised axes are unknown",
            );
            return;
        };
        let start = norm_axis(node.attr_i("axis").unwrap_or(-1), rank);
        if l.axis + 1 == rank && start == l.axis {
            for (k, role) in [(1, Role::NormScale), (2, Role::NormBias)] {
                if let Some(t) = node.input.get(k).filter(|t| self.is_const(t)) {
                    let t = t.clone();
                    self.member(node, &t, 0, role, l.atoms.clone());
                }
            }
            // The statistics run over these channels: removing some changes the others.
            self.locks.push((
                l.atoms.clone(),
                format!(
                    "LayerNormalization '{}': normalises over the channel axis (a residual stream: \
                     every block and LayerNorm on it would have to shrink together)",
                    node.display_name()
                ),
            ));
        } else if l.axis >= start {
            self.barrier(node, "normalises over the channel axis and other axes");
            return;
        }
        if let Some(o) = node.output.first() {
            self.layouts.insert(o.clone(), l);
        }
    }

    /// Expand: the channel axis must keep its size (a broadcast of other axes).
    pub(super) fn expand(&mut self, node: &NodeProto) {
        let x = node.input.first().cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let Some(l) = self.layouts.get(&x).cloned() else {
            return;
        };
        let (Some(rx), Some(ro)) = (self.rank(&x), self.rank(&out)) else {
            self.barrier(node, "ranks unknown");
            return;
        };
        let axis = l.axis + ro.saturating_sub(rx);
        if self.dim(&out, axis) == Some(l.atoms.len() as i64) {
            self.layouts.insert(
                out,
                Layout {
                    axis,
                    atoms: l.atoms,
                },
            );
        } else {
            self.barrier(node, "broadcasts the channel axis");
        }
    }

    /// MatMul of two activations (attention scores, context): channels pass when both
    /// operands carry the same atoms count on the same batch axis (the head axis); any other
    /// channel position is contracted or mixed.
    pub(super) fn act_matmul(&mut self, node: &NodeProto) {
        let a = node.input.first().cloned().unwrap_or_default();
        let b = node.input.get(1).cloned().unwrap_or_default();
        let out = node.output.first().cloned().unwrap_or_default();
        let (la, lb) = (self.layouts.get(&a).cloned(), self.layouts.get(&b).cloned());
        if la.is_none() && lb.is_none() {
            return;
        }
        let ranks = (self.rank(&a), self.rank(&b), self.rank(&out));
        let aligned = |l: &Option<Layout>, r: Option<usize>, ro: usize| {
            l.as_ref()
                .zip(r)
                .and_then(|(l, r)| (l.axis + ro).checked_sub(r))
        };
        if let (Some(la), Some(lb), (ra, rb, Some(ro))) = (&la, &lb, ranks) {
            let (pa, pb) = (
                aligned(&Some(la.clone()), ra, ro),
                aligned(&Some(lb.clone()), rb, ro),
            );
            if pa.is_some()
                && pa == pb
                && pa < Some(ro.saturating_sub(2))
                && la.atoms.len() == lb.atoms.len()
                && self.dim(&a, la.axis) == self.dim(&b, lb.axis)
            {
                self.unify(&la.atoms, &lb.atoms);
                let axis = pa.unwrap_or_default();
                self.layouts.insert(
                    out,
                    Layout {
                        axis,
                        atoms: la.atoms.clone(),
                    },
                );
                return;
            }
        }
        self.barrier(
            node,
            "activation × activation product (attention-like) mixes channels: they are not on \
             a batch (head) axis of both operands",
        );
    }

    /// Splits the channel axis `[…, c]` at output axis `b` into `[…, S, H, D]`: ties each
    /// head's channels and returns the head axis with one atom per head, or `None` when the
    /// output dims from `b` on do not multiply to `c`.
    pub(super) fn split_heads(
        &mut self,
        out: &str,
        l: &Layout,
        os: &[Dim],
        b: usize,
    ) -> Option<(usize, Vec<Atom>)> {
        let c = l.atoms.len() as i64;
        let (mut prod, mut k) = (1i64, b);
        while k < os.len() && prod < c {
            prod = prod.checked_mul(os[k].known()?)?;
            k += 1;
        }
        if prod != c || k < b + 2 {
            return None;
        }
        let (d, h) = (os[k - 1].known()? as usize, os[k - 2].known()? as usize);
        if d == 0 || h == 0 {
            return None;
        }
        if k == b + 2 && self.swapped_next(out, b) {
            // Channel shuffle `[…, g, c/g]` → Transpose → `[…, c/g, g]` → merge: position a
            // of every group is one unit (pruned uniformly per group); the inner axis carries
            // the channels and the merge repeats each over the groups.
            for (i, &atom) in l.atoms.iter().enumerate() {
                self.dsu.union(atom, l.atoms[i % d]);
            }
            self.notes.push(format!(
                "channel shuffle at '{out}': groups are pruned uniformly ({h} groups of {d})"
            ));
            return Some((b + 1, l.atoms[..d].to_vec()));
        }
        for (i, &atom) in l.atoms.iter().enumerate() {
            let head = (i / d) % h;
            self.dsu.union(atom, l.atoms[head * d]);
        }
        let reps: Vec<Atom> = (0..h).map(|head| l.atoms[head * d]).collect();
        self.head_marks.push((reps[0], d));
        Some((k - 2, reps))
    }

    /// True when every reader of `t` is a Transpose swapping axes `b` and `b + 1` (and
    /// nothing else): the channel-shuffle pattern.
    fn swapped_next(&self, t: &str, b: usize) -> bool {
        let readers = self.a.index.consumers.get(t).map_or(&[][..], Vec::as_slice);
        !readers.is_empty()
            && readers.iter().all(|&n| {
                let node = &self.g.node[n];
                node.op_type() == "Transpose"
                    && node.attr_ints("perm").is_some_and(|p| {
                        p.iter().enumerate().all(|(i, &v)| {
                            let i = i as i64;
                            let b = b as i64;
                            if i == b {
                                v == b + 1
                            } else if i == b + 1 {
                                v == b
                            } else {
                                v == i
                            }
                        })
                    })
            })
    }

    /// The channel axis merged with input axes before it (`[T, B, D, H]` → `[T, B, D·H]`):
    /// the output axis and its atoms (the channel list tiled over the merged positions).
    pub(super) fn merge_preceding(
        &self,
        l: &Layout,
        xs: &[Dim],
        os: &[Dim],
    ) -> Option<(usize, Vec<Atom>)> {
        let ax = l.axis.min(xs.len());
        let c = l.atoms.len() as i64;
        let mut tile = 1i64;
        for j in (0..ax).rev() {
            tile = tile.checked_mul(xs[j].known()?)?;
            let Some(mut b) = super::prefix_end(&xs[..j], &xs[j..], os) else {
                continue;
            };
            while b < os.len() && os[b] == Dim::Known(1) && tile.saturating_mul(c) != 1 {
                b += 1;
            }
            let Some(ob) = os.get(b).and_then(Dim::known) else {
                continue;
            };
            // A corrupt shape must not make the analysis allocate per (absurd) channel.
            if ob > super::MAX_CHANNELS {
                return None;
            }
            let (mut rep, mut k) = (1i64, ax + 1);
            while tile.saturating_mul(c).saturating_mul(rep) < ob && k < xs.len() {
                rep = rep.saturating_mul(xs[k].known()?);
                k += 1;
            }
            if tile.saturating_mul(c).saturating_mul(rep) == ob {
                let atoms = (0..tile)
                    .flat_map(|_| {
                        l.atoms
                            .iter()
                            .flat_map(move |&a| std::iter::repeat_n(a, rep as usize))
                    })
                    .collect();
                return Some((b, atoms));
            }
        }
        None
    }

    /// A Reshape target entry computed at run time from some tensor's shape (PyTorch's
    /// `reshape(B, N, C)` with `B, N, C = x.shape` under dynamic axes) reads the size of *that*
    /// tensor, which need not shrink with this group (attention reads the residual width). When
    /// the entry is a piece of the Concat building the target, the rewrite gives the Concat a
    /// private constant with the kept count there (skipped when nothing is pruned).
    pub(super) fn pin_dynamic_entry(&mut self, shape: &str, index: usize, atoms: &[Atom]) {
        let Some(&p) = self.a.index.producer.get(shape) else {
            return;
        };
        let cat = &self.g.node[p];
        if super::shape_flow(cat) != ShapeFlow::Concat {
            return;
        }
        let mut off = 0usize;
        for (k, piece) in cat.input.iter().enumerate() {
            let Some(n) = self
                .shape(piece)
                .map(|s| s.iter().product::<i64>().max(1) as usize)
            else {
                return;
            };
            if index < off + n {
                let info = self.a.shapes.get(piece);
                let Some(base) = info.and_then(|i| i.int_values()).filter(|b| b.len() == n) else {
                    return;
                };
                let dtype = info.and_then(|i| i.dtype).unwrap_or(DataType::INT64);
                self.counts.push(CountMember {
                    node: cat.display_name(),
                    place: CountPlace::Input {
                        input: k,
                        index: index - off,
                        base: base.clone(),
                        stored: Some(base),
                        dtype: dtype.0,
                    },
                    atoms: atoms.to_vec(),
                });
                return;
            }
            off += n;
        }
    }

    /// LSTM / GRU / RNN (`gates` stacked gate blocks in W, R and B).
    pub(super) fn recurrent(&mut self, node: &NodeProto, gates: usize) {
        let name = node.display_name();
        let input = |k: usize| node.input.get(k).filter(|s| !s.is_empty()).cloned();
        let (x, w, r) = (
            input(0).unwrap_or_default(),
            input(1).unwrap_or_default(),
            input(2).unwrap_or_default(),
        );
        let hidden = node.attr_i("hidden_size").unwrap_or(0);
        let (Some(ws), Some(rs), true) = (
            self.shape(&w),
            self.shape(&r),
            self.is_const(&w) && self.is_const(&r),
        ) else {
            self.barrier(node, "W and R are not constant initializers");
            return;
        };
        let h = hidden.max(0) as usize;
        let g = gates as i64;
        if ws.len() != 3 || rs != [ws[0], g * hidden, hidden] || ws[1] != g * hidden || h == 0 {
            self.barrier(
                node,
                "W / R shapes do not match hidden_size and the gate count",
            );
            return;
        }
        if node.attr_i("layout").unwrap_or(0) != 0 {
            self.barrier(node, "batch-first layout (layout=1)");
            return;
        }
        let mut x_layout = self.layouts.get(&x).cloned();
        if x_layout
            .as_ref()
            .is_some_and(|l| l.axis != 2 || l.atoms.len() as i64 != ws[2])
        {
            // X's group locks; the hidden units are still this layer's own.
            let why = format!(
                "{} '{name}': input features are not on the last axis of X",
                node.op_type()
            );
            self.lock_tensor(&x, why);
            x_layout = None;
        }
        let y = node.output.first().cloned().unwrap_or_default();
        let units = self.new_space(&name, &y, h);
        self.mark_space(SpaceKind::Recurrent);
        let tiled =
            |n: usize| -> Vec<Atom> { (0..n).flat_map(|_| units.iter().copied()).collect() };
        self.member(node, &w, 1, Role::ProducerWeight, tiled(gates));
        self.member(node, &r, 1, Role::ProducerWeight, tiled(gates));
        self.member(node, &r, 2, Role::ConsumerWeight, units.clone());
        if let Some(l) = x_layout {
            self.member(node, &w, 2, Role::ConsumerWeight, l.atoms);
        }
        if let Some(bias) = input(3) {
            if !self.is_const(&bias) {
                self.barrier(node, "B is not a constant initializer");
                return;
            }
            self.member(node, &bias, 1, Role::ProducerBias, tiled(2 * gates));
        }
        if let Some(p) = input(7).filter(|_| gates == 4) {
            if !self.is_const(&p) {
                self.barrier(node, "peepholes P are not a constant initializer");
                return;
            }
            self.member(node, &p, 1, Role::ProducerWeight, tiled(3));
        }
        for k in [5, 6] {
            if let Some(state) = input(k) {
                self.initial_state(node, &state, &units);
            }
        }
        self.counts.push(CountMember {
            node: name,
            place: CountPlace::Attribute {
                attribute: "hidden_size".into(),
                index: 0,
            },
            atoms: units.clone(),
        });
        let outs: Vec<(String, usize)> = node
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
            .map(|(k, o)| (o.clone(), if k == 0 { 3 } else { 2 }))
            .collect();
        for (o, axis) in outs {
            self.layouts.insert(
                o,
                Layout {
                    axis,
                    atoms: units.clone(),
                },
            );
        }
    }

    /// An initial hidden or cell state `[D, B, H]`: a constant (or a constant broadcast over
    /// the batch by Expand, as PyTorch exports zero states) is sliced on its last axis; a
    /// traced tensor is tied; anything else locks.
    fn initial_state(&mut self, node: &NodeProto, state: &str, units: &[Atom]) {
        let h = units.len() as i64;
        let mut src = state.to_string();
        let mut expand = None;
        if !self.is_const(&src)
            && let Some(&p) = self.a.index.producer.get(&src)
            && self.g.node[p].op_type() == "Expand"
            && let Some(inner) = self.g.node[p].input.first()
            && self.is_const(inner)
        {
            src = inner.clone();
            expand = Some(p);
        }
        let last = self.shape(&src).and_then(|s| (s.len() == 3).then(|| s[2]));
        if self.is_const(&src) && last == Some(h) {
            self.member(node, &src, 2, Role::Elementwise, units.to_vec());
            // The Expand's target shape names the hidden size too.
            if let Some(p) = expand
                && let Some(shape) = self.g.node[p].input.get(1).cloned()
            {
                let g = self.g;
                self.count_at(&g.node[p], &shape, 2, units);
            }
        } else if let Some(l) = self.layouts.get(state).cloned().filter(|l| l.axis == 2) {
            self.unify(&l.atoms, units);
        } else if last != Some(1) {
            let reason = format!(
                "{} '{}': initial state '{state}' is neither constant nor traced",
                node.op_type(),
                node.display_name()
            );
            self.locks.push((units.to_vec(), reason));
        }
    }
}
