"""`DistributedCommunicator`: the dflbench.mixing Communicator across processes (torch.distributed point-to-point).

Each rank holds only the rows of the nodes it hosts (`local`). For a mix with matrix m (m_ij > 0 iff j sends to
i), rank r sends to each peer rank p, in ONE message, the rows of its nodes j that have an out-neighbour on p,
and receives from p the rows of p's nodes that have an out-neighbour on r; all sends and receives of the call
go out together through `dist.batch_isend_irecv`. Then every local row i applies its row of the matrix:

    x_i <- sum_j m_ij x_j   over j local or received          (P2P-FT Alg. 1 lines 4 and 7, eq. 1)

so a row-stochastic A and a column-stochastic B are used exactly as the simulator's `A @ X` / `B @ X` would.
All leaves of the mixed tree are packed into one buffer per dtype, so a message is the flattened parameter
(or tracker) rows, nothing else. No all-reduce and no gather: only `mean` (Centralized) all-reduces, as its
contract says. With one node per rank the bytes put on the wire equal `mix_bytes`, the analytic count.

A peer that dies closes its sockets and the exchange fails at once; one that hangs fails it when the process
group's timeout (`init_process_group(timeout_s=...)`) runs out. Either way the exchange raises `PeerFailure`
naming the peer rank whose message failed, so the run stops instead of stalling and says which rank to look at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from dflbench.errors import RunAborted
from dflbench.mixing import Communicator, MixingMatrix, Tree, tree_leaves
from dflbench.runtime.backend import node_placement


class PeerFailure(RunAborted):
    """A point-to-point exchange with a peer rank failed: the peer died, or stopped answering within the process
    group's timeout. `rank` is this process, `peer` the rank that failed and `via` the rank whose message failed
    here when that is another one (a survivor that stopped on `peer`'s failure before answering this rank)."""

    def __init__(self, rank: int, peer: int, cause: BaseException, hint: str = "", via: int | None = None):
        self.rank, self.peer, self.cause, self.via = rank, peer, cause, via
        first = transport_error(cause)
        exchange = peer if via is None else via
        after = "" if via is None or via == peer else f" after rank {peer} failed first"
        super().__init__(f"rank {rank}: the exchange with rank {exchange} failed ({first}){after}; rank {peer} "
                         "died or stopped answering within the peer timeout" + (f"; {hint}" if hint else ""))

    def with_hint(self, hint: str) -> "PeerFailure":
        """The same failure with what the caller can do about it appended to the message."""
        return PeerFailure(self.rank, self.peer, self.cause, hint, self.via)

    @classmethod
    def agreed(cls, rank: int, peer: int, cause: BaseException) -> "PeerFailure":
        """The failure every surviving rank reports: the first failed rank any rank recorded in the process group's
        store (this one records `peer` if none is there yet), so that a rank whose exchange failed only because a
        survivor stopped still names the rank that died or hung."""
        try:
            first = int(dist.distributed_c10d._get_default_store().compare_set(FAILED_KEY, "", str(peer)))
        except Exception:  # noqa: BLE001 - no store (or it is gone): name the rank whose message failed
            first = peer
        return cls(rank, first, cause, via=None if first == peer else peer)

    @staticmethod
    def recorded() -> int | None:
        """The first failed rank a survivor recorded in the process group's store (None: none, or no store)."""
        try:
            store = dist.distributed_c10d._get_default_store()
            return int(store.get(FAILED_KEY)) if store.check([FAILED_KEY]) and store.get(FAILED_KEY) else None
        except Exception:  # noqa: BLE001 - no store (or it is gone)
            return None


def transport_error(cause: BaseException) -> str:
    """What a transport error says, in a few words: its first line without gloo's source location ("[/path/pair.cc:545]
    "), TensorPipe's "(this error originated at ...)" and the advice after the first sentence."""
    text = str(cause).strip()
    first = text.splitlines()[0] if text else type(cause).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)
    first = re.sub(r"\s*\(this error originated at [^)]*\)", "", first)
    return first.split(". ")[0][:200]


FAILED_KEY = "dflbench/failed_rank"  # the process-group store key of the first rank a survivor lost


