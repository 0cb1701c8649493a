//! The neighbourhood of one node as a small layered DAG drawn with box characters: k hops up
//! and down, long edges routed through dummy columns, edge labels with tensor shapes. Only
//! this neighbourhood is ever laid out, so the cost does not grow with the model.

use std::collections::{HashMap, HashSet, VecDeque};

use super::session::Session;

/// Most boxes one layer shows; the rest fold into a `+n` box.
pub const MAX_PER_LAYER: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub enum GKind {
    Node(usize),
    Input(String),
    Output(String),
    More(usize),
    Dummy,
}

#[derive(Clone, Debug)]
pub struct GNode {
    pub kind: GKind,
    pub label: String,
    pub layer: usize,
    pub x: u16,
    pub w: u16,
    order_key: f64,
}

/// What a canvas cell shows, for styling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Empty,
    Line,
    Label,
    /// Border or text of box `i` (index into `GraphView::nodes`).
    Box(usize),
}

pub struct GraphView {
    pub nodes: Vec<GNode>,
    pub width: u16,
    pub height: u16,
    pub chars: Vec<Vec<char>>,
    pub cells: Vec<Vec<Cell>>,
    /// Row of each box's top edge.
    pub box_y: Vec<u16>,
    pub box_h: u16,
    /// Index of the selected node's box.
    pub selected: Option<usize>,
    /// Real nodes in display order (layer by layer, left to right), for keyboard navigation.
    pub order: Vec<usize>,
}

const UP: u8 = 1;
const DOWN: u8 = 2;
const LEFT: u8 = 4;
const RIGHT: u8 = 8;

fn line_char(bits: u8) -> char {
    match bits {
        b if b == UP | DOWN => '│',
        b if b == LEFT | RIGHT => '─',
        b if b == DOWN | RIGHT => '╭',
        b if b == DOWN | LEFT => '╮',
        b if b == UP | RIGHT => '╰',
        b if b == UP | LEFT => '╯',
        b if b == UP | DOWN | RIGHT => '├',
        b if b == UP | DOWN | LEFT => '┤',
        b if b == LEFT | RIGHT | DOWN => '┬',
        b if b == LEFT | RIGHT | UP => '┴',
        b if b == UP | DOWN | LEFT | RIGHT => '┼',
        b if b == UP || b == DOWN => '│',
        b if b == LEFT || b == RIGHT => '─',
        _ => ' ',
    }
}

