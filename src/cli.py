"""Shared command-line plumbing of train.py / eval.py / export.py: config + overrides, mode and
device, logging."""
import argparse
import os

from .config import load_config
from .runtime import set_mode

# (train json, train images, val json, val images) relative to a dataset root
_LAYOUTS = (("annotations/instances_train2017.json", "train2017", "annotations/instances_val2017.json", "val2017"),
            ("annotations/instances_train.json", "train", "annotations/instances_val.json", "val"))


def dataset_overrides(root):
    """data.* overrides for a dataset root in COCO layout (annotations/instances_{train,val}2017.json,
    train2017/, val2017/) or the synthetic generator's (annotations/instances_{train,val}.json,
    train/, val/)."""
    for layout in _LAYOUTS:
        if os.path.isfile(os.path.join(root, layout[0])) or os.path.isfile(os.path.join(root, layout[2])):
            keys = ("data.train_json", "data.train_images", "data.val_json", "data.val_images")
            return [f"{k}={os.path.join(root, v)}" for k, v in zip(keys, layout)]
    raise SystemExit(f"--data: {root} has neither annotations/instances_{{train,val}}2017.json nor "
                     "annotations/instances_{train,val}.json")


def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="recipe YAML in config/")
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--device", default=None, help="CPU | GPU | Ascend (default: MindSpore's choice)")
    parser.add_argument("--data", help="dataset root in COCO or synthetic layout (sets the data.* paths)")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_iter=100")
    return parser


def load(args):
    data = dataset_overrides(args.data) if getattr(args, "data", None) else []
    cfg = load_config(args.config, data + list(args.opts))
    set_mode(args.mode, args.device)
    return cfg

