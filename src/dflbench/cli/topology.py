"""`dflbench topology show NAME --nodes N [--plot out.png]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from dflbench.errors import user_input
from dflbench.topology import (
    is_column_stochastic,
    is_doubly_stochastic,
    is_row_stochastic,
    list_topologies,
    make_topology,
    mixing_matrices,
    spectral_gap,
)

from .errors import user_errors

app = typer.Typer(help="Inspect communication graphs and their mixing matrices.", no_args_is_help=True)


def plot_topology(topology, path: Path) -> Path:
    """Draw the graph with networkx + matplotlib (circular layout, arrows for directed edges) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = topology.to_networkx()
    g.remove_edges_from(nx.selfloop_edges(g))
    fig, ax = plt.subplots(figsize=(5, 5))
    nx.draw_networkx(g, pos=nx.circular_layout(g), ax=ax, arrows=topology.directed, node_color="#8ecae6",
                     node_size=max(60, 600 - 5 * topology.n), with_labels=topology.n <= 64, arrowsize=10)
    ax.set_title(f"{topology.name}: {topology.n} nodes, {topology.num_edges()} edges")
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


@app.command("show")
@user_errors
def show(
    name: str = typer.Argument(..., help=f"One of: {', '.join(list_topologies())}"),
    nodes: int = typer.Option(..., "--nodes", "-n", help="Number of nodes."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG drawing of the graph here."),
):
    """Print a graph's size, connectivity, stochasticity of A/B/MH and spectral gaps."""
    with user_input(f"topology {name!r} on {nodes} nodes"):
        topo = make_topology(name, nodes)
    console = Console()
    strong = topo.is_strongly_connected()
    table = Table(title=f"topology {topo.name}")
    table.add_column("property")
    table.add_column("value")
    table.add_row("nodes", str(topo.n))
    table.add_row("edges (directed, no self-loops)", str(topo.num_edges()))
    table.add_row("directed", str(topo.directed))
    table.add_row("strongly connected", str(strong))
    if strong:
        labels = {"A": "A (row)", "B": "B (column)", "MH": "MH"}
        for key, m in mixing_matrices(topo).items():
            label = labels[key]
            kinds = [k for k, ok in (("row", is_row_stochastic(m)), ("column", is_column_stochastic(m)),
                                     ("doubly", is_doubly_stochastic(m))) if ok]
            table.add_row(f"{label} stochastic", ", ".join(kinds) or "no")
            table.add_row(f"{label} spectral gap", f"{spectral_gap(m):.6f}")
    else:
        table.add_row("unreachable", str(topo.unreachable()))
    console.print(table)
    if plot is not None:
        console.print(f"wrote {plot_topology(topo, plot)}")
