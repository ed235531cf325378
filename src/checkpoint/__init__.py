"""Checkpoints: files (``files``), the one tensor-to-parameter matching loop and its error
(``matching``), official detector names (``official``), ImageNet backbone weights
(``imagenet``), the port's own checkpoints, also into a model of another class count for
fine-tuning (``port``), and training checkpoints in an output directory: verified, found for
``--resume auto``, pruned (``training``).

Nothing under ``src.modeling`` imports this package (the model does not know about files);
the dependency runs one way, checkpoint -> modeling, where a mapping needs the model's structure.
"""
from .files import read_backbone_state_dict, read_official_state_dict, save_checkpoint_atomic
from .imagenet import load_backbone_checkpoint, load_swin_imagenet, resnet_backbone_weights, swin_imagenet_to_port
from .matching import CheckpointMismatch, match_weights, parameter_shapes
from .official import alias_canonical, is_structure_key, official_to_port, port_name
from .port import load_for_fine_tuning, load_port_checkpoint

__all__ = ["CheckpointMismatch", "alias_canonical", "is_structure_key", "load_backbone_checkpoint",
           "load_for_fine_tuning", "load_port_checkpoint", "load_swin_imagenet", "match_weights", "official_to_port",
           "parameter_shapes", "port_name", "read_backbone_state_dict", "read_official_state_dict",
           "resnet_backbone_weights", "save_checkpoint_atomic", "swin_imagenet_to_port"]
