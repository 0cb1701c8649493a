//! The node tree: nodes grouped by name scope (`/layer1/layer1.0/conv1/Conv`) or by the
//! exporter's `namespace` metadata, in execution order. Scopes with more than [`CHUNK`]
//! children are split into numbered sub-groups, and runs of `Constant` nodes fold into one
//! collapsed group, so no level ever lists thousands of rows (Model Explorer caps at 400).

use std::collections::HashMap;

/// Most children one scope lists before it is split into sub-groups.
pub const CHUNK: usize = 200;

/// A tree item: a scope or a node (index into the graph's nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    Scope(usize),
    Node(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    Root,
    /// A module scope from node names or metadata.
    Named,
    /// An artificial sub-group of a large scope.
    Chunk,
    /// The Constant nodes of a scope.
    Constants,
}

#[derive(Clone, Debug)]
pub struct Scope {
    pub label: String,
    /// Module class from the exporter's metadata (`torchvision.models.resnet.BasicBlock`).
    pub class: Option<String>,
    pub kind: ScopeKind,
    pub parent: Option<usize>,
    pub children: Vec<Item>,
    pub depth: usize,
    pub expanded: bool,
    /// Nodes below this scope.
    pub count: usize,
    /// Glob matching exactly the nodes below, when names carry the scope (`/layer1/*`).
    pub pattern: Option<String>,
}

/// One visible row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub item: Item,
    pub depth: u16,
}

/// Where a node sits: its scope path and its own short name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// Scope segments with the module class when known.
    pub scopes: Vec<(String, Option<String>)>,
    /// Whether the node name itself carries the scope (`/a/b/Conv`), so `/a/b/*` globs it.
    pub from_name: bool,
    pub leaf: String,
}

/// Scope path of a node: the `/`-separated node name of the classic exporter
/// (`/layer1/layer1.0/conv1/Conv`), else the metadata `namespace` of the dynamo exporter
/// (`: Net/encoder: Encoder/encoder.layer1: Sequential/conv2d: aten.conv2d`).
pub fn placement(name: &str, namespace: Option<&str>) -> Placement {
    let slash_scoped = name.starts_with('/') && name[1..].contains('/');
    if let Some(ns) = namespace.filter(|s| !s.trim().is_empty() && !slash_scoped) {
        let dynamo = ns.contains(':');
        let mut scopes: Vec<(String, Option<String>)> = ns
            .split('/')
            .map(|seg| match seg.split_once(':') {
                Some((n, c)) => (n.trim().to_string(), Some(c.trim().to_string())),
                None => (seg.trim().to_string(), None),
            })
            .collect();
        // In dynamo namespaces the last segment is the op itself (`conv2d_2: aten.conv2d`).
        if dynamo {
            scopes.pop();
        }
        scopes.retain(|(n, _)| !n.is_empty());
        let leaf = name
            .rsplit('/')
            .next()
            .filter(|l| !l.is_empty())
            .unwrap_or(name)
            .to_string();
        return Placement {
            scopes,
            from_name: false,
            leaf,
        };
    }
    if let Some(rest) = name.strip_prefix('/') {
        let mut segs: Vec<&str> = rest.split('/').collect();
        if segs.len() >= 2 && segs.iter().all(|s| !s.is_empty()) {
            let leaf = segs.pop().unwrap_or_default().to_string();
            return Placement {
                scopes: segs.into_iter().map(|s| (s.to_string(), None)).collect(),
                from_name: true,
                leaf,
            };
        }
    }
    Placement {
        scopes: Vec::new(),
        from_name: false,
        leaf: name.to_string(),
    }
}

/// Shortens a scope segment against its parent's: `layer1.0` under `layer1` is `0`.
fn short_label(seg: &str, parent: Option<&str>) -> String {
    if let Some(rest) = parent
        .and_then(|p| seg.strip_prefix(p))
        .and_then(|r| r.strip_prefix('.'))
        && !rest.is_empty()
    {
        return rest.to_string();
    }
    seg.to_string()
}

