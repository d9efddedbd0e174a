"""pfl-research (Apple) FedAvg: `pfl.algorithm.FederatedAveraging` on a `SimulatedBackend` in this process, a
`PyTorchModel` around dflbench's LeNet-5 (local SGD lr 0.05 for 5 steps of batch 32, pfl's own batching of each
client's data in order; central SGD lr 1, so the new model is the average), `WeightByDatapoints` (the clients'
updates weighted by their data size, as FedAvg), C clients per round drawn without replacement (a permutation per
round, fed to pfl's `FederatedDataset` as its user sampler), no evaluation during training; the final model is
evaluated on the workload's evaluation set. Prints one JSON line (common.Report)."""

import sys

import numpy as np
import torch
import torch.nn.functional as F
from common import Report, Workload, accuracy, as_input, lenet5, single_thread


def main(path: str) -> None:
    single_thread()
    import pfl
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics, Weighted
    from pfl.model.pytorch import PyTorchModel

    w = Workload.load(path)
    torch.manual_seed(w.seed)
    x, y = as_input(w.x), torch.as_tensor(w.y)
    rng = np.random.default_rng(w.seed)
    report = Report("pfl", pfl.__version__ if hasattr(pfl, "__version__") else _version("pfl"))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = lenet5()

        def forward(self, xb):
            return self.net(xb)

        def loss(self, xb, yb, eval=False):
            self.eval() if eval else self.train()
            return F.cross_entropy(self(xb), yb)

        def metrics(self, xb, yb, eval=False):
            self.eval() if eval else self.train()
            out = self(xb)
            n = len(yb)
            return {"loss": Weighted(F.cross_entropy(out, yb, reduction="sum").item(), n),
                    "accuracy": Weighted(float((out.argmax(1) == yb).sum()), n)}

    def user_sampler():                                      # C distinct clients per round, random each round
        queue = []

        def next_user():
            if not queue:
                queue.extend(rng.permutation(w.clients)[:w.clients_per_round].tolist())
            return queue.pop(0)
        return next_user

    def make_dataset(k):
        idx = torch.as_tensor(w.parts[k])
        return Dataset(raw_data=[x[idx], y[idx]], user_id=str(k))

    class Timer(TrainingProcessCallback):
        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            report.round_done()
            return False, Metrics()

    net = Net()
    model = PyTorchModel(model=net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    train = FederatedDataset(make_dataset, user_sampler())
    backend = SimulatedBackend(training_data=train, val_data=train, postprocessors=[WeightByDatapoints()])
    params = NNAlgorithmParams(central_num_iterations=w.rounds, evaluation_frequency=10 ** 9,
                               train_cohort_size=w.clients_per_round, val_cohort_size=None)
    FederatedAveraging().run(algorithm_params=params, backend=backend, model=model,
                             model_train_params=NNTrainHyperParams(local_num_epochs=None, local_learning_rate=w.lr,
                                                                   local_batch_size=w.batch,
                                                                   local_num_steps=w.local_steps),
                             model_eval_params=NNEvalHyperParams(local_batch_size=1000), callbacks=[Timer()])
    report.emit(accuracy(net.net, w))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main(sys.argv[1])
