"""Shared tiny models and data for the pruning tests (fixtures return factories)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class TinyCNN(nn.Module):
    """conv-bn-relu, conv-relu, linear-relu, classifier: candidates of every conv/linear kind."""

    def __init__(self, in_ch: int = 2, classes: int = 3, bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(4, 5, 3)
        self.fc1 = nn.Linear(5 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.conv2(x)), 1)
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class TinyAttention(nn.Module):
    """timm-style attention (qkv / proj / num_heads), timm's unfused path (explicit matmuls, which
    torch.utils.flop_counter counts; it does not count the CPU SDPA kernel)."""

    def __init__(self, dim: int = 8, num_heads: int = 2):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        y = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 8, heads: int = 2, tokens: int = 5, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.attn = TinyAttention(dim, heads)
        self.mlp = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h)
        h = h + F.gelu(self.mlp(h))
        return self.head(h.mean(dim=1))


@pytest.fixture
def tiny_cnn():
    def make(seed: int = 0, dtype=torch.float64, bn: bool = True, batch: int = 6):
        torch.manual_seed(seed)
        model = TinyCNN(bn=bn).to(dtype)
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.randn(batch, 2, 6, 6, generator=gen, dtype=dtype)
        y = torch.randint(0, 3, (batch,), generator=gen)
        return model, (x, y)

    return make


@pytest.fixture
def tiny_vit():
    def make(seed: int = 0, dtype=torch.float64, batch: int = 4):
        torch.manual_seed(seed)
        model = TinyViT().to(dtype)
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.randn(batch, 5, 4, generator=gen, dtype=dtype)
        y = torch.randint(0, 3, (batch,), generator=gen)
        return model, (x, y)

    return make


@pytest.fixture
def tiny_mlp():
    """A 3-4-2 tanh MLP in float64 with its loss as a function of a parameter dict, and the flat exact Hessian."""

    def make(seed: int = 0, dtype=torch.float64):
        gen = torch.Generator().manual_seed(seed)
        params = {"w1": torch.randn(4, 3, generator=gen, dtype=dtype), "b1": torch.randn(4, generator=gen, dtype=dtype),
                  "w2": torch.randn(2, 4, generator=gen, dtype=dtype), "b2": torch.randn(2, generator=gen, dtype=dtype)}
        x = torch.randn(7, 3, generator=gen, dtype=dtype)
        y = torch.randint(0, 2, (7,), generator=gen)

        def loss_fn(p):
            h = torch.tanh(x @ p["w1"].T + p["b1"])
            return F.cross_entropy(h @ p["w2"].T + p["b2"], y)

        names = list(params)
        sizes = [params[n].numel() for n in names]

        def flat_loss(flat):
            parts = torch.split(flat, sizes)
            return loss_fn({n: t.reshape(params[n].shape) for n, t in zip(names, parts)})

        flat = torch.cat([params[n].reshape(-1) for n in names])
        hessian = torch.autograd.functional.hessian(flat_loss, flat)
        return loss_fn, params, hessian

    return make
