#!/usr/bin/env python3
"""Python baseline for the model-core benchmark: onnx.load + onnx.shape_inference.infer_shapes
on the same file, best of N runs, plus peak RSS of a single pass (in a fresh process).

    python benches/compare_load.py target/bench/resnet50.onnx [--runs 5] [--pare target/release/pare]

With --pare it also measures the peak RSS of `pare info FILE` for the side-by-side table.
"""
import argparse
import os
import resource
import subprocess
import sys
import time


def one_pass(path):
    import onnx
    import onnx.shape_inference
    t = time.perf_counter()
    m = onnx.load(path)
    onnx.shape_inference.infer_shapes(m)
    return time.perf_counter() - t


def peak_rss_mb(cmd):
    p = subprocess.run(["/usr/bin/env", "python3", "-c",
                        "import resource,subprocess,sys;subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
                        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"] + cmd,
                       capture_output=True, text=True, check=True)
    return int(p.stdout.strip()) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pare")
    a = ap.parse_args()
    if os.environ.get("_PARE_ONE_PASS"):
        one_pass(a.model)
        return
    size_mb = os.path.getsize(a.model) / 1e6
    times = [one_pass(a.model) for _ in range(a.runs)]
    env_cmd = [sys.executable, __file__, a.model]
    os.environ["_PARE_ONE_PASS"] = "1"
    py_rss = peak_rss_mb(env_cmd)
    del os.environ["_PARE_ONE_PASS"]
    print(f"file: {size_mb:.1f} MB")
    print(f"python onnx.load + infer_shapes: best {min(times) * 1000:.1f} ms, peak RSS {py_rss:.0f} MB")
    if a.pare:
        pare_rss = peak_rss_mb([a.pare, "info", a.model, "--json"])
        t = []
        for _ in range(a.runs):
            s = time.perf_counter()
            subprocess.run([a.pare, "info", a.model, "--json"], stdout=subprocess.DEVNULL, check=True)
            t.append(time.perf_counter() - s)
        print(f"pare info (whole process): best {min(t) * 1000:.1f} ms, peak RSS {pare_rss:.0f} MB "
              f"({pare_rss / size_mb:.2f}x file)")


if __name__ == "__main__":
    main()