/// Compact tensor shape for edge labels: `1×16×32×32`.
pub fn short_shape(s: &Session, tensor: &str) -> String {
    match s.analysis.shapes.shape(tensor) {
        Some([]) => "scalar".into(),
        Some(d) => d
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("×"),
        None => "?".into(),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else if n <= 1 {
        "…".chars().take(n).collect()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

/// Lays out and draws the `hops`-neighbourhood of `sel` into a canvas `width` wide.
/// `compact` draws one-line boxes (for short panes).
pub fn layout(s: &Session, sel: usize, hops: usize, width: u16, compact: bool) -> GraphView {
    let dist = neighbourhood(s, sel, hops);
    let (mut nodes, mut edges, id_of) = boxes(s, &dist);
    let n_layers = assign_layers(&mut nodes, &edges);
    let sel_box = id_of.get(&sel).copied();
    let hidden = cap_layers(&mut nodes, n_layers, sel_box, &dist);
    edges.retain(|(a, b, _)| !hidden.contains(a) && !hidden.contains(b));
    let segs = route_long_edges(&mut nodes, edges);
    let layers = order_layers(&nodes, &segs, &hidden, n_layers);
    let width = width.max(10);
    place(&mut nodes, &layers, width, compact);
    let box_h: u16 = if compact { 1 } else { 3 };
    let gap_h: u16 = 2;
    let height = n_layers as u16 * (box_h + gap_h) - gap_h;
    let mut canvas = Canvas {
        width,
        box_h,
        gap_h,
        bits: vec![vec![0u8; width as usize]; height as usize],
        chars: vec![vec![' '; width as usize]; height as usize],
        cells: vec![vec![Cell::Empty; width as usize]; height as usize],
    };
    let attach = Attach::new(&nodes, &segs);
    let labels = canvas.edges(s, &nodes, &segs, &attach);
    canvas.lines();
    let box_y = canvas.boxes(&nodes, &hidden, &attach, compact);
    canvas.labels(labels);
    let mut order: Vec<usize> = Vec::new();
    for l in &layers {
        for &k in l {
            if let GKind::Node(i) = nodes[k].kind {
                order.push(i);
            }
        }
    }
    GraphView {
        selected: sel_box,
        nodes,
        width,
        height,
        chars: canvas.chars,
        cells: canvas.cells,
        box_y,
        box_h,
        order,
    }
}

/// Step 1: the neighbourhood, with BFS distance (negative up, positive down).
fn neighbourhood(s: &Session, sel: usize, hops: usize) -> HashMap<usize, i64> {
    let g = s.graph();
    let ix = &s.analysis.index;
    let is_const = |i: usize| g.node[i].op_type() == "Constant" && i != sel;
    let mut dist: HashMap<usize, i64> = HashMap::new();
    dist.insert(sel, 0);
    for (forward, sign) in [(false, -1i64), (true, 1)] {
        let mut q = VecDeque::from([(sel, 0usize)]);
        let mut seen = HashSet::from([sel]);
        while let Some((n, d)) = q.pop_front() {
            if d == hops {
                continue;
            }
            let next = if forward {
                ix.successors(n)
            } else {
                ix.predecessors(n)
            };
            for m in next {
                if is_const(m) || !seen.insert(m) {
                    continue;
                }
                dist.entry(m).or_insert(sign * (d as i64 + 1));
                q.push_back((m, d + 1));
            }
        }
    }
    dist
}

fn gnode(kind: GKind, label: String, order_key: f64) -> GNode {
    GNode {
        kind,
        label,
        layer: 0,
        x: 0,
        w: 0,
        order_key,
    }
}

/// An edge between boxes, labelled with its tensor.
type Edge = (usize, usize, String);

/// Step 2: boxes: real nodes plus graph inputs/outputs at the rim, the edges between them, and
/// each node's box.
fn boxes(
    s: &Session,
    dist: &HashMap<usize, i64>,
) -> (Vec<GNode>, Vec<Edge>, HashMap<usize, usize>) {
    let g = s.graph();
    let ix = &s.analysis.index;
    let mut members: Vec<usize> = dist.keys().copied().collect();
    members.sort_by_key(|&i| s.nodes[i].topo);
    let mut nodes: Vec<GNode> = Vec::new();
    let mut id_of: HashMap<usize, usize> = HashMap::new();
    let label_of = |i: usize| {
        let n = &s.nodes[i];
        let short = n.short.as_str();
        if short.is_empty() || short == n.op {
            n.op.clone()
        } else {
            format!("{} {}", n.op, short)
        }
    };
    for &i in &members {
        id_of.insert(i, nodes.len());
        nodes.push(gnode(GKind::Node(i), label_of(i), s.nodes[i].topo as f64));
    }
    let mut edges: Vec<Edge> = Vec::new();
    let mut input_box: HashMap<String, usize> = HashMap::new();
    for &i in &members {
        for t in ix.all_inputs(&g.node[i], i) {
            if ix.initializers.contains_key(t) {
                continue;
            }
            match ix.producer.get(t) {
                Some(p) => {
                    if let Some(&pb) = id_of.get(p) {
                        edges.push((pb, id_of[&i], t.to_string()));
                    }
                }
                None if ix.inputs.iter().any(|x| x == t) => {
                    let b = *input_box.entry(t.to_string()).or_insert_with(|| {
                        nodes.push(gnode(GKind::Input(t.to_string()), format!("⇥ {t}"), -1.0));
                        nodes.len() - 1
                    });
                    edges.push((b, id_of[&i], t.to_string()));
                }
                None => {}
            }
        }
        for t in &g.node[i].output {
            if ix.outputs.iter().any(|o| o == t) {
                nodes.push(gnode(GKind::Output(t.clone()), format!("{t} ⇥"), f64::MAX));
                edges.push((id_of[&i], nodes.len() - 1, t.clone()));
            }
        }
    }
    (nodes, edges, id_of)
}

fn by_order_key(nodes: &[GNode], a: usize, b: usize) -> std::cmp::Ordering {
    nodes[a]
        .order_key
        .partial_cmp(&nodes[b].order_key)
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Step 3: layers: longest path from the sources (edges always point down). Returns the count.
fn assign_layers(nodes: &mut [GNode], edges: &[Edge]) -> usize {
    let mut layer = vec![0usize; nodes.len()];
    let mut by_order: Vec<usize> = (0..nodes.len()).collect();
    by_order.sort_by(|&a, &b| by_order_key(nodes, a, b));
    let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b, _) in edges {
        incoming[*b].push(*a);
    }
    for &v in &by_order {
        for &u in &incoming[v] {
            layer[v] = layer[v].max(layer[u] + 1);
        }
    }
    // Outputs sit right under their producer.
    for (k, n) in nodes.iter().enumerate() {
        if matches!(n.kind, GKind::Output(_))
            && let Some(&u) = incoming[k].first()
        {
            layer[k] = layer[u] + 1;
        }
    }
    for (k, n) in nodes.iter_mut().enumerate() {
        n.layer = layer[k];
    }
    layer.iter().copied().max().unwrap_or(0) + 1
}

/// Step 4: caps each layer at [`MAX_PER_LAYER`]: keeps the boxes closest to the selection and
/// folds the rest into a `+n more` box. Returns the hidden boxes.
fn cap_layers(
    nodes: &mut Vec<GNode>,
    n_layers: usize,
    sel_box: Option<usize>,
    dist: &HashMap<usize, i64>,
) -> HashSet<usize> {
    let mut hidden: HashSet<usize> = HashSet::new();
    for l in 0..n_layers {
        let mut in_layer: Vec<usize> = (0..nodes.len()).filter(|&k| nodes[k].layer == l).collect();
        if in_layer.len() <= MAX_PER_LAYER {
            continue;
        }
        let closeness = |k: usize| match nodes[k].kind {
            GKind::Node(_) if Some(k) == sel_box => -1,
            GKind::Node(i) => dist.get(&i).map(|d| d.abs()).unwrap_or(99),
            _ => 50,
        };
        in_layer.sort_by_key(|&k| (closeness(k), nodes[k].order_key as i64));
        let extra = in_layer.split_off(MAX_PER_LAYER - 1);
        let count = extra.len();
        hidden.extend(extra);
        let mut more = gnode(GKind::More(count), format!("+{count} more"), f64::MAX);
        more.layer = l;
        nodes.push(more);
    }
    hidden
}

/// An edge segment between adjacent layers; the last segment of an edge carries its tensor.
type Seg = (usize, usize, Option<String>);

/// Step 5: long edges go through dummy boxes, one per crossed layer.
fn route_long_edges(nodes: &mut Vec<GNode>, edges: Vec<Edge>) -> Vec<Seg> {
    let mut segs: Vec<Seg> = Vec::new();
    for (a, b, t) in edges {
        let (la, lb) = (nodes[a].layer, nodes[b].layer);
        let mut prev = a;
        for l in la + 1..lb {
            nodes.push(GNode {
                kind: GKind::Dummy,
                label: String::new(),
                layer: l,
                x: 0,
                w: 1,
                order_key: nodes[a].order_key,
            });
            let d = nodes.len() - 1;
            segs.push((prev, d, None));
            prev = d;
        }
        segs.push((prev, b, Some(t)));
    }
    segs
}

/// Step 6: order within layers: execution order, then barycentre sweeps down, up and down.
fn order_layers(
    nodes: &[GNode],
    segs: &[Seg],
    hidden: &HashSet<usize>,
    n_layers: usize,
) -> Vec<Vec<usize>> {
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); n_layers];
    for (k, n) in nodes.iter().enumerate() {
        if !hidden.contains(&k) {
            layers[n.layer].push(k);
        }
    }
    for l in layers.iter_mut() {
        l.sort_by(|&a, &b| by_order_key(nodes, a, b));
    }
    let mut pos: HashMap<usize, f64> = HashMap::new();
    for l in &layers {
        for (i, &k) in l.iter().enumerate() {
            pos.insert(k, i as f64);
        }
    }
    for down in [true, false, true] {
        let range: Vec<usize> = if down {
            (1..n_layers).collect()
        } else {
            (0..n_layers.saturating_sub(1)).rev().collect()
        };
        for l in range {
            layers[l] = barycentre_order(&layers[l], segs, &pos, down);
            for (i, &k) in layers[l].iter().enumerate() {
                pos.insert(k, i as f64);
            }
        }
    }
    layers
}

/// One layer sorted by the mean position of its neighbours in the layer above (`down`) or
/// below; a box without neighbours keeps its position.
fn barycentre_order(
    layer: &[usize],
    segs: &[Seg],
    pos: &HashMap<usize, f64>,
    down: bool,
) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = layer
        .iter()
        .map(|&k| {
            let nb: Vec<f64> = segs
                .iter()
                .filter_map(|(a, b, _)| {
                    if down && *b == k {
                        pos.get(a).copied()
                    } else if !down && *a == k {
                        pos.get(b).copied()
                    } else {
                        None
                    }
                })
                .collect();
            let key = if nb.is_empty() {
                pos[&k]
            } else {
                nb.iter().sum::<f64>() / nb.len() as f64
            };
            (key, k)
        })
        .collect();
    keyed.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    keyed.into_iter().map(|(_, k)| k).collect()
}

