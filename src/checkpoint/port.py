"""Loading the port's own MindSpore checkpoints (written by training or the converter)."""
from .matching import match_weights, parameter_shapes

__all__ = ["load_port_checkpoint"]

_TRAINING_STATE = ("optimizer.", "train_state.", "ema.")


def load_port_checkpoint(model, path, strict=True, use_ema=False):
    """Load a MindSpore ``.ckpt`` written by this project into ``model``.

    A checkpoint for another model (other depth, class count, ...) raises
    ``CheckpointMismatch`` naming every missing, unexpected and mismatched parameter,
    instead of MindSpore's partial load. Optimizer and training state entries are ignored.
    Returns every entry of the file.
    """
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
    weights, problems = match_weights(weights, shapes, lambda key: key)
    if problems.mismatched or (strict and problems.missing):
        raise problems
    ms.load_param_into_net(model, weights, strict_load=True)
    return params