@dataclass(frozen=True)
class ExchangePlan:
    """Who sends which rows for one matrix: `send[p]` / `recv[p]` are global node ids sent to / received from p;
    `cols` the global ids whose rows enter this rank's mix (local first, then received in peer order) and
    `weights` = m[local, cols], the local rows of the matrix restricted to those columns (float64)."""

    send: dict[int, torch.Tensor]
    recv: dict[int, torch.Tensor]
    cols: torch.Tensor
    weights: torch.Tensor
    copies: dict = field(default_factory=dict)

    def weights_on(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """`weights` on `device` in `dtype`, cached."""
        key = (str(device), dtype)
        if key not in self.copies:
            self.copies[key] = self.weights.to(device=device, dtype=dtype)
        return self.copies[key]


class DistributedCommunicator(Communicator):
    """Mixing across ranks; rank `rank` of `world_size` hosts `node_placement(n, world_size) == rank`."""

    def __init__(self, n_nodes: int, rank: int | None = None, world_size: int | None = None, group=None):
        if rank is None or world_size is None:
            if not dist.is_initialized():
                raise ValueError("DistributedCommunicator needs an initialised process group "
                                 "(dflbench.runtime.init_process_group) or explicit rank and world_size")
            rank, world_size = dist.get_rank(group), dist.get_world_size(group)
        self.n, self.rank, self.world_size, self.group = n_nodes, rank, world_size, group
        self.placement = node_placement(n_nodes, world_size)
        self.local = torch.nonzero(self.placement == rank).flatten()
        self._pos = torch.full((n_nodes,), -1, dtype=torch.int64)
        self._pos[self.local] = torch.arange(len(self.local))
        self._plans: dict[int, tuple[MixingMatrix, ExchangePlan]] = {}
        self.wire_bytes = 0       # bytes this rank has put on the wire in mix calls
        self.messages = 0         # point-to-point messages this rank has sent

    # --- interface ----------------------------------------------------------------------------------

    def num_nodes(self, n_local: int) -> int:
        self._check_rows(n_local)
        return self.n

    def node_ids(self, n_local: int) -> torch.Tensor:
        self._check_rows(n_local)
        return self.local.clone()

    def mix(self, m: MixingMatrix, x: Tree) -> Tree:
        if m.n != self.n:
            raise ValueError(f"{m.name} is {m.n}x{m.n} but the job runs {self.n} nodes")
        leaves = tree_leaves(x)
        for leaf in leaves:
            self._check_rows(leaf.shape[0])
        plan = self.plan(m)
        out: list[torch.Tensor | None] = [None] * len(leaves)
        for dtype in dict.fromkeys(leaf.dtype for leaf in leaves):
            idx = [k for k, leaf in enumerate(leaves) if leaf.dtype == dtype]
            flat = torch.cat([leaves[k].reshape(len(self.local), -1) for k in idx], dim=1)
            mixed = self._mix_flat(m, plan, flat)
            sizes = [leaves[k][0].numel() for k in idx]
            for k, part in zip(idx, mixed.split(sizes, dim=1)):
                out[k] = part.reshape(leaves[k].shape)
        return _unflatten_like(x, iter(out))

    def mean(self, x: Tree) -> Tree:
        """(1/n) sum over all nodes, via one all-reduce of the local row sums per leaf."""
        def one(leaf: torch.Tensor) -> torch.Tensor:
            self._check_rows(leaf.shape[0])
            total = leaf.sum(dim=0, keepdim=True)
            dist.all_reduce(total, group=self.group)
            return (total / self.n).expand_as(leaf).clone()
        return _unflatten_like(x, iter([one(leaf) for leaf in tree_leaves(x)]))

    # --- exchange ------------------------------------------------------------------------------------

    def plan(self, m: MixingMatrix) -> ExchangePlan:
        """The exchange for `m` (cached per matrix object; time-varying schedules give a new one per step)."""
        hit = self._plans.get(id(m))
        if hit is not None and hit[0] is m:
            return hit[1]
        adj = (m.weights > 0) & ~torch.eye(self.n, dtype=torch.bool)
        send, recv = {}, {}
        for p in range(self.world_size):
            if p == self.rank:
                continue
            theirs = torch.nonzero(self.placement == p).flatten()
            s = self.local[adj[theirs][:, self.local].any(dim=0)]
            r = theirs[adj[self.local][:, theirs].any(dim=0)]
            if len(s):
                send[p] = s
            if len(r):
                recv[p] = r
        cols = torch.cat([self.local] + list(recv.values()))
        plan = ExchangePlan(send, recv, cols, m.weights[self.local][:, cols])
        if len(self._plans) > 8:
            self._plans.clear()
        self._plans[id(m)] = (m, plan)
        return plan

    def _mix_flat(self, m: MixingMatrix, plan: ExchangePlan, flat: torch.Tensor) -> torch.Tensor:
        flat = flat.contiguous()
        ops, bufs = [], []
        for p, rows in plan.send.items():
            payload = flat[self._pos[rows].to(flat.device)].contiguous()
            ops.append(dist.P2POp(dist.isend, payload, p, self.group))
            self.wire_bytes += payload.numel() * payload.element_size()
            self.messages += 1
        for p, rows in plan.recv.items():
            buf = torch.empty(len(rows), flat.shape[1], dtype=flat.dtype, device=flat.device)
            ops.append(dist.P2POp(dist.irecv, buf, p, self.group))
            bufs.append(buf)
        if ops:
            try:
                reqs = dist.batch_isend_irecv(ops)
            except RuntimeError as exc:
                raise PeerFailure.agreed(self.rank, ops[0].peer, exc) from exc
            for op, req in zip(ops, reqs):
                try:
                    req.wait()
                except RuntimeError as exc:     # gloo: connection closed / reset, or the group timeout
                    raise PeerFailure.agreed(self.rank, op.peer, exc) from exc
        gathered = torch.cat([flat] + bufs) if bufs else flat
        w = plan.weights_on(flat.device, flat.dtype)
        with torch.autocast(flat.device.type, enabled=False):
            return w @ gathered

    def _check_rows(self, n_local: int) -> None:
        if n_local != len(self.local):
            raise ValueError(f"rank {self.rank} hosts {len(self.local)} nodes ({self.local.tolist()}) but the local "
                             f"tensors have {n_local} rows; give each rank only its own node rows")


def _unflatten_like(tree: Tree, leaves) -> Tree:
    """Rebuild `tree`'s structure from `leaves` (consumed in `tree_leaves` order: dict keys sorted)."""
    if isinstance(tree, torch.Tensor):
        return next(leaves)
    if isinstance(tree, Mapping):
        rebuilt = {k: _unflatten_like(tree[k], leaves) for k in sorted(tree)}
        return {k: rebuilt[k] for k in tree}
    return type(tree)(_unflatten_like(item, leaves) for item in tree)