#[derive(Clone, Debug)]
pub struct Tree {
    pub scopes: Vec<Scope>,
    /// Scope directly holding each node.
    pub node_scope: Vec<usize>,
    /// Label of a one-node scope folded into its node (`conv1` for `/layer1/conv1/Conv`).
    pub lifted: Vec<Option<String>>,
    pub rows: Vec<Row>,
}

impl Tree {
    /// Builds the tree. `order` is the nodes in execution order; `placements[i]` and
    /// `is_constant[i]` describe node `i`.
    pub fn build(order: &[usize], placements: &[Placement], is_constant: &[bool]) -> Self {
        let n = placements.len();
        let mut scopes = vec![Scope {
            label: String::new(),
            class: None,
            kind: ScopeKind::Root,
            parent: None,
            children: Vec::new(),
            depth: 0,
            expanded: true,
            count: 0,
            pattern: None,
        }];
        let mut child_of: HashMap<(usize, String), usize> = HashMap::new();
        let mut node_scope = vec![0usize; n];
        for &i in order {
            let p = &placements[i];
            let mut at = 0usize;
            let mut raw_parent: Option<String> = None;
            let mut path = String::new();
            for (seg, class) in &p.scopes {
                path.push('/');
                path.push_str(seg);
                let key = (at, seg.clone());
                let next = match child_of.get(&key) {
                    Some(&s) => s,
                    None => {
                        let id = scopes.len();
                        scopes.push(Scope {
                            label: short_label(seg, raw_parent.as_deref()),
                            class: class.clone(),
                            kind: ScopeKind::Named,
                            parent: Some(at),
                            children: Vec::new(),
                            depth: scopes[at].depth + 1,
                            expanded: false,
                            count: 0,
                            pattern: p.from_name.then(|| format!("{path}/*")),
                        });
                        scopes[at].children.push(Item::Scope(id));
                        child_of.insert(key, id);
                        id
                    }
                };
                // A scope whose nodes do not all carry its name prefix cannot be globbed.
                if !p.from_name {
                    scopes[next].pattern = None;
                }
                raw_parent = Some(seg.clone());
                at = next;
            }
            scopes[at].children.push(Item::Node(i));
            node_scope[i] = at;
        }
        let mut tree = Tree {
            scopes,
            node_scope,
            lifted: vec![None; n],
            rows: Vec::new(),
        };
        tree.lift_singletons();
        tree.fold_constants(is_constant);
        tree.split_large();
        tree.count();
        tree.rows = tree.flatten();
        tree
    }

    fn new_scope(&mut self, label: String, kind: ScopeKind, parent: usize) -> usize {
        let id = self.scopes.len();
        self.scopes.push(Scope {
            label,
            class: None,
            kind,
            parent: Some(parent),
            children: Vec::new(),
            depth: self.scopes[parent].depth + 1,
            expanded: false,
            count: 0,
            pattern: None,
        });
        id
    }

    /// A scope holding exactly one node (the usual `/…/conv1/Conv`) shows as that node.
    fn lift_singletons(&mut self) {
        for s in (1..self.scopes.len()).rev() {
            let only = match self.scopes[s].children.as_slice() {
                [Item::Node(i)] => *i,
                _ => continue,
            };
            let Some(parent) = self.scopes[s].parent else {
                continue;
            };
            let label = match &self.lifted[only] {
                Some(l) => format!("{}/{l}", self.scopes[s].label),
                None => self.scopes[s].label.clone(),
            };
            self.lifted[only] = Some(label);
            self.scopes[s].children.clear();
            self.node_scope[only] = parent;
            if let Some(slot) = self.scopes[parent]
                .children
                .iter_mut()
                .find(|c| **c == Item::Scope(s))
            {
                *slot = Item::Node(only);
            }
        }
    }

    fn fold_constants(&mut self, is_constant: &[bool]) {
        for s in 0..self.scopes.len() {
            let consts = self.scopes[s]
                .children
                .iter()
                .filter(|c| matches!(c, Item::Node(i) if is_constant[*i]))
                .count();
            if consts < 3 || consts == self.scopes[s].children.len() && s != 0 {
                continue;
            }
            let id = self.new_scope(format!("{consts} constants"), ScopeKind::Constants, s);
            let children = std::mem::take(&mut self.scopes[s].children);
            let mut placed = false;
            let mut kept = Vec::with_capacity(children.len());
            for c in children {
                match c {
                    Item::Node(i) if is_constant[i] => {
                        self.scopes[id].children.push(c);
                        self.node_scope[i] = id;
                        if !placed {
                            kept.push(Item::Scope(id));
                            placed = true;
                        }
                    }
                    _ => kept.push(c),
                }
            }
            self.scopes[s].children = kept;
        }
    }

