"""dflbench-vision: timm model factory, freezing policies, frozen-feature cache, stacked per-node tails,
attention maps (P2P-FT Sec. V, Fig. 2)."""

from .attention import attention_rollout, attention_weights, capture_attention, cls_attention, rollout
from .attribution import ChannelsFirstProbe, gradcam, integrated_gradients
from .cache import FeatureCache, check_deterministic
from .models import CheckpointReport, architecture_of, check_model_name, create_model, eval_mode, load_checkpoint
from .nodes import NodeStack, forward_nodes, load_node, node_params, stack_params
from .plots import attention_map, compare_attention, list_map_methods, overlay
from .policies import FreezingPolicy, apply_policy, layout, list_policies, parse_policy
from .split import Tail, VitHead, VitPrefix, split_for_cache

__all__ = [
    "attention_rollout", "attention_weights", "capture_attention", "cls_attention", "eval_mode", "rollout",
    "ChannelsFirstProbe", "gradcam", "integrated_gradients", "attention_map", "compare_attention",
    "list_map_methods", "overlay",
    "FeatureCache", "check_deterministic", "CheckpointReport", "architecture_of", "check_model_name", "create_model",
    "load_checkpoint",
    "NodeStack", "forward_nodes", "load_node", "node_params", "stack_params", "FreezingPolicy", "apply_policy",
    "layout",
    "list_policies", "parse_policy", "Tail", "VitHead", "VitPrefix", "split_for_cache",
]
