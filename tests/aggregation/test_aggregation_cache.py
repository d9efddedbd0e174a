"""NeighborCache and its slot table: slots match the topology's in-neighbours, atomic replacement under concurrent
threads, validation, consistent reads, the aggregated flags and the memory estimate."""

import os
import threading

import pytest
import torch

from dflbench.aggregation import FlatSpec, flatten_state, staleness
from dflbench.aggregation.cache import NeighborCache, in_neighbor_slots
from dflbench.topology import Topology, exponential, ring, star


@pytest.fixture
def net_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _directed() -> Topology:
    w = torch.eye(5)
    for i, j in [(0, 1), (0, 4), (1, 2), (2, 0), (2, 3), (2, 4), (3, 1), (4, 3)]:
        w[i, j] = 1.0                                                     # j sends to i
    return Topology(w, "directed")


@pytest.mark.parametrize("topo", [exponential(8), ring(5), star(5), _directed()], ids=lambda t: t.name)
def test_slot_table_lists_the_topologys_in_neighbours(topo):
    slots = in_neighbor_slots(topo.adjacency)
    degrees = [len(topo.in_neighbors(i)) for i in range(topo.n)]
    assert slots.K == max(degrees) and slots.rows.tolist() == list(range(topo.n))
    for i in range(topo.n):
        nb = topo.in_neighbors(i)
        assert slots.neighbors[i].tolist() == nb + [-1] * (slots.K - len(nb))
        assert slots.slot_of[i].tolist() == [nb.index(j) if j in nb else -1 for j in range(topo.n)]
    one = in_neighbor_slots(topo.adjacency, rows=[3])                    # one rank's table: the same row, same K
    assert one.K == slots.K and torch.equal(one.neighbors, slots.neighbors[3:4])
    assert torch.equal(one.slot_of, slots.slot_of[3:4]) and one.rows.tolist() == [3]
    with pytest.raises(ValueError, match="square bool"):
        in_neighbor_slots(topo.weights)
    with pytest.raises(ValueError, match="rows must be devices"):
        in_neighbor_slots(topo.adjacency, rows=[topo.n])


def _cache(spec, n=8, rows=None, **kw):
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[0, [3, 5, 7]] = True
    adj[1, [2, 3, 7]] = True
    adj[2, [0, 1]] = True
    return NeighborCache(in_neighbor_slots(adj, rows), spec, **kw)


