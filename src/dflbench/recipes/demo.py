"""The `dflbench demo` experiment: P2P-FT in miniature on scikit-learn's embedded digits (CPU, < 2 minutes).

4 nodes on the directed hub_ring graph (not weight-balanced, so push-pull's A != B), class-disjoint split (node
classes 0-2, 3-5, 6-7, 8-9), a tiny timm ViT (8x8 input, 4x4 patches, 3 blocks of width 64), last block + head
trained, Local-FT vs P2P-FT vs centralized.
The frozen prefix is randomly initialised (no pretrained weights offline, and no honest pretraining data for
digits): through the residual stream the trainable last block still sees the patch embeddings, which suffices
for digits. The claim checked (paper, Table I in miniature): P2P-FT within `CLOSE` of centralized, and at least
`ABOVE` better than Local-FT, whose nodes never see 7-8 of the 10 classes.
"""

from __future__ import annotations

from dataclasses import replace

from dflbench.errors import UserError

from .p2pft import P2PFTConfig

DEMO = P2PFTConfig(
    model="vit_tiny_patch16_224", dataset="digits", nodes=4, topology="hub_ring", split="classes",
    algorithms=("local", "pushpull", "central"), epochs=30, lr=0.05, momentum=0.9, batch_size=32, device="cpu",
    seed=0, model_kwargs=(("img_size", 8), ("patch_size", 4), ("embed_dim", 64), ("depth", 3), ("num_heads", 4)),
)
CLOSE = 0.05
ABOVE = 0.40
THREADS = 1  # torch CPU threads of `dflbench demo`: one is fastest for this tiny model


def demo_config(**overrides) -> P2PFTConfig:
    return replace(DEMO, **overrides)


def check_claim(results: dict, close: float = CLOSE, above: float = ABOVE) -> tuple[bool, str]:
    """(holds, sentence): mean P2P-FT accuracy >= central - close and >= local + above."""
    acc = {r["algorithm"]: r["mean_accuracy"] for r in results["runs"]}
    missing = {"local", "pushpull", "central"} - set(acc)
    if missing:
        raise UserError(f"the claim compares local, pushpull and central; the results lack {sorted(missing)}")
    p, c, loc = acc["pushpull"], acc["central"], acc["local"]
    holds = p >= c - close and p >= loc + above
    text = (f"P2P-FT {100 * p:.2f}% vs centralized {100 * c:.2f}% (gap {100 * (c - p):+.2f} points, allowed "
            f"{100 * close:.0f}) and Local-FT {100 * loc:.2f}% (P2P-FT ahead by {100 * (p - loc):.2f} points, needed "
            f"{100 * above:.0f}): claim {'holds' if holds else 'does NOT hold'}")
    return holds, text
