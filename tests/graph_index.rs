//! Graph index: producers/consumers, topological order, reachability, nested scopes, and the
//! malformed graphs it must reject by name (seed P13: never a hang).

mod common;

use pare::model::GraphIndex;
use pare::model::builder::{D, GraphBuilder};
use pare::model::proto::GraphProto;

fn graph(m: &pare::model::proto::ModelProto) -> &GraphProto {
    m.graph.as_ref().expect("graph")
}

#[test]
fn topological_order_respects_every_edge() {
    let m = common::resnet_like();
    let g = graph(&m);
    let ix = GraphIndex::build(g).expect("index");
    assert_eq!(ix.topo.len(), g.node.len());
    let pos: Vec<usize> = {
        let mut p = vec![0; g.node.len()];
        for (k, &n) in ix.topo.iter().enumerate() {
            p[n] = k;
        }
        p
    };
    for (i, n) in g.node.iter().enumerate() {
        for inp in &n.input {
            if let Some(&p) = ix.producer.get(inp) {
                assert!(pos[p] < pos[i], "{} before its producer", n.name());
            }
        }
    }
    // The first conv's output fans out to the residual Add and the next conv.
    let first_out = &g.node[0].output[0];
    assert!(ix.consumers[first_out].len() == 1);
    let add = g
        .node
        .iter()
        .position(|n| n.op_type() == "Add")
        .expect("add");
    assert!(ix.is_reachable(0, add));
    assert!(!ix.is_reachable(add, 0));
}

#[test]
fn shuffled_node_order_is_sorted() {
    let mut m = common::seg_head();
    graph(&m);
    m.graph.as_mut().expect("graph").node.reverse();
    let ix = GraphIndex::build(graph(&m)).expect("index");
    let g = graph(&m);
    assert_eq!(g.node[ix.topo[0]].input[0], "image");
}

#[test]
fn if_bodies_are_indexed_with_outer_references() {
    let m = common::stereo_if();
    let g = graph(&m);
    let ix = GraphIndex::build(g).expect("index");
    let if_node = g.node.iter().position(|n| n.op_type() == "If").expect("if");
    assert_eq!(ix.subgraphs.iter().filter(|s| s.node == if_node).count(), 2);
    let then = ix
        .subgraphs
        .iter()
        .find(|s| s.attribute == "then_branch")
        .expect("then");
    assert_eq!(then.index.outer_refs.len(), 1);
    let outer = &then.index.outer_refs[0];
    // The outer-scope read makes the If depend on the ReduceMean.
    let rm = ix.producer[outer];
    assert!(ix.predecessors(if_node).contains(&rm));
    assert!(ix.implicit_inputs[&if_node].contains(outer));
}

fn two_node_graph(nodes: Vec<pare::model::proto::NodeProto>) -> GraphProto {
    let mut b = GraphBuilder::new("g");
    b.input("x", &[D::N(1), D::N(2)]);
    b.output("y", &[D::N(1), D::N(2)]);
    let mut g = b.graph();
    g.node = nodes;
    g
}

fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> pare::model::proto::NodeProto {
    pare::model::proto::NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn cycle_is_an_error_naming_the_cycle() {
    let g = two_node_graph(vec![
        node("a", "Add", &["x", "t2"], &["t1"]),
        node("b", "Relu", &["t1"], &["t2"]),
        node("c", "Identity", &["t1"], &["y"]),
    ]);
    let err = GraphIndex::build(&g).expect_err("cycle").to_string();
    assert!(
        err.contains("cycl") && err.contains("'a'") && err.contains("'b'"),
        "{err}"
    );
    assert!(
        !err.contains("'c'"),
        "c is downstream of the cycle, not on it: {err}"
    );
}

#[test]
fn self_loop_and_large_cycle_terminate() {
    let g = two_node_graph(vec![
        node("self", "Relu", &["t"], &["t"]),
        node("o", "Identity", &["x"], &["y"]),
    ]);
    assert!(
        GraphIndex::build(&g)
            .expect_err("self loop")
            .to_string()
            .contains("'self'")
    );
    // A 50,000-node ring: must fail fast without recursion.
    let n = 50_000;
    let mut nodes: Vec<_> = (0..n)
        .map(|i| {
            let inp = format!("t{}", (i + n - 1) % n);
            let out = format!("t{i}");
            node(&format!("n{i}"), "Relu", &[&inp], &[&out])
        })
        .collect();
    nodes.push(node("o", "Identity", &["x"], &["y"]));
    let g = two_node_graph(nodes);
    assert!(GraphIndex::build(&g).is_err());
}

#[test]
fn dangling_input_duplicate_producer_and_missing_output_are_named() {
    let g = two_node_graph(vec![node("a", "Add", &["x", "ghost"], &["y"])]);
    let e = GraphIndex::build(&g).expect_err("dangling").to_string();
    assert!(e.contains("'a'") && e.contains("'ghost'"), "{e}");

    let g = two_node_graph(vec![
        node("a", "Relu", &["x"], &["y"]),
        node("b", "Relu", &["x"], &["y"]),
    ]);
    let e = GraphIndex::build(&g).expect_err("dup").to_string();
    assert!(
        e.contains("'y'") && e.contains("'a'") && e.contains("'b'"),
        "{e}"
    );

    let g = two_node_graph(vec![node("a", "Relu", &["x"], &["z"])]);
    let e = GraphIndex::build(&g).expect_err("output").to_string();
    assert!(e.contains("'y'"), "{e}");

    let mut g = two_node_graph(vec![node("a", "Relu", &["x"], &["y"])]);
    g.input.push(g.input[0].clone());
    let e = GraphIndex::build(&g).expect_err("dup input").to_string();
    assert!(e.contains("'x'") && e.contains("twice"), "{e}");
}

#[test]
fn optional_empty_inputs_are_not_edges() {
    let m = common::seg_head();
    let ix = GraphIndex::build(graph(&m)).expect("index");
    assert!(!ix.consumers.contains_key(""));
}
