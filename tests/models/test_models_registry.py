import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.flop_counter import FlopCounterMode

from dflbench.models import list_models, make_model

IMAGE_MODELS = {"lenet5": (1, 28), "resnet8": (3, 32), "vgg9": (3, 32)}


def test_registry_lists_all_models():
    assert list_models() == ["lenet5", "resnet8", "textcnn", "vgg9"]


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="lenet5, resnet8, textcnn, vgg9"):
        make_model("alexnet", 10, 3, 32)


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_image_model_needs_shape(name):
    with pytest.raises(ValueError, match="in_channels and image_size"):
        make_model(name, 10)


def test_textcnn_needs_vocab_and_rejects_image_args():
    with pytest.raises(ValueError, match="vocab_size"):
        make_model("textcnn", 2)
    with pytest.raises(ValueError, match="text model"):
        make_model("textcnn", 2, 3, 32, vocab_size=10)


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
@pytest.mark.parametrize("size_mult", [1, 2])
def test_image_models_output_shape(name, size_mult):
    c, s = IMAGE_MODELS[name]
    model = make_model(name, 7, c, s * size_mult)
    assert model(torch.randn(2, c, s * size_mult, s * size_mult)).shape == (2, 7)


def test_lenet_matches_functional_reference_and_table1_mflops():
    torch.manual_seed(0)
    m = make_model("lenet5", 26, 1, 28)
    x = torch.randn(3, 1, 28, 28)
    p = dict(m.named_parameters())
    h = F.max_pool2d(F.relu(F.conv2d(x, p["features.0.weight"], p["features.0.bias"])), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["features.3.weight"], p["features.3.bias"])), 2).flatten(1)
    h = F.relu(F.linear(h, p["classifier.1.weight"], p["classifier.1.bias"]))
    h = F.relu(F.linear(h, p["classifier.3.weight"], p["classifier.3.bias"]))
    ref = F.linear(h, p["classifier.5.weight"], p["classifier.5.bias"])
    torch.testing.assert_close(m(x), ref)
    with FlopCounterMode(display=False) as fc:
        m(torch.randn(1, 1, 28, 28))
    macs = 6 * 24 * 24 * 25 + 16 * 8 * 8 * 150 + 256 * 120 + 120 * 84 + 84 * 26
    assert fc.get_total_flops() == 2 * macs
    assert round(macs / 1e6, 3) == 0.283  # AEDFL Table 1: 0.283 MFP for LeNet on EMNIST


def test_parameter_counts_match_architecture_formulas():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    vgg = make_model("vgg9", 10, 3, 32)
    convs = [(3, 32), (32, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
    expect = sum(ci * co * 9 + co for ci, co in convs) + (4096 * 512 + 512) + (512 * 512 + 512) + 512 * 10 + 10
    assert count(vgg) == expect
    res = make_model("resnet8", 10, 3, 32, norm="none")
    expect = 3 * 16 * 9 + (2 * 16 * 16 * 9) + (16 * 32 * 9 + 32 * 32 * 9 + 16 * 32) \
        + (32 * 64 * 9 + 64 * 64 * 9 + 32 * 64) + 64 * 10 + 10
    assert count(res) == expect
    assert len(list(make_model("resnet8", 10, 3, 32).buffers())) == 0  # batch stats only: vmappable


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_vmap_over_stacked_models_matches_loop(name):
    c, s = IMAGE_MODELS[name]
    torch.manual_seed(1)
    models = [make_model(name, 5, c, s) for _ in range(3)]
    params, _ = stack_module_state(models)
    base = make_model(name, 5, c, s).to("meta")
    x = torch.randn(3, 4, c, s, s)
    out = vmap(lambda p, xb: functional_call(base, p, (xb,)))(params, x)
    ref = torch.stack([m(x[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_textcnn_matches_manual_kim2014():
    torch.manual_seed(0)
    m = make_model("textcnn", 2, vocab_size=50, embed_dim=8, num_filters=4, dropout=0.0).eval()
    tokens = torch.randint(0, 50, (3, 12))
    tokens[:, -3:] = 0
    e = m.embedding.weight[tokens]
    assert torch.all(m.embedding.weight[0] == 0)
    feats = []
    for conv in m.convs:
        k = conv.kernel_size[0]
        windows = e.unfold(1, k, 1)  # [B, L-k+1, E, k]
        act = torch.einsum("btek,fek->btf", windows, conv.weight) + conv.bias
        feats.append(torch.relu(act).amax(dim=1))
    ref = torch.cat(feats, 1) @ m.fc.weight.T + m.fc.bias
    torch.testing.assert_close(m(tokens), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_rejects_unknown_options(name):
    """Every entry of the registry builds with its defaults (text models from a vocabulary size, image models from
    a shape); an option the constructor does not have is refused with the valid ones listed."""
    from dflbench.models.registry import MODELS

    text = "vocab_size" in MODELS.get(name).defaults()
    shape = {"vocab_size": 20} if text else {"in_channels": 3, "image_size": 32}
    model = make_model(name, 5, **shape)
    x = torch.randint(0, 20, (2, 12)) if text else torch.randn(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 5)
    with pytest.raises(ValueError, match=f"model '{name}' has no option 'nonsense'; valid: "):
        make_model(name, 5, nonsense=1, **shape)