    fn split_large(&mut self) {
        let mut s = 0;
        while s < self.scopes.len() {
            while self.scopes[s].children.len() > CHUNK {
                let children = std::mem::take(&mut self.scopes[s].children);
                let per = children.len().div_ceil(CHUNK).max(1);
                // Chunks of CHUNK items each; more than CHUNK chunks nest again next round.
                let size = if per > CHUNK {
                    children.len().div_ceil(CHUNK)
                } else {
                    CHUNK
                };
                let mut kept = Vec::new();
                let mut start = 0;
                for part in children.chunks(size) {
                    let label = format!("[{}–{}]", start + 1, start + part.len());
                    start += part.len();
                    let id = self.new_scope(label, ScopeKind::Chunk, s);
                    for c in part {
                        match *c {
                            Item::Node(i) => self.node_scope[i] = id,
                            Item::Scope(k) => self.scopes[k].parent = Some(id),
                        }
                    }
                    self.scopes[id].children = part.to_vec();
                    kept.push(Item::Scope(id));
                }
                self.scopes[s].children = kept;
            }
            s += 1;
        }
        // Depths changed where chunks were inserted.
        let mut stack = vec![0usize];
        while let Some(s) = stack.pop() {
            let d = self.scopes[s].depth;
            let kids: Vec<usize> = self.scopes[s]
                .children
                .iter()
                .filter_map(|c| {
                    if let Item::Scope(k) = c {
                        Some(*k)
                    } else {
                        None
                    }
                })
                .collect();
            for k in kids {
                self.scopes[k].depth = d + 1;
                stack.push(k);
            }
        }
    }

    fn count(&mut self) {
        // Children always have larger ids than parents except chunks; do a post-order walk.
        let mut order = Vec::new();
        let mut stack = vec![0usize];
        while let Some(s) = stack.pop() {
            order.push(s);
            for c in &self.scopes[s].children {
                if let Item::Scope(k) = c {
                    stack.push(*k);
                }
            }
        }
        for &s in order.iter().rev() {
            let mut n = 0;
            for c in &self.scopes[s].children {
                n += match c {
                    Item::Node(_) => 1,
                    Item::Scope(k) => self.scopes[*k].count,
                };
            }
            self.scopes[s].count = n;
        }
    }

