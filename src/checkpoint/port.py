"""Loading the port's own MindSpore checkpoints (written by training or the converter), also
into a model of another class count for fine-tuning."""
from .matching import CheckpointMismatch, match_weights, parameter_shapes

__all__ = ["load_port_checkpoint", "load_for_fine_tuning"]

_TRAINING_STATE = ("optimizer.", "train_state.", "ema.")


def load_port_checkpoint(model, path, strict=True, use_ema=False):
    """Load a MindSpore ``.ckpt`` written by this project into ``model``.

    A checkpoint for another model (other depth, class count, ...) raises
    ``CheckpointMismatch`` naming every missing, unexpected and mismatched parameter,
    instead of MindSpore's partial load. Optimizer and training state entries are ignored.
    Returns every entry of the file.
    """
    return _load(model, path, strict, use_ema)[0]


def load_for_fine_tuning(model, path):
    """Load ``path`` into ``model`` as ``load_port_checkpoint`` does, except that the parameters
    ``model.class_sized_parameters()`` names may have another class count in the file: those
    keep the model's fresh initialization (the official one: prior-probability bias, default
    weights). Every other mismatch is still refused with the full lists. Returns the names
    re-initialized (empty when the class counts agree)."""
    return _load(model, path, strict=True, use_ema=False, may_differ=set(model.class_sized_parameters()))[1]


def _load(model, path, strict, use_ema, may_differ=frozenset()):
    import mindspore as ms

    params = ms.load_checkpoint(path)
    if use_ema:  # trainable weights from their moving averages, buffers as saved
        averages = {k[len("ema."):]: v for k, v in params.items() if k.startswith("ema.")}
        if not averages:
            raise ValueError(f"{path}: no EMA weights (train with train.ema_decay > 0)")
        params = dict(params, **averages)
    shapes = parameter_shapes(model)
    weights = {k: v for k, v in params.items()
               if not k.startswith(_TRAINING_STATE) and k not in ("iteration", "skipped_steps")}
    differing = sorted(k for k in may_differ if k in weights and k in shapes and tuple(weights[k].shape) != shapes[k])
    weights, problems = match_weights({k: v for k, v in weights.items() if k not in differing}, shapes,
                                      lambda key: key)
    problems = CheckpointMismatch(problems.unmapped, [k for k in problems.missing if k not in differing],
                                  problems.mismatched, problems.alias_conflicts)
    if problems.mismatched or (strict and problems.missing):
        raise problems
    ms.load_param_into_net(model, weights, strict_load=True)
    return params, differing
