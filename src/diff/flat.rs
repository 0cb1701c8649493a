//! One model's nodes flattened across nested graphs (If branches, Loop/Scan bodies), each with
//! its scope, plus the lookups the matcher needs: who produces a tensor, which tensors are
//! weights (and their shapes, seen through `DequantizeLinear` so an INT8 weight has its float
//! node's shape), and which tensor a Q/DQ pair wraps.

use std::collections::HashMap;

use crate::model::proto::{GraphProto, NodeProto};

/// A node with where it lives.
pub struct FNode<'a> {
    pub node: &'a NodeProto,
    /// Empty for the main graph; `IfName/then_branch` (nested: joined by `/`) inside bodies.
    pub scope: String,
    /// Position in the main graph's topological order (main-graph nodes), else after them.
    pub order: usize,
}

impl FNode<'_> {
    pub fn name(&self) -> &str {
        self.node.name()
    }
    pub fn op(&self) -> &str {
        self.node.op_type()
    }
    pub fn is_qdq(&self) -> bool {
        matches!(self.op(), "QuantizeLinear" | "DequantizeLinear")
    }
}

/// A flattened model.
pub struct Flat<'a> {
    pub nodes: Vec<FNode<'a>>,
    /// Scope → tensor → producing node (borrowed names: lookups allocate nothing).
    pub producer: HashMap<String, HashMap<&'a str, usize>>,
    /// Scope → tensor → consuming nodes.
    pub consumers: HashMap<String, HashMap<&'a str, Vec<usize>>>,
    /// Initializer and `Constant` shapes by name (all scopes).
    pub weights: HashMap<&'a str, &'a [i64]>,
    /// Nodes of the main graph, in topological order.
    pub main: usize,
}

impl<'a> Flat<'a> {
    /// Flattens `g` (main graph in `topo` order, then nested graphs depth-first).
    pub fn new(g: &'a GraphProto, topo: &[usize]) -> Self {
        let mut f = Flat {
            nodes: Vec::with_capacity(g.node.len()),
            producer: HashMap::new(),
            consumers: HashMap::new(),
            weights: HashMap::new(),
            main: 0,
        };
        f.add_weights(g);
        for &i in topo {
            if let Some(n) = g.node.get(i) {
                f.push(n, String::new());
            }
        }
        f.main = f.nodes.len();
        for &i in topo {
            if let Some(n) = g.node.get(i) {
                f.add_bodies(n, "");
            }
        }
        f
    }

    fn add_weights(&mut self, g: &'a GraphProto) {
        for t in &g.initializer {
            self.weights.insert(t.name(), &t.dims);
        }
        for n in &g.node {
            if n.op_type() == "Constant"
                && let (Some(o), Some(t)) = (n.output.first(), n.attr_t("value"))
            {
                self.weights.insert(o, &t.dims);
            }
        }
    }

    fn push(&mut self, n: &'a NodeProto, scope: String) {
        let k = self.nodes.len();
        if !self.producer.contains_key(&scope) {
            self.producer.insert(scope.clone(), HashMap::new());
            self.consumers.insert(scope.clone(), HashMap::new());
        }
        if let Some(p) = self.producer.get_mut(&scope) {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                p.insert(o, k);
            }
        }
        if let Some(c) = self.consumers.get_mut(&scope) {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                c.entry(i).or_default().push(k);
            }
        }
        self.nodes.push(FNode {
            node: n,
            scope,
            order: k,
        });
    }

    fn add_bodies(&mut self, n: &'a NodeProto, parent: &str) {
        for (attr, body) in n.subgraphs() {
            let scope = if parent.is_empty() {
                format!("{}/{attr}", n.display_name())
            } else {
                format!("{parent}/{}/{attr}", n.display_name())
            };
            self.add_weights(body);
            for m in &body.node {
                self.push(m, scope.clone());
            }
            for m in &body.node {
                self.add_bodies(m, &scope);
            }
        }
    }

    /// The node producing `t` in `scope`.
    pub fn producer_of(&self, scope: &str, t: &str) -> Option<usize> {
        self.producer.get(scope)?.get(t).copied()
    }

    /// What `t` carries with Q/DQ pairs seen through: the tensor a `Q → DQ` pair wraps, the
    /// weight a `DequantizeLinear` dequantizes; `t` itself otherwise.
    pub fn unwrap_qdq<'s>(&'s self, scope: &str, t: &'s str) -> &'s str {
        let mut t = t;
        for _ in 0..4 {
            let Some(p) = self.producer_of(scope, t).map(|k| &self.nodes[k]) else {
                break;
            };
            if !p.is_qdq() {
                break;
            }
            match p.node.input.first() {
                Some(x) => t = x,
                None => break,
            }
        }
        t
    }

    /// The shape of input slot `slot` of node `k` when it is a weight (initializer or
    /// constant, possibly behind a `DequantizeLinear`).
    pub fn weight_shape(&self, k: usize, slot: usize) -> Option<&'a [i64]> {
        let n = &self.nodes[k];
        let t = n.node.input.get(slot)?;
        let t = self.unwrap_qdq(&n.scope, t);
        self.weights.get(t).copied()
    }

    /// Whether node `k` reads any input through a `DequantizeLinear`.
    pub fn reads_dq(&self, k: usize) -> bool {
        let n = &self.nodes[k];
        n.node.input.iter().any(|t| {
            self.producer_of(&n.scope, t)
                .is_some_and(|p| self.nodes[p].op() == "DequantizeLinear")
        })
    }

    /// The non-Q/DQ nodes feeding node `k` (Q/DQ pairs seen through), one per input slot.
    pub fn data_producers(&self, k: usize) -> Vec<Option<usize>> {
        let n = &self.nodes[k];
        n.node
            .input
            .iter()
            .map(|t| {
                let t = self.unwrap_qdq(&n.scope, t);
                self.producer_of(&n.scope, t)
            })
            .collect()
    }

    /// Nodes reading any output of node `k` (Q/DQ pairs seen through).
    pub fn data_consumers(&self, k: usize) -> Vec<usize> {
        let n = &self.nodes[k];
        let mut out = Vec::new();
        let mut stack: Vec<&str> = n.node.output.iter().map(String::as_str).collect();
        let mut hops = 0;
        let Some(scope) = self.consumers.get(&n.scope) else {
            return out;
        };
        while let Some(t) = stack.pop() {
            hops += 1;
            if hops > 64 {
                break;
            }
            for &c in scope.get(t).map(Vec::as_slice).unwrap_or_default() {
                if self.nodes[c].is_qdq() {
                    stack.extend(self.nodes[c].node.output.iter().map(String::as_str));
                } else if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}