    /// Opens scopes breadth-first while the visible rows stay under `budget`.
    pub fn expand_to_fit(&mut self, budget: usize) {
        let mut visible = self.scopes[0].children.len();
        let mut frontier: Vec<usize> = self.scopes[0]
            .children
            .iter()
            .filter_map(|c| {
                if let Item::Scope(k) = c {
                    Some(*k)
                } else {
                    None
                }
            })
            .collect();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for s in frontier {
                if self.scopes[s].kind == ScopeKind::Constants {
                    continue;
                }
                let add = self.scopes[s].children.len();
                if visible + add > budget {
                    self.open_first_if_sparse();
                    self.rows = self.flatten();
                    return;
                }
                visible += add;
                self.scopes[s].expanded = true;
                next.extend(self.scopes[s].children.iter().filter_map(|c| {
                    if let Item::Scope(k) = c {
                        Some(*k)
                    } else {
                        None
                    }
                }));
            }
            frontier = next;
        }
        self.open_first_if_sparse();
        self.rows = self.flatten();
    }

    /// When the top level shows only a handful of rows (a big flat model split into chunks),
    /// opens the first scope at each level so the first screen shows nodes, not just folders.
    fn open_first_if_sparse(&mut self) {
        let mut at = 0usize;
        for _ in 0..4 {
            if self.flatten().len() >= 8 {
                return;
            }
            let first = self.scopes[at].children.iter().find_map(|c| match c {
                Item::Scope(k) if self.scopes[*k].kind != ScopeKind::Constants => Some(*k),
                _ => None,
            });
            let Some(k) = first else { return };
            self.scopes[k].expanded = true;
            at = k;
        }
    }

    /// The visible rows.
    pub fn flatten(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut stack: Vec<(Item, u16)> = self.scopes[0]
            .children
            .iter()
            .rev()
            .map(|c| (*c, 0u16))
            .collect();
        while let Some((item, depth)) = stack.pop() {
            rows.push(Row { item, depth });
            if let Item::Scope(s) = item
                && self.scopes[s].expanded
            {
                for c in self.scopes[s].children.iter().rev() {
                    stack.push((*c, depth + 1));
                }
            }
        }
        rows
    }

    pub fn refresh(&mut self) {
        self.rows = self.flatten();
    }

    /// Expands every scope above `node` and returns its row.
    pub fn reveal(&mut self, node: usize) -> Option<usize> {
        let mut s = Some(self.node_scope[node]);
        let mut changed = false;
        while let Some(k) = s {
            if k != 0 && !self.scopes[k].expanded {
                self.scopes[k].expanded = true;
                changed = true;
            }
            s = self.scopes[k].parent;
        }
        if changed {
            self.refresh();
        }
        self.rows.iter().position(|r| r.item == Item::Node(node))
    }

    /// Every node below a scope, in tree order.
    pub fn nodes_under(&self, scope: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<Item> = self.scopes[scope].children.iter().rev().copied().collect();
        while let Some(it) = stack.pop() {
            match it {
                Item::Node(i) => out.push(i),
                Item::Scope(k) => stack.extend(self.scopes[k].children.iter().rev().copied()),
            }
        }
        out
    }

    /// Sets `expanded` on a scope and everything below it.
    pub fn set_expanded_below(&mut self, scope: usize, on: bool) {
        let mut stack = vec![scope];
        while let Some(s) = stack.pop() {
            if s != 0 {
                self.scopes[s].expanded = on;
            }
            for c in &self.scopes[s].children {
                if let Item::Scope(k) = c {
                    stack.push(*k);
                }
            }
        }
        self.refresh();
    }

    /// Slash path of a scope for messages (`/layer1/0`).
    pub fn scope_path(&self, scope: usize) -> String {
        let mut parts = Vec::new();
        let mut s = Some(scope);
        while let Some(k) = s {
            if k != 0 {
                parts.push(self.scopes[k].label.clone());
            }
            s = self.scopes[k].parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements() {
        let p = placement("/layer1/layer1.0/conv1/Conv", None);
        assert_eq!(p.scopes.len(), 3);
        assert_eq!(p.leaf, "Conv");
        assert!(p.from_name);
        let p = placement(
            "node_Conv_3",
            Some(
                ": m.PSPNet/encoder: m.ResNetEncoder/encoder.layer1: S/conv2d_2: aten.conv2d.default",
            ),
        );
        assert_eq!(
            p.scopes.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            vec!["encoder", "encoder.layer1"]
        );
        assert_eq!(p.scopes[0].1.as_deref(), Some("m.ResNetEncoder"));
        assert_eq!(placement("plain", None).scopes.len(), 0);
    }

    #[test]
    fn big_scope_is_split_and_labels_shorten() {
        let n = 1000;
        let placements: Vec<Placement> = (0..n)
            .map(|i| placement(&format!("/big/big.0/op{i}"), None))
            .collect();
        let order: Vec<usize> = (0..n).collect();
        let mut t = Tree::build(&order, &placements, &vec![false; n]);
        assert_eq!(t.scopes[0].count, n);
        let inner = t.node_scope[0];
        assert_eq!(t.scopes[inner].kind, ScopeKind::Chunk);
        let big0 = t.scopes[inner].parent.unwrap();
        assert_eq!(t.scopes[big0].label, "0");
        assert_eq!(t.scopes[big0].children.len(), 5);
        assert!(t.scopes.iter().all(|s| s.children.len() <= CHUNK));
        assert_eq!(t.scopes[big0].pattern.as_deref(), Some("/big/big.0/*"));
        let row = t.reveal(777).unwrap();
        assert_eq!(t.rows[row].item, Item::Node(777));
    }
}
