"""NeighborCache: atomic replacement under concurrent threads, validation, stacking, placement policy."""

import threading

import pytest
import torch

from dflbench.aggregation import FlatSpec, flatten_state
from dflbench.aggregation.cache import NeighborCache
from dflbench.aggregation.placement import PlacementPolicy, cache_nbytes, choose_placement, placement_decision


@pytest.fixture
def net_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_put_get_stack(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    cache = NeighborCache([3, 5, 7], spec)
    assert cache.put(5, net_state, version=4, arrival_time=1.5, loss=0.7, samples=20)
    mask = {k: torch.rand(v.shape) < 0.5 for k, v in net_state.items()}
    flat = flatten_state(net_state) * 2
    assert cache.put(3, flat, version=9, arrival_time=2.0, loss=0.2, samples=10, mask=mask)
    e = cache.get(5)
    assert torch.equal(e.model, flatten_state(net_state)) and e.version == 4 and e.mask.all()
    flat.zero_()                                   # the cache owns a copy
    assert cache.get(3).model.abs().sum() > 0
    assert not cache.put(3, flat, version=8, arrival_time=3.0, loss=0.1, samples=10)   # older than cached
    assert cache.get(3).version == 9
    cache.mark_aggregated([5])
    local = torch.zeros(spec.numel)
    st = cache.stack(t_local=10, local_model=local, local_loss=0.5, local_samples=30)
    assert st.models.shape == (4, spec.numel) and st.neighbors == (3, 5, 7)
    assert st.versions.tolist() == [10, 9, 4, 10]
    assert st.staleness.tolist() == [0.0, 1.0, 6.0, 0.0]
    assert st.valid.tolist() == [True, True, True, False]
    assert st.aggregated.tolist() == [False, False, True, False]
    assert st.samples.tolist() == [30.0, 10.0, 20.0, 0.0]
    assert torch.equal(st.masks[1], flatten_state({k: m.float() for k, m in mask.items()}).bool())
    assert torch.equal(st.models[3], local)
    assert cache.put(5, net_state, version=5, arrival_time=4.0, loss=0.6, samples=20)
    assert not cache.get(5).aggregated               # a new model clears the flag


def test_rejected_inputs_leave_the_cache_unchanged(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    cache = NeighborCache([1, 2], spec)
    cache.put(1, net_state, version=1, arrival_time=0.0, loss=1.0, samples=5)
    before = cache.snapshot()
    nan_state = {k: v.clone() for k, v in net_state.items()}
    nan_state["0.bias"][0] = float("nan")
    bad = [
        (dict(model=nan_state), "NaN"),
        (dict(model={k: v for k, v in net_state.items() if k != "2.bias"}), "missing"),
        (dict(model={**net_state, "2.weight": torch.zeros(3, 9)}), "shape"),
        (dict(model={**net_state, "2.bias": torch.zeros(3, dtype=torch.float64)}), "dtype"),
        (dict(model=torch.zeros(spec.numel + 1)), "flat model"),
        (dict(model=torch.zeros(spec.numel, dtype=torch.float64)), "flat model"),
        (dict(model=net_state, mask=torch.full((spec.numel,), 2.0)), "0 or 1"),
        (dict(model=net_state, loss=float("inf")), "loss"),
        (dict(model=net_state, samples=0), "samples"),
        (dict(model=net_state, version=-3), "version"),
        (dict(model=[1, 2]), "state dict or a flat tensor"),
    ]
    for override, match in bad:
        kwargs = dict(version=2, arrival_time=1.0, loss=0.5, samples=5) | override
        model = kwargs.pop("model")
        with pytest.raises(ValueError, match=match):
            cache.put(1, model, **kwargs)
        assert cache.snapshot() == before
    with pytest.raises(ValueError, match="not an in-neighbor"):
        cache.put(4, net_state, version=2, arrival_time=1.0, loss=0.5, samples=5)


def test_concurrent_writer_and_readers_never_see_a_torn_model():
    p = 200_000
    spec = FlatSpec(("w",), ((p,),), (torch.float32,))
    cache = NeighborCache([0], spec)
    cache.put(0, torch.zeros(p), version=0, arrival_time=0.0, loss=0.0, samples=1)
    stop = threading.Event()
    errors = []

    def writer():
        for v in range(1, 300):
            cache.put(0, torch.full((p,), float(v)), version=v, arrival_time=float(v), loss=float(v), samples=v)
        stop.set()

    def reader():
        while not stop.is_set():
            e = cache.get(0)
            lo, hi = e.model.min().item(), e.model.max().item()
            if not (lo == hi == e.version == e.loss):
                errors.append((lo, hi, e.version, e.loss))

    threads = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert cache.get(0).version == 299


def test_placement_policy(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    assert cache_nbytes(spec, 3) == 3 * (4 * spec.numel + spec.numel)
    assert cache_nbytes(spec, 3, torch.bfloat16, with_masks=False) == 3 * 2 * spec.numel
    auto = PlacementPolicy()
    assert placement_decision(100, 1000, auto) == "cuda"
    assert placement_decision(900, 1000, auto) == "cpu"          # above the 80% headroom
    assert placement_decision(100, None, auto) == "cpu"          # no GPU
    assert placement_decision(100, 1000, PlacementPolicy("cpu")) == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        placement_decision(100, None, PlacementPolicy("gpu"))
    with pytest.raises(ValueError, match="MiB"):
        placement_decision(10**9, 10**6, PlacementPolicy("gpu"))
    with pytest.raises(ValueError, match="valid: auto, gpu, cpu"):
        PlacementPolicy("disk")
    cache = NeighborCache.placed([1, 2], spec, caches_sharing=100)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert cache.device.type == expected == choose_placement(cache.nbytes).type


@pytest.mark.gpu
def test_gpu_cache_falls_back_to_cpu_when_too_big(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    free = torch.cuda.mem_get_info()[0]
    assert choose_placement(10 * free).type == "cpu"
    cache = NeighborCache.placed([1], spec, PlacementPolicy("gpu"))
    cache.put(1, net_state, version=1, arrival_time=0.0, loss=1.0, samples=1)
    assert cache.get(1).model.is_cuda
