#!/usr/bin/env python3
"""Export the real PyTorch ONNX fixtures committed under tests/data/.

Each model below is a tiny nn.Module that reproduces one pattern that real
PyTorch exports of vision models contain and that pare has to cope with
(see tests/data/README.md for which seed case each one covers).  The models
are exported with the exporter that real users hit for that pattern -- the
classic TorchScript exporter (``dynamo=False``) or the new ``torch.export``
based one (``dynamo=True``) -- at opset 17.

For every file the script asserts that

* ``onnx.checker.check_model(full_check=True)`` passes,
* onnxruntime loads and runs it, and its outputs match PyTorch's on a seeded
  random input (max abs diff < 1e-4),
* weights are stored inside the .onnx file (no external data files),

and it writes ``tests/data/manifest.json`` describing every file (inputs,
outputs, op histogram, node/initializer counts, exporter, versions).

Usage (needs torch, onnx, onnxscript, onnxruntime and numpy; *not* part of
CI, the generated files are committed):

    python scripts/export_fixtures.py [--out-dir tests/data]

Everything is deterministic: each model is built right after
``torch.manual_seed(0)`` and its test input comes from a seeded numpy RNG,
so re-running on the same library versions gives the same weights and graphs
(the dynamo exporter's stack-trace metadata does record this script's path
and line numbers, so edits here change that file's bytes).
"""
import argparse
import collections
import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

OPSET = 17
# The dynamo exporter targets opset 18 natively.  Asked for 17 (torch 2.15 /
# onnxscript 0.7), it tries onnx's C version converter, which fails on its
# ReduceMean (axes still a computed input at that point) and leaves the model at
# 18 with a traceback in the log; converting the finished model down to 17
# works but the C converter drops every node's metadata_props -- the very thing
# that fixture is for.  So that one file is exported at its native opset 18.
DYNAMO_OPSET = 18
TOL = 1e-4
MAX_TOTAL_BYTES = 2 * 1024 * 1024  # all fixtures together stay under 2 MB

ort.set_default_logger_severity(3)
# torch.onnx logs a warning per torchvision op it cannot register when torchvision
# is absent (it is not needed here).
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
# The classic exporter is deprecated and chatty (TracerWarning on shape-dependent
# Python code, DeprecationWarning for dynamo=False); none of that is actionable here.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", category=UserWarning)


# --------------------------------------------------------------------------- helpers


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    Freshly built BatchNorms are the identity in eval mode (mean 0, var 1,
    weight 1, bias 0); random values make sure a wrong fold or a dropped BN
    in a consumer actually changes the outputs.  Uses the global torch RNG,
    so it is deterministic under the per-model ``torch.manual_seed(0)``.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    return model


def conv_bn_relu(cin, cout, k=3, stride=1, padding=None, dilation=1):
    """The ubiquitous Conv2d(bias=False) -> BatchNorm2d -> ReLU triple."""
    if padding is None:
        padding = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


# --------------------------------------------------------------------------- models


