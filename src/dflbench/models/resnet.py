"""ResNet-8 (He et al. 2016, the CIFAR family with 6n+2 layers, n=1) as used by DisPFL/AEDFL.

3x3 stem conv (16) -> three stages of one BasicBlock each (16, 32, 64 channels, stride 1, 2, 2; 1x1
projection shortcut where the shape changes) -> global average pool -> fc. Normalisation `norm`:
"batch" is BatchNorm without running statistics (it normalises with the batch's statistics in train and
eval, so the model holds no buffers and vmaps over stacked device parameters), "group" GroupNorm
(8 groups), "none" no normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dflbench.errors import UserError

from .registry import register_model, require_image_shape

NORMS = ("batch", "group", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise UserError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet8(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, norm: str = "batch", width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.layer1 = BasicBlock(width, width, 1, norm)
        self.layer2 = BasicBlock(width, 2 * width, 2, norm)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2, norm)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean(dim=(2, 3)))


@register_model("resnet8")
def resnet8(num_classes: int, in_channels: int | None, image_size: int | None, norm: str = "batch",
            width: int = 16) -> ResNet8:
    require_image_shape("resnet8", in_channels, image_size, min_size=4)
    if width < 1:
        raise UserError(f"resnet8: width must be positive, got {width}")
    return ResNet8(num_classes, in_channels, norm=norm, width=width)