/// Step 7: widths and x positions, each layer centred.
fn place(nodes: &mut [GNode], layers: &[Vec<usize>], width: u16, compact: bool) {
    let pad: u16 = if compact { 2 } else { 4 };
    for l in layers {
        let boxes: Vec<usize> = l
            .iter()
            .copied()
            .filter(|&k| nodes[k].kind != GKind::Dummy)
            .collect();
        let dummies = l.len() - boxes.len();
        let gaps = l.len().saturating_sub(1) as u16;
        let avail = width.saturating_sub(gaps + dummies as u16);
        let per = if boxes.is_empty() {
            0
        } else {
            (avail / boxes.len() as u16).max(pad + 1)
        };
        for &k in &boxes {
            let text = truncate(&nodes[k].label, (per - pad) as usize);
            nodes[k].label = text;
            nodes[k].w = nodes[k].label.chars().count() as u16 + pad;
        }
        let total: u16 = l.iter().map(|&k| nodes[k].w).sum::<u16>() + gaps;
        let mut x = width.saturating_sub(total) / 2;
        for &k in l {
            nodes[k].x = x;
            x += nodes[k].w + 1;
        }
    }
}

/// Where edges attach to boxes: several edges spread over a box's width, ordered by the x of
/// the box at their other end.
struct Attach {
    outs: HashMap<usize, Vec<usize>>,
    ins: HashMap<usize, Vec<usize>>,
}

