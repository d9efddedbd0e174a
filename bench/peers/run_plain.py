"""The plain PyTorch FedAvg a user writes: one LeNet-5, one SGD optimizer, `for client in sampled clients`: load
the global weights, 5 SGD steps on random minibatches of 32 of the client's data, add the weights times the
client's share of the round's data (McMahan et al. 2017, Alg. 1); C clients sampled per round without
replacement (torch.randperm). Prints one JSON line (common.Report)."""

import sys

import torch
import torch.nn.functional as F
from common import Report, Workload, accuracy, as_input, lenet5, single_thread


def main(path: str) -> None:
    single_thread()
    w = Workload.load(path)
    x, y = as_input(w.x), torch.as_tensor(w.y)
    parts = [torch.as_tensor(p) for p in w.parts]
    gen = torch.Generator().manual_seed(w.seed)
    torch.manual_seed(w.seed)
    model = lenet5()
    opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    report = Report("plain PyTorch loop", torch.__version__)
    for _ in range(w.rounds):
        chosen = torch.randperm(w.clients, generator=gen)[:w.clients_per_round].tolist()
        total = sum(len(parts[c]) for c in chosen)
        avg = {k: torch.zeros_like(v) for k, v in glob.items()}
        for c in chosen:
            model.load_state_dict(glob)
            for _ in range(w.local_steps):
                idx = parts[c][torch.randint(len(parts[c]), (w.batch,), generator=gen)]
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                avg[k] += v * (len(parts[c]) / total)
        glob = avg
        report.round_done()
    model.load_state_dict(glob)
    report.emit(accuracy(model, w))


if __name__ == "__main__":
    main(sys.argv[1])
