"""Makes the tiny import-weights fixtures (run once with torch 2.13; outputs are committed).

tiny.onnx: a conv+BN+ReLU, depthwise conv+BN, PReLU, pool, Linear net exported with BatchNorm
folded (eval mode) and the exporter's renamed weights (onnx::Conv_*), like torchvision exports.
tiny_*.pt / .safetensors: its state_dict in each format pare reads, plus broken variants.
"""
import collections
import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.manual_seed(0)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4),
            nn.PReLU(4),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


m = Tiny()
with torch.no_grad():  # non-trivial BatchNorm statistics
    for bn in (m.features[1], m.features[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
m.eval()
torch.onnx.export(m, torch.randn(1, 3, 8, 8), "tiny.onnx", dynamo=False, opset_version=17,
                  input_names=["input"], output_names=["logits"])
sd = m.state_dict()
torch.save(sd, "tiny_zip.pt")
torch.save(sd, "tiny_legacy.pt", _use_new_zipfile_serialization=False)
torch.save(collections.OrderedDict(("module." + k, v) for k, v in sd.items()), "tiny_module.pt")
save_file({k: v.contiguous() for k, v in sd.items()}, "tiny.safetensors")
d = collections.OrderedDict(sd)
del d["features.4.running_var"]
torch.save(d, "tiny_removed.pt")
d = collections.OrderedDict(sd)
d["fc.weight"] = d["fc.weight"][:2].clone()
torch.save(d, "tiny_shape.pt")
