"""Exports the transformer / channels-last / recurrent fixtures pare's tests/xformer.rs reads.

Run with a Python that has torch, onnx and onnxruntime:
    python tests/data/gen_xformer.py
Deterministic (seeded). Each model is exported with the classic exporter at opset 17,
checked with onnx.checker, and compared with onnxruntime to 1e-4.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class FusedAttention(nn.Module):
    """timm ViT attention: one qkv Linear, reshape to (3, heads, head_dim), unbind."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.hd = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.hd**-0.5
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class SplitAttention(nn.Module):
    """Separate q, k, v projections, heads by view + transpose."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.hd = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        def heads(t):
            return t.view(b, n, self.heads, self.hd).transpose(1, 2)
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.hd**0.5, dim=-1)
        return self.o((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, attn, act):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, act)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding, class token, two blocks (fused qkv + GELU, separate q/k/v + QuickGELU)."""

    def __init__(self, dim=32, heads=4, hidden=64, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(
            Block(dim, heads, hidden, FusedAttention, nn.GELU()),
            Block(dim, heads, hidden, SplitAttention, QuickGELU()),
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dim=32, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


class CRNN(nn.Module):
    """Conv features → sequence over width → bidirectional LSTM → per-step classifier."""

    def __init__(self, classes=12):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d((4, 1)),
        )
        self.rnn = nn.LSTM(32, 32, bidirectional=True)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # [T, B, C]
        y, _ = self.rnn(f)
        return self.fc(y)


class WindowAttention(nn.Module):
    """Swin window attention: fused qkv, relative-position bias table gathered per head."""

    def __init__(self, dim, heads, win):
        super().__init__()
        self.heads, self.hd, self.win = heads, dim // heads, win
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * win - 1) ** 2, heads) * 0.1)
        c = torch.stack(torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + (win - 1)
        self.register_buffer("index", rel[..., 0] * (2 * win - 1) + rel[..., 1])

    def forward(self, x, mask=None):
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.hd**-0.5) @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, res, win, shift):
        super().__init__()
        self.res, self.win, self.shift = res, win, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, win)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim, nn.GELU())
        mask = None
        if shift:
            img = torch.zeros(1, res, res, 1)
            cnt = 0
            for hs in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
                for ws in (slice(0, -win), slice(-win, -shift), slice(-shift, None)):
                    img[:, hs, ws, :] = cnt
                    cnt += 1
            mw = self.partition(img).squeeze(-1)
            mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        self.register_buffer("mask", mask)

    def partition(self, x):
        b, h, w, c = x.shape
        x = x.view(b, h // self.win, self.win, w // self.win, self.win, c)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, self.win * self.win, c)

    def forward(self, x):
        b, l, c = x.shape
        r, win = self.res, self.win
        y = self.norm1(x).view(b, r, r, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = self.attn(self.partition(y), self.mask)
        y = y.view(b, r // win, r // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, r, r, c)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, l, c)
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    def __init__(self, dim=32, heads=4, classes=10):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(SwinBlock(dim, heads, 8, 4, 0), SwinBlock(dim, heads, 8, 4, 2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(1))


class MobileViTBlock(nn.Module):
    """Local conv, unfold into patches, transformer over patches, fold, fuse with the input."""

    def __init__(self, ch, dim, heads=2, patch=2):
        super().__init__()
        self.p = patch
        self.local = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, dim, 1))
        self.block = Block(dim, heads, 2 * dim, SplitAttention, nn.SiLU())
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Sequential(nn.Conv2d(dim, ch, 1), nn.SiLU())
        self.fuse = nn.Sequential(nn.Conv2d(2 * ch, ch, 3, padding=1), nn.SiLU())

    def forward(self, x):
        b, _, h, w = x.shape
        y = self.local(x)
        d, p = y.shape[1], self.p
        nh, nw = h // p, w // p
        y = y.reshape(b * d * nh, p, nw, p).transpose(1, 2)
        y = y.reshape(b, d, nh * nw, p * p).transpose(1, 3).reshape(b * p * p, nh * nw, d)
        y = self.norm(self.block(y))
        y = y.reshape(b, p * p, nh * nw, d).transpose(1, 3).reshape(b * d * nh, nw, p, p)
        y = y.transpose(1, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.proj(y)], 1))


class MobileViT(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.SiLU())
        self.mv = MobileViTBlock(16, 32)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.mv(self.stem(x)).mean((2, 3)))


def channel_shuffle(x, groups):
    # unflatten/flatten: the Reshape targets keep batch, height and width from Shape, so the
    # export is not tied to the traced input size.
    return x.unflatten(1, (groups, x.shape[1] // groups)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1): chunk, branch on one half, concat, channel shuffle."""

    def __init__(self, ch):
        super().__init__()
        half = ch // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1, groups=half), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1), nn.BatchNorm2d(half), nn.ReLU(),
        )

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2)


class ShuffleNet(nn.Module):
    def __init__(self, ch=64, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ch, 3, 2, 1), nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(ch), ShuffleUnit(ch))
        self.head = nn.Linear(ch, classes)

    def forward(self, x):
        return self.head(self.units(self.stem(x)).mean((2, 3)))


def export(name, model, x, dynamic=False):
    torch.manual_seed(0)
    model.eval()
    path = os.path.join(HERE, name)
    with torch.no_grad():
        ref = model(x).numpy()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes=axes)
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4, name
    size = os.path.getsize(path)
    assert size < 200_000, (name, size)
    print(name, size, sorted({n.op_type for n in m.graph.node}))


def main():
    torch.manual_seed(0)
    export("vit_tiny.onnx", ViT(), torch.randn(1, 3, 16, 16))
    # The same with a dynamic batch: Reshape targets come from Shape at run time.
    torch.manual_seed(0)
    export("vit_dynbatch.onnx", ViT(), torch.randn(1, 3, 16, 16), dynamic=True)
    torch.manual_seed(1)
    export("convnext_tiny.onnx", ConvNeXt(), torch.randn(1, 3, 32, 32))
    torch.manual_seed(2)
    export("crnn_bilstm.onnx", CRNN(), torch.randn(1, 1, 8, 32))
    torch.manual_seed(3)
    export("swin_tiny.onnx", Swin(), torch.randn(1, 3, 32, 32))
    torch.manual_seed(4)
    export("mobilevit_tiny.onnx", MobileViT(), torch.randn(1, 3, 16, 16))
    torch.manual_seed(5)
    net = ShuffleNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    export("shufflenet_tiny.onnx", net, torch.randn(1, 3, 16, 16))


if __name__ == "__main__":
    main()
