#!/usr/bin/env python3
"""Dev-corpus check for `pare extract --with-data`.

Ranges (default): N random `--from A --to B` ranges per model, B downstream of A and at most
40 nodes after it in file order. `--nodes`: every single node with `--node`. Each piece must pass onnx.checker
(full_check), run in onnxruntime and reproduce the boundary outputs pare stored. Reported per
piece: max abs diff, and the diff relative to the output's magnitude (|ort - stored| / max(1,
|stored|)), because the stored outputs are computed by tract and onnxruntime sums in another
order: on values near 500 one f32 ulp is already 6e-5. `--engine ort` is passed on to pare
(boundary data computed by onnxruntime; needs a pare built with `--features ort`).

    python scripts/extract_ranges.py target/release/pare ../shared/models/dev 20
    python scripts/extract_ranges.py target/release/pare ../shared/models/dev --nodes [MODEL.onnx..]
    python scripts/extract_ranges.py target/ort/release/pare ../shared/models/dev 20 --engine ort
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)


def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return onnx.numpy_helper.to_array(t)


def check_piece(out):
    """Checker, onnxruntime, and (max abs diff, max relative diff) against the stored outputs."""
    onnx.checker.check_model(out, full_check=True)
    s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    tds = os.path.join(os.path.dirname(out), "test_data_set_0")
    feed = {inp.name: load_pb(os.path.join(tds, f"input_{k}.pb")) for k, inp in enumerate(s.get_inputs())}
    res = s.run(None, feed)
    md = rel = 0.0
    for k, x in enumerate(res):
        y = load_pb(os.path.join(tds, f"output_{k}.pb"))
        if x.shape != y.shape:
            raise AssertionError(f"output {k}: shape {x.shape} vs stored {y.shape}")
        if x.size == 0:
            continue
        d = np.abs(x.astype(np.float64) - y.astype(np.float64))
        md = max(md, float(np.max(d)))
        rel = max(rel, float(np.max(d / np.maximum(1.0, np.abs(y.astype(np.float64))))))
    return md, rel


def downstream(g):
    """Node name -> names of the nodes it reaches (main graph)."""
    prod = {o: n.name for n in g.node for o in n.output}
    succ = {n.name: set() for n in g.node}
    for n in g.node:
        for i in n.input:
            if i in prod:
                succ[prod[i]].add(n.name)
    memo = {}
    for n in reversed(g.node):  # topological order: successors first
        r = set()
        for s in succ[n.name]:
            r.add(s)
            r |= memo.get(s, set())
        memo[n.name] = r
    return memo


def near(names, a, down):
    """Downstream nodes at most 40 positions after `a` in file order (else the nearest 40)."""
    pos = {n: k for k, n in enumerate(names)}
    ds = sorted((pos[d], d) for d in down if d in pos)
    close = [d for p, d in ds if p - pos[a] <= 40]
    return close or [d for _, d in ds[:40]]


def main():
    pare, D = sys.argv[1], sys.argv[2]
    every = "--nodes" in sys.argv[3:]
    extra = ["--engine", "ort"] if "ort" in sys.argv[3:] else []
    only = [a for a in sys.argv[3:] if a.endswith(".onnx")]
    per = 0 if every else int(sys.argv[3])
    man = json.load(open(os.path.join(D, "manifest.json")))["models"]
    rnd = random.Random(11)
    tot = ok = ok4 = okrel = exact = 0
    worst = worst_rel = 0.0
    t0 = time.time()
    for e in man:
        if only and e["file"] not in only:
            continue
        f = os.path.join(D, e["file"])
        m = onnx.load(f, load_external_data=False)
        names = [n.name for n in m.graph.node if n.name and n.op_type != "Constant"]
        if every:
            jobs = [["--node", n] for n in names]
        else:
            down = downstream(m.graph)
            jobs = []
            for _ in range(per):
                a = rnd.choice([n for n in names if down[n]])
                b = rnd.choice(near(names, a, down[a]))
                jobs.append(["--from", a, "--to", b])
        mt = time.time()
        for sel in jobs:
            d = tempfile.mkdtemp()
            out = os.path.join(d, "p.onnx")
            r = subprocess.run([pare, "extract", f] + sel + ["-o", out, "--with-data"] + extra,
                               capture_output=True, text=True)
            tot += 1
            try:
                if r.returncode != 0:
                    print(e["file"], *sel, "rc", r.returncode, r.stderr.strip()[-200:], flush=True)
                    continue
                md, rel = check_piece(out)
                worst, worst_rel = max(worst, md), max(worst_rel, rel)
                exact += md == 0.0
                ok += md <= 1e-5
                ok4 += md <= 1e-4
                okrel += rel <= 1e-5
                if md > 1e-5:
                    print(e["file"], *sel, f"max abs diff {md:.2e}, relative {rel:.2e}", flush=True)
            except Exception as ex:  # noqa: BLE001
                print(e["file"], *sel, "ERR", str(ex)[:200], flush=True)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        print(f"# {e['file']}: {len(jobs)} pieces in {time.time() - mt:.0f}s", flush=True)
    what = "nodes" if every else "ranges"
    print(f"{what}: {exact}/{tot} identical, {ok}/{tot} within 1e-5 abs, {okrel}/{tot} within 1e-5 relative, {ok4}/{tot} within "
          f"1e-4 abs; worst abs {worst:.2e}, worst relative {worst_rel:.2e}"
          + f"; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