class StereoSqueeze(nn.Module):
    """PSMNet-style stereo network in miniature.

    Shared 2-D feature extractor (stride 2) on both views, a concatenation
    cost volume [1, 2C, D, H/2, W/2] built by shifting the right features
    with F.pad and stacking per disparity, a Conv3d+BN3d+ReLU at stride 2,
    a ConvTranspose3d back up (stride 2, output_padding=1 -- the ONNX
    attribute most importers forget), a trilinear upsample to full
    resolution, ``torch.squeeze(x, 1)`` of the now single-channel volume,
    softmax over disparity and disparity regression (sum of p * d).

    Why the trilinear upsample sits between ConvTranspose3d and squeeze:
    exported with dynamic height/width, the Resize gets its ``sizes`` from
    Shape ops, so the exporter cannot prove dim 1 is 1 and emits squeeze as
    ``If(Equal(Shape(x)[1], 1), Squeeze, Identity)`` -- exactly what a real
    PSMNet export contains.  Squeezing the ConvTranspose3d output directly
    exports a plain Squeeze, because its channel count is known statically.
    """

    def __init__(self, feat=8, max_disp_feat=8):
        super().__init__()
        self.d = max_disp_feat  # disparities at feature (1/2) resolution
        self.feature = nn.Sequential(conv_bn_relu(3, feat, stride=2), conv_bn_relu(feat, feat))
        self.cost = nn.Sequential(
            nn.Conv3d(2 * feat, 8, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(8),
            nn.ReLU(inplace=True),
        )
        self.up = nn.ConvTranspose3d(8, 1, 3, stride=2, padding=1, output_padding=1, bias=False)

    def forward(self, left, right):
        fl = self.feature(left)
        fr = self.feature(right)
        # Concatenation cost volume: for disparity d, pair left(x) with right(x - d).
        slices = [torch.cat([fl, fr], 1)]
        for d in range(1, self.d):
            slices.append(torch.cat([fl, F.pad(fr[:, :, :, :-d], (d, 0))], 1))
        volume = torch.stack(slices, 2)  # [1, 2C, D, H/2, W/2]
        x = self.up(self.cost(volume))  # [1, 1, D, H/2, W/2]
        full_d = 2 * self.d
        x = F.interpolate(
            x, size=(full_d, left.size(2), left.size(3)), mode="trilinear", align_corners=False
        )  # [1, 1, 2D, H, W]
        x = torch.squeeze(x, 1)  # -> ONNX If under dynamic axes
        prob = F.softmax(x, dim=1)
        disp = torch.arange(full_d, dtype=prob.dtype).view(1, full_d, 1, 1)
        return torch.sum(prob * disp, 1)  # [1, H, W]


class ClampMin(nn.Module):
    """Conv net using ``torch.clamp(x, min=0)`` as its activation.

    The classic exporter turns a min-only clamp into ``Clip(x, min, "")``:
    the ``max`` input is present but empty.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.clamp(self.conv1(x), min=0)
        x = torch.clamp(self.conv2(x), min=0)
        return self.head(x)


class GatherElementsNet(nn.Module):
    """Conv net that uses ``torch.gather(..., dim=1)`` -> ONNX GatherElements.

    Two flavours: a data-dependent index (per-pixel argmax channel of one
    branch selects values from another branch) and a constant int64 index
    buffer (a per-pixel channel permutation) that ends up as an initializer.
    Both index the channel axis, so channel pruning upstream must not break
    them silently.
    """

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.score = nn.Conv2d(8, 6, 1)
        self.value = nn.Conv2d(8, 6, 1)
        g = torch.Generator().manual_seed(0)
        # [1, 6, 16, 16] channel indices in [0, 6): a fixed per-pixel shuffle.
        perm = torch.stack([torch.randperm(6, generator=g) for _ in range(16 * 16)], 1)
        self.register_buffer("perm", perm.view(1, 6, 16, 16))
        self.head = nn.Conv2d(7, 4, 1)

    def forward(self, x):
        f = self.stem(x)
        s = self.score(f)
        v = self.value(f)
        idx = torch.argmax(s, dim=1, keepdim=True)  # [1, 1, H, W]
        picked = torch.gather(v, 1, idx)  # data-dependent GatherElements
        shuffled = torch.gather(v, 1, self.perm)  # constant-index GatherElements
        return self.head(torch.cat([picked, shuffled], 1))


class InterpVariants(nn.Module):
    """``F.interpolate`` in the flavours real models use, one output each.

    size= vs scale_factor=, bilinear with align_corners True/False,
    nearest with size= and with a fractional scale_factor.  These map to
    Resize with ``sizes`` vs ``scales`` inputs and different
    coordinate_transformation_mode / nearest_mode attributes.
    """

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 4)

    def forward(self, x):
        f = self.stem(x)  # [1, 4, 16, 16]
        return (
            F.interpolate(f, size=(24, 40), mode="bilinear", align_corners=False),
            F.interpolate(f, scale_factor=2.0, mode="bilinear", align_corners=False),
            F.interpolate(f, size=(31, 31), mode="bilinear", align_corners=True),
            F.interpolate(f, scale_factor=2.0, mode="bilinear", align_corners=True),
            F.interpolate(f, size=(40, 24), mode="nearest"),
            F.interpolate(f, scale_factor=0.5, mode="nearest"),
        )


INTERP_OUTPUTS = [
    "bilinear_size",
    "bilinear_scale",
    "bilinear_align_size",
    "bilinear_align_scale",
    "nearest_size",
    "nearest_scale",
]


class BasicBlock(nn.Module):
    """torchvision-style ResNet BasicBlock; strided blocks get a 1x1 conv+BN shortcut."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """Stem, one identity-shortcut block, one strided block, GAP, flatten, Linear(10)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class ASPPPooling(nn.Module):
    """DeepLabV3 image-pooling branch: GAP -> 1x1 conv+BN+ReLU -> upsample back."""

    def __init__(self, cin, cout):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = conv_bn_relu(cin, cout, k=1)

    def forward(self, x):
        size = x.shape[-2:]
        return F.interpolate(self.proj(self.pool(x)), size=size, mode="bilinear", align_corners=False)


class ASPPSeg(nn.Module):
    """Tiny stride-4 backbone + DeepLabV3 ASPP head + 4-class classifier, upsampled to input size."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn_relu(3, 8, stride=2), conv_bn_relu(8, 16, stride=2))
        c = 8
        self.branches = nn.ModuleList(
            [
                conv_bn_relu(16, c, k=1),  # 1x1
                conv_bn_relu(16, c, dilation=2),  # 3x3, rate 2
                conv_bn_relu(16, c, dilation=3),  # 3x3, rate 3
                ASPPPooling(16, c),  # image pooling
            ]
        )
        self.project = conv_bn_relu(4 * c, c, k=1)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        f = torch.cat([b(f) for b in self.branches], 1)
        out = self.classifier(self.project(f))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- specs

# name -> how to build, feed and export it.  "inputs" are concrete shapes used for
# the export trace and the check; "extra_check_shapes" are further input shapes the
# dynamic-axes model must also run at (and match torch at).
SPECS = [
    dict(
        name="stereo_squeeze",
        build=StereoSqueeze,
        exporter="classic",
        inputs={"left": [1, 3, 32, 64], "right": [1, 3, 32, 64]},
        outputs=["disparity"],
        dynamic_axes={
            "left": {2: "height", 3: "width"},
            "right": {2: "height", 3: "width"},
            "disparity": {1: "height", 2: "width"},
        },
        extra_check_shapes=[{"left": [1, 3, 48, 96], "right": [1, 3, 48, 96]}],
    ),
    dict(
        name="clamp_min",
        build=ClampMin,
        exporter="classic",
        inputs={"input": [1, 3, 32, 32]},
        outputs=["output"],
    ),
    dict(
        name="gather_elements",
        build=GatherElementsNet,
        exporter="classic",
        inputs={"input": [1, 3, 16, 16]},
        outputs=["output"],
    ),
    dict(
        name="interp_variants",
        build=InterpVariants,
        exporter="classic",
        inputs={"input": [1, 3, 16, 16]},
        outputs=INTERP_OUTPUTS,
    ),
    dict(
        name="resnet_block_dynamo",
        build=TinyResNet,
        exporter="dynamo",
        inputs={"input": [1, 3, 32, 32]},
        outputs=["logits"],
    ),
    dict(
        name="aspp_seg",
        build=ASPPSeg,
        exporter="classic",
        inputs={"input": [1, 3, 64, 64]},
        outputs=["output"],
    ),
]


# --------------------------------------------------------------------------- export


def export(spec, model, example, path: Path):
    """Export with the exporter named in the spec; weights end up inside the file."""
    args = tuple(example[n] for n in spec["inputs"])
    names = list(spec["inputs"])
    if spec["exporter"] == "classic":
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=spec["outputs"],
            dynamic_axes=spec.get("dynamic_axes"),
            do_constant_folding=True,
        )
    else:
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            opset_version=DYNAMO_OPSET,
            verbose=False,
            input_names=names,
            output_names=spec["outputs"],
            optimize=True,
        )
        program.save(str(path), external_data=False)
    # Belt and braces: whatever the exporter did, the committed file must be
    # self-contained.  If any initializer points at an external file, load the
    # data, save everything inline (onnx.save(..., save_as_external_data=False))
    # and delete the side files.
    header = onnx.load(str(path), load_external_data=False)
    side_files = {
        e.value
        for t in header.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    if side_files:
        proto = onnx.load(str(path), load_external_data=True)
        onnx.save(proto, str(path), save_as_external_data=False)
        for f in side_files:
            (path.parent / f).unlink(missing_ok=True)


def value_info_json(vi):
    """{name, dtype, shape} with symbolic dims as strings ('?' when unnamed)."""
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append("?")
    return {
        "name": vi.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
        "shape": shape,
    }


def subgraph_nodes(graph):
    """Nodes inside If/Loop/Scan bodies (recursively), not counting the top level."""
    n = 0
    for node in graph.node:
        for a in node.attribute:
            gs = [a.g] if a.HasField("g") else list(a.graphs)
            for g in gs:
                n += len(g.node) + subgraph_nodes(g)
    return n


def describe(spec, path: Path, proto: onnx.ModelProto, check_shapes):
    g = proto.graph
    hist = collections.Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in g.node
    )
    meta_nodes = sum(1 for n in g.node if len(n.metadata_props) > 0)
    meta_keys = sorted({p.key for n in g.node for p in n.metadata_props})
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "exporter": spec["exporter"],
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxscript_version": _onnxscript_version(),
        "ir_version": proto.ir_version,
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [value_info_json(v) for v in g.input],
        "outputs": [value_info_json(v) for v in g.output],
        "node_count": len(g.node),
        "subgraph_node_count": subgraph_nodes(g),
        "initializer_count": len(g.initializer),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "nodes_with_metadata_props": meta_nodes,
        "metadata_prop_keys": meta_keys,
        "checked_input_shapes": check_shapes,
    }


def _onnxscript_version():
    try:
        import onnxscript

        return onnxscript.__version__
    except ImportError:  # only the dynamo exporter needs it
        return None


def check(spec, model, path: Path):
    """checker(full_check) + onnxruntime vs torch at each check shape; returns max diff."""
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(spec["inputs"]), sess.get_inputs()
    assert [o.name for o in sess.get_outputs()] == spec["outputs"], sess.get_outputs()
    worst = 0.0
    shapes = [spec["inputs"]] + spec.get("extra_check_shapes", [])
    for k, shape_set in enumerate(shapes):
        rng = np.random.default_rng(k)
        feed = {n: rng.standard_normal(s).astype(np.float32) for n, s in shape_set.items()}
        got = sess.run(None, feed)
        with torch.no_grad():
            ref = model(*[torch.from_numpy(feed[n]) for n in spec["inputs"]])
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        assert len(got) == len(ref)
        for name, a, b in zip(spec["outputs"], got, ref):
            b = b.numpy()
            assert a.shape == b.shape, f"{spec['name']}.{name}: ort {a.shape} vs torch {b.shape}"
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
            assert diff < TOL, f"{spec['name']}.{name} at {shape_set}: max abs diff {diff}"
            worst = max(worst, diff)
    return worst, shapes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(__file__).resolve().parent.parent / "tests" / "data"
    ap.add_argument("--out-dir", type=Path, default=default_out)
    out_dir = ap.parse_args().out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # keeps float reductions in torch reproducible run to run

    manifest = {
        "generator": "scripts/export_fixtures.py",
        "opset": OPSET,
        "opset_dynamo": DYNAMO_OPSET,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxscript_version": _onnxscript_version(),
        "onnxruntime_version": ort.__version__,
        "models": {},
    }
    total = 0
    for spec in SPECS:
        torch.manual_seed(0)
        model = randomize_batchnorm(spec["build"]()).eval()
        rng = np.random.default_rng(1234)
        example = {
            n: torch.from_numpy(rng.standard_normal(s).astype(np.float32))
            for n, s in spec["inputs"].items()
        }
        path = out_dir / f"{spec['name']}.onnx"
        export(spec, model, example, path)
        assert not any(p.suffix == ".data" for p in out_dir.iterdir()), "external data left behind"
        worst, shapes = check(spec, model, path)
        proto = onnx.load(str(path))
        info = describe(spec, path, proto, shapes)

        # Per-model properties the fixture exists for; fail loudly if an exporter
        # upgrade stops producing them.
        hist = info["op_histogram"]
        if spec["name"] == "stereo_squeeze":
            assert hist.get("If", 0) >= 1, "squeeze did not export as an If node"
            ct = [n for n in proto.graph.node if n.op_type == "ConvTranspose"]
            assert any(
                list(a.ints) == [1, 1, 1] for n in ct for a in n.attribute if a.name == "output_padding"
            ), "ConvTranspose3d lost output_padding"
        if spec["name"] == "clamp_min":
            clips = [n for n in proto.graph.node if n.op_type == "Clip"]
            assert clips and all(len(n.input) < 3 or n.input[2] == "" for n in clips), "Clip has a max"
        if spec["name"] == "gather_elements":
            assert hist.get("GatherElements", 0) == 2
        if spec["name"] == "interp_variants":
            assert hist.get("Resize", 0) == len(INTERP_OUTPUTS)
        want_opset = DYNAMO_OPSET if spec["exporter"] == "dynamo" else OPSET
        assert info["opset_import"].get("ai.onnx") == want_opset, info["opset_import"]
        if spec["name"] == "resnet_block_dynamo":
            assert info["nodes_with_metadata_props"] > 0, "dynamo export lost node metadata_props"
        if spec["name"] == "aspp_seg":
            assert hist.get("Concat", 0) >= 1 and hist.get("Resize", 0) >= 2

        manifest["models"][path.name] = info
        total += info["bytes"]
        print(
            f"{path.name:28s} {spec['exporter']:7s} {info['bytes']:8d} B  "
            f"nodes={info['node_count']:4d} inits={info['initializer_count']:3d}  "
            f"ort-vs-torch max|diff|={worst:.2e}  OK"
        )

    assert total < MAX_TOTAL_BYTES, f"fixtures total {total} bytes (limit {MAX_TOTAL_BYTES})"
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(SPECS)} models, {total} bytes total; wrote {out_dir / 'manifest.json'}")


if __name__ == "__main__":
    sys.exit(main())
