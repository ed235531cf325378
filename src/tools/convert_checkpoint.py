"""Convert an official Focus-DETR checkpoint to a MindSpore ``.ckpt``.

    python -m src.tools.convert_checkpoint --src focus_detr_r50_4scale_36ep.pth \
        --config config/focus_detr_r50_4scale_36ep.yaml --dst focus_detr_r50_36ep.ckpt

Every official key must be consumed and every parameter of the model built from
``--config`` filled; otherwise the full lists of leftovers are printed and nothing is written.
"""
import argparse
import os
import sys

import src  # noqa: F401  (CPU start-up fix before the first convolution)
from src.checkpoint import (
    CheckpointMismatch,
    official_to_port,
    parameter_shapes,
    read_official_state_dict,
    save_checkpoint_atomic,
)
from src.config import load_config
from src.runtime import exit_process


def convert(src_path, config_path, dst_path, overrides=()):
    from mindspore import Parameter, Tensor

    from src.modeling.build import build_model

    cfg = load_config(config_path, overrides)
    model = build_model(cfg.model, cfg.kernels)
    shapes = parameter_shapes(model)
    weights = official_to_port(read_official_state_dict(src_path), shapes)
    save_checkpoint_atomic([{"name": k, "data": Parameter(Tensor(v), name=k)} for k, v in weights.items()], dst_path)
    return len(weights)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="official checkpoint (.pth needs torch; .npz, .safetensors)")
    parser.add_argument("--config", required=True, help="recipe YAML the checkpoint belongs to")
    parser.add_argument("--dst", required=True, help="output MindSpore .ckpt")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.src):
        parser.error(f"--src: no such file {args.src}")
    try:
        count = convert(args.src, args.config, args.dst, args.set)
    except CheckpointMismatch as e:
        print(f"{args.src}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: {count} parameters")
    return 0


if __name__ == "__main__":
    exit_process(main())
