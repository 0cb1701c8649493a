#!/usr/bin/env python3
"""Prunes every model in a folder with `pare prune --ratio 0.5 --round-to 8 --json` and prints
the table the pruning issue asks for: groups, locked groups, params and MACs before -> after,
and onnxruntime latency (single thread, best of 10) before -> after.

    python scripts/prune_table.py target/release/pare ../shared/models/dev [--ratio 0.5]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)


def latency_ms(path, feed):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    s.run(None, feed)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        s.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def feed_for(path, pins):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for i in s.get_inputs():
        shape = pins.get(i.name) or [d if isinstance(d, int) and d > 0 else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
        feed[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pare")
    ap.add_argument("folder")
    ap.add_argument("--ratio", default="0.5")
    a = ap.parse_args()
    manifest = {}
    mp = os.path.join(a.folder, "manifest.json")
    if os.path.exists(mp):
        manifest = {e["file"]: e for e in json.load(open(mp))["models"]}
    print("| model | groups | locked | params before → after | MACs before → after | ORT ms before → after |")
    print("|---|---|---|---|---|---|")
    for f in sorted(os.listdir(a.folder)):
        if not f.endswith(".onnx"):
            continue
        path = os.path.join(a.folder, f)
        pins, flags = {}, []
        for i in manifest.get(f, {}).get("inputs", []):
            if not all(isinstance(d, int) for d in i["shape"]):
                shp = [d if isinstance(d, int) else (1 if k == 0 else 64) for k, d in enumerate(i["shape"])]
                pins[i["name"]] = shp
                flags += ["--input-shape", f"{i['name']}:{'x'.join(map(str, shp))}"]
        out = tempfile.mktemp(suffix=".onnx")
        p = subprocess.run([a.pare, "prune", path, "-o", out, "--ratio", a.ratio, "--round-to", "8", "--json"] + flags,
                           capture_output=True, text=True)
        if p.returncode != 0:
            print(f"| {f} | error: {p.stderr.strip()[:80]} |")
            continue
        j = json.loads(p.stdout)
        feed = feed_for(path, pins)
        l0, l1 = latency_ms(path, feed), latency_ms(out, feed)
        macs_drop = 100 * (1 - j["macs_after"] / max(j["macs_before"], 1))
        print(f"| {f[:-5]} | {j['groups']} | {j['locked_groups']} | {j['params_before']/1e6:.3f}M → {j['params_after']/1e6:.3f}M "
              f"| {j['macs_before']/1e6:.1f}M → {j['macs_after']/1e6:.1f}M (−{macs_drop:.0f}%) | {l0:.2f} → {l1:.2f} |")
        os.remove(out)


if __name__ == "__main__":
    sys.exit(main())