impl Attach {
    fn new(nodes: &[GNode], segs: &[Seg]) -> Self {
        let mut outs: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut ins: HashMap<usize, Vec<usize>> = HashMap::new();
        for (e, (a, b, _)) in segs.iter().enumerate() {
            outs.entry(*a).or_default().push(e);
            ins.entry(*b).or_default().push(e);
        }
        for list in outs.values_mut() {
            list.sort_by_key(|&e| nodes[segs[e].1].x);
        }
        for list in ins.values_mut() {
            list.sort_by_key(|&e| nodes[segs[e].0].x);
        }
        Attach { outs, ins }
    }

    /// Column where edge `e` leaves (or enters) box `k`, given the box's edge list.
    fn x(nodes: &[GNode], k: usize, list: &[usize], e: usize) -> u16 {
        let n = &nodes[k];
        if n.kind == GKind::Dummy || list.len() <= 1 {
            return n.x + n.w / 2;
        }
        let i = list.iter().position(|&x| x == e).unwrap_or(0) as u16;
        let inner = n.w.saturating_sub(2).max(1);
        n.x + 1 + inner * (i + 1) / (list.len() as u16 + 1)
    }
}

/// Step 8: the drawing: line bits per cell, then characters and what each cell shows.
struct Canvas {
    width: u16,
    box_h: u16,
    gap_h: u16,
    bits: Vec<Vec<u8>>,
    chars: Vec<Vec<char>>,
    cells: Vec<Vec<Cell>>,
}

impl Canvas {
    fn top(&self, layer: usize) -> u16 {
        layer as u16 * (self.box_h + self.gap_h)
    }

    fn mark(&mut self, x: u16, y: u16, b: u8) {
        if let Some(c) = self
            .bits
            .get_mut(y as usize)
            .and_then(|row| row.get_mut(x as usize))
        {
            *c |= b;
        }
    }

    /// Routes every segment (down from the source, across in the first gap row, down into
    /// the target); returns the shape labels to place next to edge ends.
    fn edges(
        &mut self,
        s: &Session,
        nodes: &[GNode],
        segs: &[Seg],
        at: &Attach,
    ) -> Vec<(u16, u16, String)> {
        let mut labels: Vec<(u16, u16, String)> = Vec::new();
        for (e, (a, b, t)) in segs.iter().enumerate() {
            let sx = Attach::x(nodes, *a, &at.outs[a], e);
            let tx = Attach::x(nodes, *b, &at.ins[b], e);
            let sy = self.top(nodes[*a].layer) + self.box_h; // first gap row
            let ty = self.top(nodes[*b].layer); // target top row
            let ry = sy;
            if nodes[*a].kind == GKind::Dummy {
                for y in self.top(nodes[*a].layer)..sy {
                    self.mark(sx, y, UP | DOWN);
                }
            }
            self.mark(sx, ry, UP);
            if sx != tx {
                let (lo, hi) = (sx.min(tx), sx.max(tx));
                self.mark(lo, ry, RIGHT);
                self.mark(hi, ry, LEFT);
                for x in lo + 1..hi {
                    self.mark(x, ry, LEFT | RIGHT);
                }
            }
            self.mark(tx, ry, DOWN);
            for y in ry + 1..ty {
                self.mark(tx, y, UP | DOWN);
            }
            if let Some(t) = t {
                labels.push((tx + 1, ty.saturating_sub(1), short_shape(s, t)));
            }
        }
        labels
    }

