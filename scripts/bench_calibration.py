#!/usr/bin/env python3
"""Calibration side by side: `pare quantize` (default build, `--engine auto`) against
onnxruntime's `quantize_static` with MinMax, on the same samples, each in a child process of
its own so its wall time and peak resident memory (ru_maxrss) are its alone.

    scripts/bench_calibration.py [--model M.onnx] [--images DIR] [--samples 32]
                                 [--pare target/release/pare] [--python PY]

Needs a Python with onnx, onnxruntime, numpy and pillow (`--python`, default: this one). pare
finds onnxruntime's library through PARE_ORT_LIB, which this script points at that Python's
onnxruntime package. The samples are made once: every image of --images (recursively) resized
to the model's input size, plus its mirror, a centre crop and a corner crop, until --samples
are there; ImageNet mean/std, NCHW float32, one .npy per sample. Both tools read those .npy
files, so they calibrate on identical data.

pare runs its whole `quantize` (calibration, weights, the output-SQNR check on one sample,
writing); onnxruntime its whole `quantize_static` (calibration, weights, writing). pare's JSON
also gives its calibration time alone.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_samples(model_path, images_dir, n, out_dir):
    import numpy as np
    import onnx
    from PIL import Image

    m = onnx.load(model_path, load_external_data=False)
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    h, w = dims[2] or 512, dims[3] or 512
    files = sorted(
        p
        for p in glob.glob(os.path.join(images_dir, "**", "*"), recursive=True)
        if p.lower().endswith((".png", ".jpg", ".jpeg"))
    )
    if not files:
        sys.exit(f"no images under {images_dir}")
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]

    def variants(img):
        iw, ih = img.size
        yield img
        yield img.transpose(Image.FLIP_LEFT_RIGHT)
        yield img.crop((iw // 8, ih // 8, iw - iw // 8, ih - ih // 8))
        yield img.crop((0, 0, iw * 2 // 3, ih * 2 // 3))

    paths = []
    for v in range(4):
        for f in files:
            if len(paths) == n:
                break
            img = list(variants(Image.open(f).convert("RGB")))[v]
            x = np.asarray(img.resize((w, h), Image.BILINEAR), np.float32) / 255.0
            x = ((x.transpose(2, 0, 1) - mean) / std)[None].astype(np.float32)
            p = os.path.join(out_dir, f"sample_{len(paths):03d}.npy")
            np.save(p, x)
            paths.append(p)
    while len(paths) < n:  # fewer than n/4 images: repeat with a shift
        x = np.load(paths[len(paths) % len(files)])
        p = os.path.join(out_dir, f"sample_{len(paths):03d}.npy")
        np.save(p, np.roll(x, len(paths), axis=3))
        paths.append(p)
    return paths


def ort_child(model, samples_dir, out):
    """The onnxruntime side, run as its own process."""
    import numpy as np
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    name = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.files = iter(sorted(glob.glob(os.path.join(samples_dir, "*.npy"))))

        def get_next(self):
            f = next(self.files, None)
            return None if f is None else {name: np.load(f)}

    t = time.time()
    quantize_static(
        model,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    print(json.dumps({"seconds": time.time() - t}))


def run_child(cmd, env=None):
    """Wall seconds, peak RSS in MiB, stdout of `cmd` run as a child process."""
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.time() - t
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(f"{cmd[0]} failed ({status}): {out.decode()[-2000:]}")
    return wall, ru.ru_maxrss / 1024.0, out.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/work/shared/models/dev/tv_deeplabv3_mobilenet_v3_large.onnx")
    ap.add_argument("--images", default="/work/shared/images")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--pare", default=os.path.join(ROOT, "target", "release", "pare"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--ort-child", nargs=3, metavar=("MODEL", "SAMPLES", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_child:
        ort_child(*a.ort_child)
        return
    capi = subprocess.check_output(
        [a.python, "-c", "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))"],
        text=True,
    ).strip()
    lib = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")))[-1]
    with tempfile.TemporaryDirectory(prefix="pare-bench-") as d:
        samples = os.path.join(d, "samples")
        os.mkdir(samples)
        make_samples(a.model, a.images, a.samples, samples)
        env = dict(os.environ, PARE_ORT_LIB=lib)
        env.pop("PARE_ENGINE", None)
        pare_cmd = [
            a.pare, "quantize", a.model, "-o", os.path.join(d, "pare.onnx"),
            "--calib", samples, "--samples", str(a.samples), "--method", "minmax",
            "--format", "ort", "--eval-samples", "1", "--no-layer-diagnostics", "--json",
        ]
        p_wall, p_rss, p_out = run_child(pare_cmd, env)
        report = json.loads(p_out)
        ort_cmd = [a.python, os.path.abspath(__file__), "--ort-child", a.model, samples, os.path.join(d, "ort.onnx")]
        o_wall, o_rss, o_out = run_child(ort_cmd)
        o_cal = json.loads(o_out.strip().splitlines()[-1])["seconds"]
    cpus = os.cpu_count()
    print(f"model    {os.path.basename(a.model)}, {a.samples} samples, {cpus} CPUs")
    print(f"pare     engine {report.get('engine')}: wall {p_wall:.1f} s (calibration {report['calibration_seconds']:.1f} s), peak {p_rss:.0f} MiB")
    print(f"ort      quantize_static MinMax: wall {o_wall:.1f} s (quantize_static {o_cal:.1f} s), peak {o_rss:.0f} MiB")
    print(f"ratio    pare/ort wall {p_wall / o_wall:.2f}, peak memory {p_rss / o_rss:.2f}")
    print(json.dumps({
        "samples": a.samples,
        "pare": {"engine": report.get("engine"), "wall_s": p_wall, "calibration_s": report["calibration_seconds"], "peak_mib": p_rss},
        "onnxruntime": {"wall_s": o_wall, "quantize_static_s": o_cal, "peak_mib": o_rss},
        "wall_ratio": p_wall / o_wall,
        "memory_ratio": p_rss / o_rss,
    }))


if __name__ == "__main__":
    main()
