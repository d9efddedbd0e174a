"""Flower 1.42 FedAvg in its Simulation Runtime (`flwr.simulation.run_simulation`, Ray backend, one actor of one
CPU, so one training thread): a `ServerApp` running `flwr.serverapp.strategy.FedAvg` (fraction_train = C / N, at
least C nodes, no federated evaluation; the clients' models averaged weighted by their "num-examples", as FedAvg)
and a `ClientApp` whose train step is the plain loop's (dflbench's LeNet-5, 5 SGD steps of lr 0.05 on random
minibatches of 32 of the node's partition, `partition-id` = client index). Round ends are read from the strategy's
`evaluate_fn`, which Flower calls after each round's aggregation (it evaluates only after the last). Prints one
JSON line (common.Report)."""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))                # Ray workers import `common` too
from common import Report, Workload, accuracy, lenet5, loaded, single_thread  # noqa: E402


def main(path: str) -> None:
    single_thread()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent),
                                                os.environ.get("PYTHONPATH", "")])
    import flwr
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    w = Workload.load(path)
    report = Report("Flower (simulation, Ray, 1 worker)", flwr.__version__)
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context):
        single_thread()
        wl, x, y, parts = loaded(path)
        k = int(context.node_config["partition-id"])
        model = lenet5()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=wl.lr)
        for _ in range(wl.local_steps):
            idx = parts[k][torch.randint(len(parts[k]), (wl.batch,))]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(parts[k])})})
        return Message(content=content, reply_to=msg)

    server = ServerApp()
    final = {}

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        torch.manual_seed(w.seed)
        strategy = FedAvg(fraction_train=w.clients_per_round / w.clients, fraction_evaluate=0.0,
                          min_train_nodes=w.clients_per_round, min_available_nodes=w.clients)

        def timed(server_round, arrays):
            if server_round > 0:
                report.round_done()
            return None

        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(lenet5().state_dict()), num_rounds=w.rounds,
                                evaluate_fn=timed)
        model = lenet5()
        model.load_state_dict(result.arrays.to_torch_state_dict())
        final["accuracy"] = accuracy(model, w)

    run_simulation(server_app=server, client_app=client, num_supernodes=w.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 1, "num_gpus": 0, "include_dashboard": False}})
    report.emit(final["accuracy"])


if __name__ == "__main__":
    main(sys.argv[1])
