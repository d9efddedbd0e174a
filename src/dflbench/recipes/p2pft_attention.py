"""P2P-FT Fig. 2: attention maps of one node's model under each algorithm, on test images of classes that node
never trains on (`write_attention`, drawn by `run_p2pft` after its results are on disk)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dflbench.vision import architecture_of

from .p2pft_algorithms import label, single_model

if TYPE_CHECKING:
    from dflbench.engines import SyncResult

    from .p2pft import P2PFTConfig


def unseen_test_images(data, part, node: int, count: int) -> torch.Tensor:
    """Indices of the first `count` test images of classes node `node` (numbered from 1) never trains on (Fig. 2's
    setting); empty when that node holds every class."""
    seen = np.flatnonzero(part.histograms(data.y_train.numpy(), data.num_classes)[node - 1])
    return torch.as_tensor(np.flatnonzero(~np.isin(data.y_test.numpy(), seen))[:count])


def attention_method(cfg: P2PFTConfig, model) -> str:
    """The map `cfg.attention_method` names; "auto": last-layer CLS attention for ViT / DeiT, Grad-CAM (captum)
    on the last stage for Swin, whose windowed attention has no CLS token."""
    if cfg.attention_method != "auto":
        return cfg.attention_method
    return "gradcam" if architecture_of(model) == "swin" else "cls"


def write_attention(path: Path, model, tail, transform, data, part, sims: dict[str, SyncResult], cfg: P2PFTConfig,
                    device: str) -> dict:
    """Fig. 2: node `cfg.attention_node`'s model under each algorithm (central: the single model) on test images
    of classes that node never saw, maps side by side (`dflbench.vision.plots.compare_attention`). A node that
    holds every class has no unseen classes: the figure is skipped and the reason recorded."""
    from dflbench.vision.plots import compare_attention

    node, method = cfg.attention_node, attention_method(cfg, model)
    idx = unseen_test_images(data, part, node, cfg.attention)
    if len(idx) == 0:
        reason = (f"node {node} holds every class under split {cfg.split!r}, so it has no unseen classes to show; "
                  "use --split classes or another --attention-node")
        print(f"note: attention maps skipped: {reason}", file=sys.stderr)
        return {"skipped": reason, "node": node, "method": method}
    models = {}
    for name, res in sims.items():
        row = 0 if single_model(name) else node - 1
        with torch.no_grad():
            for key, prm in tail.named_parameters():
                prm.copy_(res.params[key][row])
        models[label(name)] = copy.deepcopy(model).float().eval()
    images = transform(data.x_test[idx]).to(device)
    compare_attention(models, images, path, method=method)
    return {"path": str(path), "test_indices": idx.tolist(), "labels": data.y_test[idx].tolist(), "node": node,
            "method": method}

