"""Registry of the AEDFL methods: AEDFL, its ablations (Sec. 6.1), the 14 baselines of Table 1 and D-PSGD.

Every method is a class with a frozen options dataclass, registered where it is defined with `register_method`
and its metadata: `kind` (aedfl / server / decentralized / pruning), `paper` (authors, year, where in the AEDFL
paper it appears), `runtimes` (where it runs: the simulator, and for some the torch.distributed runtime) and
`options`. `make_method(name, options)` builds a fresh method object for `AsyncSimulator`: `options` is a dict
(validated and coerced by `dflbench.registry.Registry`: an unknown option raises a ValueError listing the valid
ones with their defaults) or the method's options instance. Adding a method is one file: a class with
`setup / on_complete / on_arrive / on_round / on_rejoin / eval_models / mflops` and its `register_method` line.

AEDFL itself is registered here: one class (`methods/aedfl/method.py`) with module switches, six names.
"""

from __future__ import annotations

from dflbench.errors import UserError
from dflbench.methods.aedfl.method import AEDFL, AEDFLOptions, AEDFLPruneOptions, aedfl_config
from dflbench.registry import Registry

KINDS = ("aedfl", "server", "decentralized", "pruning")
RUNTIMES = ("simulator", "distributed")
METHODS = Registry("method", metadata=("kind", "paper", "runtimes"))


def register_method(name: str, *, options: type, kind: str, paper: str, runtimes: tuple[str, ...] = ("simulator",)):
    """Decorator: register the method class (or factory) taking one `options` instance under `name`."""
    if kind not in KINDS:
        raise ValueError(f"method {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise ValueError(f"method {name!r}: runtimes must be a non-empty subset of {RUNTIMES}, got {runtimes!r}")
    return METHODS.register(name, options=options, kind=kind, paper=paper, runtimes=tuple(runtimes))


def list_methods() -> list[str]:
    return METHODS.list()


def method_options(name: str, options=None):
    """The options instance of method `name` from a dict (validated, defaults filled) or an instance."""
    return METHODS.options(name, options)


def make_method(name: str, options=None):
    """A fresh method object; `options`: a dict of the method's options or its options instance."""
    return METHODS.make(name, options)


def parse_method_option(text: str) -> tuple[str, str, object]:
    """'fedbuff.buffer=10' -> ('fedbuff', 'buffer', 10), the value parsed to the option's type (ValueError naming
    the valid methods or options when either is unknown, or the expected type when the value is not one)."""
    key, eq, value = text.partition("=")
    name, dot, field = key.partition(".")
    if not (eq and dot and name and field):
        raise UserError(f"method option {text!r} must be METHOD.OPTION=VALUE, e.g. fedbuff.buffer=10")
    return name, field, METHODS.parse_option(name, field, value)


# ---- AEDFL and its ablations (Sec. 6.1): name -> (RL selection, dynamic weights, pruning) ----------------------
ABLATIONS = {
    "aedfl": (True, True, True), "aedfl-0": (False, False, False), "aedfl-rl": (True, False, False),
    "aedfl-dwu": (False, True, False), "aedfl-p": (False, False, True), "aedfl-rl-dwu": (True, True, False),
}
def _register_aedfl(name: str, rl: bool, dwu: bool, prune: bool) -> None:
    paper = "Liu et al. 2024 (AEDFL Table 1)" if name == "aedfl" else "Liu et al. 2024 (AEDFL Sec. 6.1 ablation)"
    @register_method(name, options=AEDFLPruneOptions if prune else AEDFLOptions, kind="aedfl", paper=paper,
                     runtimes=("simulator", "distributed"))           # `dflbench.runtime.async_node` runs the step
    def build(options) -> AEDFL:
        """The pruning variants also take the adaptive-pruning options (Sec. 5)."""
        return AEDFL(name, aedfl_config(rl, dwu, prune, options), options)


for _name, (_rl, _dwu, _prune) in ABLATIONS.items():
    _register_aedfl(_name, _rl, _dwu, _prune)
