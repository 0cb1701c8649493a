#!/usr/bin/env python3
"""Python baseline for the extraction benchmark: `onnx.utils.extract_model` cutting one node
out of the same file, with the same input and output tensors `pare extract --node` uses.

    python benches/compare_extract.py target/bench/wide_resnet_300mb.onnx --node NAME \
        [--pare target/release/pare] [--runs 3]

The model comes from `cargo bench --bench extract` (it prints NAME). Prints the best time of
each and the ratio pare / onnx.
"""
import argparse
import os
import subprocess
import tempfile
import time


def node_tensors(path, name):
    import onnx
    m = onnx.load(path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    for n in m.graph.node:
        if n.name == name:
            return [i for i in n.input if i and i not in inits], [o for o in n.output if o]
    raise SystemExit(f"no node named {name}")


def time_onnx(path, inputs, outputs, out):
    import onnx.utils
    t = time.perf_counter()
    onnx.utils.extract_model(path, out, inputs, outputs)
    return time.perf_counter() - t


def time_pare(pare, path, node, out):
    t = time.perf_counter()
    subprocess.run([pare, "extract", path, "--node", node, "-o", out], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--node", required=True)
    ap.add_argument("--pare")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    inputs, outputs = node_tensors(a.model, a.node)
    d = tempfile.mkdtemp()
    size_mb = os.path.getsize(a.model) / 1e6
    print(f"file: {size_mb:.0f} MB, node {a.node}: inputs {inputs}, outputs {outputs}")
    py = min(time_onnx(a.model, inputs, outputs, os.path.join(d, "py.onnx")) for _ in range(a.runs))
    print(f"onnx.utils.extract_model: best of {a.runs}: {py * 1000:.0f} ms")
    if a.pare:
        pr = min(time_pare(a.pare, a.model, a.node, os.path.join(d, "pare.onnx")) for _ in range(a.runs))
        print(f"pare extract --node (whole process): best of {a.runs}: {pr * 1000:.0f} ms")
        print(f"ratio pare / onnx: {pr / py:.3f} (1/{py / pr:.1f})")


if __name__ == "__main__":
    main()
