import numpy as np
import pytest
import torch

from dflbench.engines.coordinator import Coordinator, FaultConfig
from dflbench.engines.devices import DeviceProfiles, load_profiles, sample_profiles
from dflbench.errors import UserError


def test_sample_profiles_seeded_lognormal():
    a, b = sample_profiles(5000, seed=3, sigma=0.5), sample_profiles(5000, seed=3, sigma=0.5)
    assert torch.equal(a.time_per_sample, b.time_per_sample)
    z = np.log(a.time_per_sample.numpy() / 1e-3)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 0.5) < 0.05
    assert not torch.equal(a.bandwidth, sample_profiles(5000, seed=4).bandwidth)


def test_profiles_from_csv_and_toml_agree(tmp_path):
    rows = [(0.001, 1e6, 0.01), (0.002, 2e6, 0.02), (0.004, 5e5, 0.0)]
    csv = tmp_path / "p.csv"
    csv.write_text("time_per_sample,bandwidth,latency\n" + "\n".join(",".join(map(str, r)) for r in rows))
    toml = tmp_path / "p.toml"
    toml.write_text("".join(f"[[device]]\ntime_per_sample = {a}\nbandwidth = {b}\nlatency = {c}\n" for a, b, c in rows))
    p, q = load_profiles(csv, n=3), load_profiles(toml)
    for name in ("time_per_sample", "bandwidth", "latency"):
        assert torch.equal(getattr(p, name), getattr(q, name))
    assert p.bandwidth.tolist() == [1e6, 2e6, 5e5]
    # comm time: latencies of both ends + bytes / slower link; the server side adds nothing
    t = p.comm_time(torch.tensor(0), torch.tensor(2), torch.tensor(1000))
    assert float(t) == pytest.approx(0.01 + 0.0 + 1000 / 5e5)
    assert float(p.comm_time(torch.tensor(1), torch.tensor(-1), torch.tensor(1000))) == pytest.approx(0.02 + 1000 / 2e6)


def test_profile_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_profiles(tmp_path / "none.csv")
    bad = tmp_path / "b.csv"
    bad.write_text("time_per_sample,bandwidth\n0.1,5\n")
    with pytest.raises(UserError, match="missing columns"):
        load_profiles(bad)
    with pytest.raises(UserError, match="describes 1 devices"):
        load_profiles(bad.with_name("c.csv").write_text("time_per_sample,bandwidth,latency\n1,1,0\n") and
                      bad.with_name("c.csv"), n=4)
    with pytest.raises(UserError, match="must be > 0"):
        DeviceProfiles.homogeneous(3, time_per_sample=0.0)
    toml = tmp_path / "p.toml"
    toml.write_text("[[device]\ntime_per_sample = 1\n")
    with pytest.raises(UserError, match="p.toml is not valid TOML"):
        load_profiles(toml)


def test_coordinator_indices_and_heartbeats():
    c = Coordinator(3, heartbeat_interval=1.0, timeout=2.5)
    assert [c.register(u) for u in ("a", "b", "c")] == [0, 1, 2]
    with pytest.raises(ValueError, match="indices are taken"):
        c.register("d")
    c.device_failed(1, now=4.2)                       # last beat at 4.0
    assert c.alive_view(6.4).tolist() == [True, True, True]
    assert c.alive_view(6.6).tolist() == [True, False, True]
    assert c.register("b") == 1                       # rejoin keeps the index
    assert c.alive_view(10.0).all()


def test_fault_config_validation():
    with pytest.raises(UserError):
        FaultConfig(prob=1.0)
    with pytest.raises(UserError):
        FaultConfig(schedule=((0, 5.0, 2.0),))