def test_put_read_and_aggregated_flags(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    cache = _cache(spec, rows=[0, 1])
    assert cache.K == 3 and cache.models.shape == (2, 3, spec.numel)
    empty = cache.read(torch.tensor([0, 1]))
    assert not empty.valid.any() and (empty.loss == 1).all() and (empty.samples == 0).all()
    assert (empty.models == 0).all() and empty.masks.all()
    cache.put(0, 5, net_state, stamp=6, loss=0.7, samples=20)
    mask = {k: torch.rand(v.shape) < 0.5 for k, v in net_state.items()}
    flat = flatten_state(net_state) * 2
    cache.put(0, 3, flat, stamp=1, loss=0.2, samples=10, mask=mask, rate=0.4)
    cache.put(1, 7, flat + 1, stamp=2, loss=0.3, samples=5)
    flat.zero_()                                                           # the cache owns a copy
    v = cache.read(torch.tensor([0]))
    assert v.models[0, 0].abs().sum() > 0
    assert torch.equal(v.models[0, 1], flatten_state(net_state)) and v.masks[0, 1].all()
    assert torch.equal(v.masks[0, 0], flatten_state({k: m.float() for k, m in mask.items()}).bool())
    assert v.stamp.tolist() == [[1, 6, 0]] and v.valid.tolist() == [[True, True, False]]
    assert v.samples.tolist() == [[10.0, 20.0, 0.0]] and v.loss.tolist() == [[0.2, 0.7, 1.0]]
    assert v.rate.tolist() == [[0.4, 0.0, 0.0]]
    assert staleness(torch.tensor([10]), torch.cat([torch.tensor([[10]]), v.stamp], 1)).tolist() == \
        [[0.0, 9.0, 4.0, 10.0]]                                            # t_i - stamp, the receiver's counter
    both = cache.read(torch.tensor([1, 0]), masks=False)
    assert both.masks is None and both.valid.tolist() == [[False, False, True], [True, True, False]]

    cache.mark_aggregated(torch.tensor([0]), torch.tensor([[False, True, False]]), v.seq)
    assert cache.aggregated[0].tolist() == [False, True, False]
    cache.put(0, 5, net_state, stamp=7, loss=0.6, samples=20)
    assert not cache.aggregated[0, 1]                                      # a new model clears the flag
    stale_read = cache.read(torch.tensor([0]))
    cache.put(0, 3, net_state, stamp=8, loss=0.6, samples=20)             # arrives after the read
    cache.mark_aggregated(torch.tensor([0]), torch.tensor([[True, True, False]]), stale_read.seq)
    assert cache.aggregated[0].tolist() == [False, True, False], "the model that arrived later was not aggregated"


def test_rejected_inputs_leave_the_cache_unchanged(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    cache = _cache(spec)
    cache.put(2, 1, net_state, stamp=1, loss=1.0, samples=5)

    def state():
        return [t.clone() for t in (cache.models, cache.masks, cache.stamp, cache.loss, cache.samples, cache.rate,
                                    cache.valid, cache.aggregated, cache.seq)]

    before = state()
    nan_state = {k: v.clone() for k, v in net_state.items()}
    nan_state["0.bias"][0] = float("nan")
    bad = [
        (dict(model=nan_state), "NaN"),
        (dict(model=torch.cat([torch.tensor([float("inf"), -float("inf")]), torch.zeros(spec.numel - 2)])), "infinite"),
        (dict(model={k: v for k, v in net_state.items() if k != "2.bias"}), "missing"),
        (dict(model={**net_state, "2.weight": torch.zeros(3, 9)}), "shape"),
        (dict(model={**net_state, "2.bias": torch.zeros(3, dtype=torch.float64)}), "dtype"),
        (dict(model=torch.zeros(spec.numel + 1)), "flat model"),
        (dict(model=torch.zeros(spec.numel, dtype=torch.float64)), "flat model"),
        (dict(model=net_state, mask=torch.full((spec.numel,), 2.0)), "0 or 1"),
        (dict(model=net_state, mask=torch.ones(3)), "expected"),
        (dict(model=net_state, loss=float("inf")), "loss"),
        (dict(model=net_state, samples=0), "samples"),
        (dict(model=net_state, stamp=-3), "stamp"),
        (dict(model=net_state, rate=1.5), "rate"),
        (dict(model=[1, 2]), "state dict or a flat tensor"),
    ]
    for override, match in bad:
        kwargs = dict(stamp=2, loss=0.5, samples=5) | override
        model = kwargs.pop("model")
        with pytest.raises(ValueError, match=match):
            cache.put(2, 1, model, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(state(), before))
    huge = torch.full((spec.numel,), 3e38)                                 # finite, though its sum overflows
    cache.put(2, 0, huge, stamp=2, loss=0.5, samples=5)
    assert torch.equal(cache.models[2, 0], huge)
    with pytest.raises(ValueError, match=r"device 4 is not an in-neighbour of device 2 \(its in-neighbours: \[0, 1\]"):
        cache.put(2, 4, net_state, stamp=2, loss=0.5, samples=5)
    with pytest.raises(ValueError, match="not an in-neighbour"):
        cache.put(2, 99, net_state, stamp=2, loss=0.5, samples=5)


def test_concurrent_writer_and_readers_never_see_a_torn_model():
    p = 200_000
    spec = FlatSpec(("w",), ((p,),), (torch.float32,))
    cache = NeighborCache(in_neighbor_slots(torch.tensor([[False, True], [True, False]]), rows=[1]), spec,
                          concurrent=True)
    cache.put(0, 0, torch.ones(p), stamp=1, loss=1.0, samples=1)
    stop = threading.Event()
    errors = []

    def writer():
        for v in range(2, 300):
            cache.put(0, 0, torch.full((p,), float(v)), stamp=v, loss=float(v), samples=v)
        stop.set()

    def reader():
        while not stop.is_set():
            e = cache.read(torch.tensor([0]))
            lo, hi = e.models.min().item(), e.models.max().item()
            if not (lo == hi == e.stamp.item() == e.loss.item() == e.samples.item()):
                errors.append((lo, hi, e.stamp.item(), e.loss.item()))

    threads = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert cache.stamp.item() == 299


def test_reads_are_views_only_for_a_single_threaded_host_reading_every_row(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    sim = _cache(spec)
    assert sim.read(torch.arange(8)).models.data_ptr() == sim.models.data_ptr()
    assert sim.read(torch.tensor([0, 1])).models.data_ptr() != sim.models.data_ptr()
    rank = _cache(spec, rows=[0], concurrent=True)
    assert rank.read(torch.tensor([0])).models.data_ptr() != rank.models.data_ptr()


def test_memory_estimate(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    cache = _cache(spec)
    packed = (spec.numel + 7) // 8
    assert cache.nbytes == 8 * 3 * (4 * spec.numel + packed)
    assert cache.nbytes == cache.models.numel() * 4 + cache.pruned.numel()
    half = NeighborCache(cache.slots, spec, dtype=torch.bfloat16)
    assert half.nbytes == 8 * 3 * (2 * spec.numel + packed)


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 61])
def test_packed_masks_round_trip(numel):
    """A mask is stored as its pruned entries, eight to a byte; reading it back gives the mask."""
    from dflbench.aggregation.cache import pack_pruned, unpack_mask

    mask = torch.rand(3, 2, numel, generator=torch.Generator().manual_seed(numel)) < 0.5
    packed = pack_pruned(mask)
    assert packed.shape == (3, 2, (numel + 7) // 8) and packed.dtype == torch.uint8
    assert torch.equal(unpack_mask(packed, numel), mask)
    assert int(pack_pruned(torch.ones(numel, dtype=torch.bool)).count_nonzero()) == 0     # all kept: zero bytes
    ref = [sum(1 << b for b in range(8) if 8 * j + b < numel and not mask[0, 0, 8 * j + b]) for j in
           range(packed.shape[-1])]
    assert packed[0, 0].tolist() == ref


@pytest.mark.gpu
def test_gpu_cache_takes_models_from_the_cpu(net_state):
    spec = FlatSpec.from_state_dict(net_state)
    cache = _cache(spec, rows=[0], device="cuda", concurrent=True)
    cache.put(0, 3, net_state, stamp=1, loss=1.0, samples=1, mask=torch.rand(spec.numel) < 0.5)
    v = cache.read(torch.tensor([0]))
    assert v.models.is_cuda and v.masks.is_cuda
    assert torch.equal(v.models[0, 0].cpu(), flatten_state(net_state))


def _resident_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc to read resident memory")
def test_empty_slots_take_no_memory_until_written():
    """The cache's zeros are not written at construction (`_untouched_zeros`): a 194 MB cache (32 devices x 31 slots
    x 200 kB models) adds about nothing to the resident memory, and 20 slots filled in different rows about their
    own 4 MB (not a 2 MB huge page each)."""
    spec = FlatSpec.from_state_dict({"w": torch.zeros(50_000)})
    before = _resident_mb()
    cache = NeighborCache(in_neighbor_slots(torch.ones(32, 32, dtype=torch.bool)), spec)
    assert float(cache.read(torch.arange(32)).models.sum()) == 0.0                  # reading empty slots is free
    empty = _resident_mb() - before
    for row in range(20):
        cache.put(row, (row + 1) % 32, torch.ones(spec.numel), stamp=0, loss=1.0, samples=1,
                  mask=torch.rand(spec.numel) < 0.5)
    filled = _resident_mb() - before
    assert cache.nbytes > 190 * 2**20 and empty < 10 and filled - empty < 12
    assert int(cache.models[20:].count_nonzero()) == 0 and bool(cache.read(torch.tensor([25])).masks.all())
    assert int(cache.models[:20].count_nonzero()) == 20 * spec.numel
