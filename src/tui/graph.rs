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
    let g = s.graph();
    let ix = &s.analysis.index;
    let is_const = |i: usize| g.node[i].op_type() == "Constant" && i != sel;
    // 1. The neighbourhood, with BFS distance (negative up, positive down).
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
    // 2. Boxes: real nodes plus graph inputs/outputs at the rim.
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
        nodes.push(GNode {
            kind: GKind::Node(i),
            label: label_of(i),
            layer: 0,
            x: 0,
            w: 0,
            order_key: s.nodes[i].topo as f64,
        });
    }
    let mut edges: Vec<(usize, usize, String)> = Vec::new();
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
                        nodes.push(GNode {
                            kind: GKind::Input(t.to_string()),
                            label: format!("⇥ {t}"),
                            layer: 0,
                            x: 0,
                            w: 0,
                            order_key: -1.0,
                        });
                        nodes.len() - 1
                    });
                    edges.push((b, id_of[&i], t.to_string()));
                }
                None => {}
            }
        }
        for t in &g.node[i].output {
            if ix.outputs.iter().any(|o| o == t) {
                nodes.push(GNode {
                    kind: GKind::Output(t.clone()),
                    label: format!("{t} ⇥"),
                    layer: 0,
                    x: 0,
                    w: 0,
                    order_key: f64::MAX,
                });
                edges.push((id_of[&i], nodes.len() - 1, t.clone()));
            }
        }
    }
    // 3. Layers: longest path from the sources (edges always point down).
    let mut layer = vec![0usize; nodes.len()];
    let mut by_order: Vec<usize> = (0..nodes.len()).collect();
    by_order.sort_by(|&a, &b| {
        nodes[a]
            .order_key
            .partial_cmp(&nodes[b].order_key)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b, _) in &edges {
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
    let n_layers = layer.iter().copied().max().unwrap_or(0) + 1;
    // 4. Cap each layer: keep the boxes closest to the selection.
    let sel_box = id_of.get(&sel).copied();
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
        nodes.push(GNode {
            kind: GKind::More(count),
            label: format!("+{count} more"),
            layer: l,
            x: 0,
            w: 0,
            order_key: f64::MAX,
        });
    }
    edges.retain(|(a, b, _)| !hidden.contains(a) && !hidden.contains(b));
    // 5. Long edges go through dummy boxes, one per crossed layer.
    let mut segs: Vec<(usize, usize, Option<String>)> = Vec::new();
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
    // 6. Order within layers: execution order, then two barycentre sweeps.
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); n_layers];
    for (k, n) in nodes.iter().enumerate() {
        if !hidden.contains(&k) {
            layers[n.layer].push(k);
        }
    }
    for l in layers.iter_mut() {
        l.sort_by(|&a, &b| {
            nodes[a]
                .order_key
                .partial_cmp(&nodes[b].order_key)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let mut pos: HashMap<usize, f64> = HashMap::new();
    let set_pos = |layers: &Vec<Vec<usize>>, pos: &mut HashMap<usize, f64>| {
        for l in layers {
            for (i, &k) in l.iter().enumerate() {
                pos.insert(k, i as f64);
            }
        }
    };
    set_pos(&layers, &mut pos);
    for down in [true, false, true] {
        let range: Vec<usize> = if down {
            (1..n_layers).collect()
        } else {
            (0..n_layers.saturating_sub(1)).rev().collect()
        };
        for l in range {
            let mut keyed: Vec<(f64, usize)> = layers[l]
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
            layers[l] = keyed.into_iter().map(|(_, k)| k).collect();
            for (i, &k) in layers[l].iter().enumerate() {
                pos.insert(k, i as f64);
            }
        }
    }
    // 7. Widths and x positions, each layer centred.
    let width = width.max(10);
    let pad: u16 = if compact { 2 } else { 4 };
    for l in &layers {
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
    // 8. Draw.
    let box_h: u16 = if compact { 1 } else { 3 };
    let gap_h: u16 = 2;
    let height = n_layers as u16 * (box_h + gap_h) - gap_h;
    let mut bits = vec![vec![0u8; width as usize]; height as usize];
    let mut chars = vec![vec![' '; width as usize]; height as usize];
    let mut cells = vec![vec![Cell::Empty; width as usize]; height as usize];
    let top = |l: usize| l as u16 * (box_h + gap_h);
    // Attach points: spread several edges over a box's width.
    let mut outs: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ins: HashMap<usize, Vec<usize>> = HashMap::new();
    for (e, (a, b, _)) in segs.iter().enumerate() {
        outs.entry(*a).or_default().push(e);
        ins.entry(*b).or_default().push(e);
    }
    let attach = |k: usize, list: &Vec<usize>, e: usize, nodes: &Vec<GNode>| -> u16 {
        let n = &nodes[k];
        if n.kind == GKind::Dummy || list.len() <= 1 {
            return n.x + n.w / 2;
        }
        let i = list.iter().position(|&x| x == e).unwrap_or(0) as u16;
        let inner = n.w.saturating_sub(2).max(1);
        n.x + 1 + inner * (i + 1) / (list.len() as u16 + 1)
    };
    let sorted_lists = |m: &mut HashMap<usize, Vec<usize>>, by_target: bool| {
        for (_, list) in m.iter_mut() {
            list.sort_by_key(|&e| {
                let other = if by_target { segs[e].1 } else { segs[e].0 };
                nodes[other].x
            });
        }
    };
    sorted_lists(&mut outs, true);
    sorted_lists(&mut ins, false);
    let mut labels: Vec<(u16, u16, String)> = Vec::new();
    for (e, (a, b, t)) in segs.iter().enumerate() {
        let sx = attach(*a, &outs[a], e, &nodes);
        let tx = attach(*b, &ins[b], e, &nodes);
        let sy = top(nodes[*a].layer) + box_h; // first gap row
        let ty = top(nodes[*b].layer); // target top row
        let ry = sy;
        let mark = |bits: &mut Vec<Vec<u8>>, x: u16, y: u16, b: u8| {
            if let Some(c) = bits
                .get_mut(y as usize)
                .and_then(|row| row.get_mut(x as usize))
            {
                *c |= b;
            }
        };
        if nodes[*a].kind == GKind::Dummy {
            for y in top(nodes[*a].layer)..sy {
                mark(&mut bits, sx, y, UP | DOWN);
            }
        }
        mark(&mut bits, sx, ry, UP);
        if sx != tx {
            let (lo, hi) = (sx.min(tx), sx.max(tx));
            mark(&mut bits, lo, ry, RIGHT);
            mark(&mut bits, hi, ry, LEFT);
            for x in lo + 1..hi {
                mark(&mut bits, x, ry, LEFT | RIGHT);
            }
        }
        mark(&mut bits, tx, ry, DOWN);
        for y in ry + 1..ty {
            mark(&mut bits, tx, y, UP | DOWN);
        }
        if let Some(t) = t {
            labels.push((tx + 1, ty.saturating_sub(1), short_shape(s, t)));
        }
    }
    for y in 0..height as usize {
        for x in 0..width as usize {
            if bits[y][x] != 0 {
                chars[y][x] = line_char(bits[y][x]);
                cells[y][x] = Cell::Line;
            }
        }
    }
    let mut box_y = vec![0u16; nodes.len()];
    for (k, n) in nodes.iter().enumerate() {
        if hidden.contains(&k) || n.kind == GKind::Dummy {
            continue;
        }
        let y = top(n.layer);
        box_y[k] = y;
        let (x0, x1) = (n.x as usize, (n.x + n.w) as usize);
        if x1 > width as usize {
            continue;
        }
        let mut put = |x: usize, y: u16, c: char| {
            chars[y as usize][x] = c;
            cells[y as usize][x] = Cell::Box(k);
        };
        if compact {
            put(x0, y, '[');
            for (j, c) in n.label.chars().enumerate() {
                put(x0 + 1 + j, y, c);
            }
            put(x1 - 1, y, ']');
        } else {
            let has_in = ins.contains_key(&k);
            let has_out = outs.contains_key(&k);
            for x in x0..x1 {
                let (tc, bc) = if x == x0 {
                    ('╭', '╰')
                } else if x == x1 - 1 {
                    ('╮', '╯')
                } else {
                    ('─', '─')
                };
                put(x, y, tc);
                put(x, y + 2, bc);
            }
            put(x0, y + 1, '│');
            put(x1 - 1, y + 1, '│');
            for x in x0 + 1..x1 - 1 {
                put(x, y + 1, ' ');
            }
            for (j, c) in n.label.chars().enumerate() {
                put(x0 + 2 + j, y + 1, c);
            }
            if has_in {
                for &e in &ins[&k] {
                    let tx = attach(k, &ins[&k], e, &nodes) as usize;
                    if tx > x0 && tx < x1 - 1 {
                        put(tx, y, '┴');
                    }
                }
            }
            if has_out {
                for &e in &outs[&k] {
                    let sx = attach(k, &outs[&k], e, &nodes) as usize;
                    if sx > x0 && sx < x1 - 1 {
                        put(sx, y + 2, '┬');
                    }
                }
            }
        }
    }
    for (x, y, text) in labels {
        let n = text.chars().count();
        let fits = |x: u16| {
            (x as usize + n) < width as usize
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
                chars[y as usize][sx as usize + j] = c;
                cells[y as usize][sx as usize + j] = Cell::Label;
            }
        }
    }
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
        chars,
        cells,
        box_y,
        box_h,
        order,
    }
}
