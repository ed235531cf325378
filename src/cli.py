"""Shared command-line plumbing of train.py / eval.py / export.py: config + overrides, mode and
device, logging."""
import argparse

from .config import load_config
from .runtime import set_mode


def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="recipe YAML in config/")
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--device", default=None, help="CPU | GPU | Ascend (default: MindSpore's choice)")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_iter=100")
    return parser


def load(args):
    cfg = load_config(args.config, args.opts)
    set_mode(args.mode, args.device)
    return cfg
