"""dflbench.recipes: experiment drivers that compose the library (data, models, engines, methods, runtime) into
the runs the CLI offers: `p2pft` (P2P-FT Table I), `aedfl` (AEDFL Table 1), `pretrain`, `demo`, and their
torch.distributed forms (`p2pft_distributed`, `aedfl_distributed`). Nothing imports a recipe except the CLI."""