    /// Turns line bits into box-drawing characters.
    fn lines(&mut self) {
        for (y, row) in self.bits.iter().enumerate() {
            for (x, &b) in row.iter().enumerate() {
                if b != 0 {
                    self.chars[y][x] = line_char(b);
                    self.cells[y][x] = Cell::Line;
                }
            }
        }
    }

    fn put(&mut self, k: usize, x: usize, y: u16, c: char) {
        self.chars[y as usize][x] = c;
        self.cells[y as usize][x] = Cell::Box(k);
    }

    /// Draws the boxes over the lines; returns each box's top row.
    fn boxes(
        &mut self,
        nodes: &[GNode],
        hidden: &HashSet<usize>,
        at: &Attach,
        compact: bool,
    ) -> Vec<u16> {
        let mut box_y = vec![0u16; nodes.len()];
        for (k, n) in nodes.iter().enumerate() {
            if hidden.contains(&k) || n.kind == GKind::Dummy {
                continue;
            }
            let y = self.top(n.layer);
            box_y[k] = y;
            let (x0, x1) = (n.x as usize, (n.x + n.w) as usize);
            if x1 > self.width as usize {
                continue;
            }
            if compact {
                self.put(k, x0, y, '[');
                for (j, c) in n.label.chars().enumerate() {
                    self.put(k, x0 + 1 + j, y, c);
                }
                self.put(k, x1 - 1, y, ']');
            } else {
                self.full_box(nodes, k, y, at);
            }
        }
        box_y
    }

    /// A three-row box with its label and the marks where edges attach.
    fn full_box(&mut self, nodes: &[GNode], k: usize, y: u16, at: &Attach) {
        let n = &nodes[k];
        let (x0, x1) = (n.x as usize, (n.x + n.w) as usize);
        for x in x0..x1 {
            let (tc, bc) = if x == x0 {
                ('╭', '╰')
            } else if x == x1 - 1 {
                ('╮', '╯')
            } else {
                ('─', '─')
            };
            self.put(k, x, y, tc);
            self.put(k, x, y + 2, bc);
        }
        self.put(k, x0, y + 1, '│');
        self.put(k, x1 - 1, y + 1, '│');
        for x in x0 + 1..x1 - 1 {
            self.put(k, x, y + 1, ' ');
        }
        for (j, c) in n.label.chars().enumerate() {
            self.put(k, x0 + 2 + j, y + 1, c);
        }
        if let Some(list) = at.ins.get(&k) {
            for &e in list {
                let tx = Attach::x(nodes, k, list, e) as usize;
                if tx > x0 && tx < x1 - 1 {
                    self.put(k, tx, y, '┴');
                }
            }
        }
        if let Some(list) = at.outs.get(&k) {
            for &e in list {
                let sx = Attach::x(nodes, k, list, e) as usize;
                if sx > x0 && sx < x1 - 1 {
                    self.put(k, sx, y + 2, '┬');
                }
            }
        }
    }

    /// Places shape labels right of their edge, else left of it, else not at all.
    fn labels(&mut self, labels: Vec<(u16, u16, String)>) {
        let width = self.width as usize;
        for (x, y, text) in labels {
            let n = text.chars().count();
            let cells = &self.cells;
            let fits = |x: u16| {
                (x as usize + n) < width
                    && (0..n).all(|j| cells[y as usize][x as usize + j] == Cell::Empty)
                    && cells[y as usize]
                        .get(x as usize + n)
                        .is_none_or(|c| *c == Cell::Empty)
            };
            let start = if fits(x + 1) {
                Some(x + 1)
            } else if x >= n as u16 + 2 && fits(x - n as u16 - 2) {
                Some(x - n as u16 - 2)
            } else {
                None
            };
            if let Some(sx) = start {
                for (j, c) in text.chars().enumerate() {
                    self.chars[y as usize][sx as usize + j] = c;
                    self.cells[y as usize][sx as usize + j] = Cell::Label;
                }
            }
        }
    }
}
