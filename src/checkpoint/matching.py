"""The one loop that matches a file's tensors to a model's parameters, and its error.

Every mapping (official detector checkpoints, ImageNet ResNet and Swin weights, the port's own
checkpoints) differs only in how a file key becomes a parameter name; the checks that follow
(no counterpart, wrong shape, a parameter left unfilled) and the error listing all of them at
once are the same, so they live here once.
"""
import numpy as np

__all__ = ["CheckpointMismatch", "match_weights", "parameter_shapes", "shape_mismatch"]


class CheckpointMismatch(ValueError):
    """The full lists of unmapped, missing and mismatched names (false when all are empty)."""

    def __init__(self, unmapped=(), missing=(), mismatched=(), alias_conflicts=()):
        self.unmapped, self.missing = list(unmapped), list(missing)
        self.mismatched, self.alias_conflicts = list(mismatched), list(alias_conflicts)
        parts = []
        for title, items in (("official keys with no port parameter", self.unmapped),
                             ("port parameters not filled", self.missing),
                             ("shape mismatches (name: official -> port)", self.mismatched),
                             ("aliases whose values differ from their canonical key", self.alias_conflicts)):
            if items:
                parts.append(f"{title} ({len(items)}):\n  " + "\n  ".join(map(str, items)))
        super().__init__("checkpoint does not match the model:\n" + "\n".join(parts))

    def __bool__(self):
        return bool(self.unmapped or self.missing or self.mismatched or self.alias_conflicts)


def parameter_shapes(cell):
    """{parameter name: shape} of a MindSpore Cell: what a mapping matches a file against."""
    return {p.name: tuple(p.shape) for p in cell.get_parameters()}


def shape_mismatch(key, file_shape, name, port_shape):
    return f"{key}: {tuple(file_shape)} -> {name}: {tuple(port_shape)}"


def match_weights(state_dict, port_shapes, name_of, describe=shape_mismatch, unmapped=(), mismatched=(),
                  alias_conflicts=()):
    """Match ``state_dict`` {key: array} to ``port_shapes`` {name: shape}.

    ``name_of(key)`` is the parameter a key fills, or None when it has none. Returns
    ``(weights, problems)``: weights {name: value} of every key with a parameter of its shape, and
    a ``CheckpointMismatch`` (raise it when it is true) of the keys without a parameter, the
    parameters no key filled (a parameter of the wrong shape is listed once, as mismatched) and
    the shape mismatches (``describe`` words each), after the caller's own findings passed in
    ``unmapped``/``mismatched``/``alias_conflicts``.
    """
    weights, unmapped, mismatched, wrong_shape = {}, list(unmapped), list(mismatched), set()
    for key, value in state_dict.items():
        name = name_of(key)
        if name is None or name not in port_shapes:
            unmapped.append(key)
        elif tuple(np.shape(value)) != tuple(port_shapes[name]):
            mismatched.append(describe(key, np.shape(value), name, port_shapes[name]))
            wrong_shape.add(name)
        else:
            weights[name] = value
    missing = [n for n in port_shapes if n not in weights and n not in wrong_shape]
    return weights, CheckpointMismatch(unmapped, missing, mismatched, alias_conflicts)
