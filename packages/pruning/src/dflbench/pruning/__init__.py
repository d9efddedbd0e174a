"""dflbench-pruning: Hessian-vector products, spectra, AEDFL's Hessian-aware adaptive pruning, masks, FLOPs.

Functional core (`curvature`): `loss_fn(params) -> scalar`, params a dict of tensors, optional subset `names`.
Module wrappers (`modules`), structured candidates (`candidates`), AEDFL 5.12-5.16 (`taylor`, `rates`,
`scoring`, `prune`), masks (`masks`), FLOP counting (`flops`) and the same batched over devices (`batched`).
"""

from .batched import (
    CURVATURE_PATHS,
    DeviceCurvature,
    device_curvature,
    select_device_units,
    unit_scores,
)
from .candidates import CandidateGroup, CandidateSet, ParamSlice, find_candidates, is_attention
from .curvature import (
    Eigenpairs,
    HessianOperator,
    LanczosResult,
    SpectralDensity,
    TraceEstimate,
    eigenvalue_density,
    gradient,
    hessian_diagonal,
    hessian_trace,
    hessian_vector_product,
    lanczos,
    make_generator,
    probe_diagonal,
    top_eigenvalues,
)
from .flops import FlopCount, count_flops, structured_mfp
from .masks import (
    KeptCount,
    MaskHandle,
    apply_flat_mask,
    apply_masks,
    count_kept,
    flat_mask,
    mask_keys,
    masks_from_flat,
)
from .modules import (
    batch_loss_fn,
    layer_names,
    model_eigenvalue_density,
    model_hessian_trace,
    model_hvp,
    model_loss_fn,
    model_params,
    model_top_eigenvalues,
)
from .prune import PruneResult, PruningConfig, local_rate, prune_model, select_units
from .rates import (
    RateEstimate,
    check_moved,
    check_rate,
    eigengap_rate,
    eigengap_rates,
    estimate_lipschitz,
    lossless_rate,
    neighbor_weighted_rate,
    neighbor_weighted_rates,
    secant_lipschitz,
)
from .scoring import (
    Scores,
    ScoringContext,
    get_scoring_rule,
    list_scoring_rules,
    null_mass,
    proportional_group_rates,
    register_scoring_rule,
)
from .taylor import (
    TaylorImpact,
    aedfl_objective,
    diagonal_impact,
    exploration_weight,
    inverse_diagonal,
    taylor_impact,
    taylor_loss_change,
    unit_diagonal_impact,
)

__all__ = [
    "CURVATURE_PATHS", "DeviceCurvature", "device_curvature", "unit_scores", "select_device_units",
    "probe_diagonal", "unit_diagonal_impact",
    "check_moved", "eigengap_rates", "neighbor_weighted_rates", "secant_lipschitz", "diagonal_impact",
    "CandidateGroup", "CandidateSet", "ParamSlice", "find_candidates", "is_attention",
    "Eigenpairs", "HessianOperator", "LanczosResult", "SpectralDensity", "TraceEstimate", "eigenvalue_density",
    "gradient", "hessian_diagonal", "hessian_trace", "hessian_vector_product", "lanczos", "make_generator",
    "top_eigenvalues", "FlopCount", "count_flops", "KeptCount", "MaskHandle", "apply_flat_mask", "apply_masks",
    "count_kept", "flat_mask", "mask_keys", "masks_from_flat", "batch_loss_fn", "layer_names",
    "model_eigenvalue_density", "model_hessian_trace", "model_hvp", "model_loss_fn", "model_params",
    "model_top_eigenvalues", "PruneResult", "PruningConfig", "local_rate", "prune_model", "select_units",
    "RateEstimate", "check_rate", "eigengap_rate", "estimate_lipschitz", "lossless_rate", "neighbor_weighted_rate",
    "Scores", "ScoringContext", "get_scoring_rule", "list_scoring_rules", "register_scoring_rule", "null_mass",
    "proportional_group_rates", "structured_mfp",
    "TaylorImpact", "aedfl_objective", "exploration_weight", "inverse_diagonal", "taylor_impact",
    "taylor_loss_change",
]
