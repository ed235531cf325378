"""Which devices can run a compiled graph: every primitive of the training step, the evaluation
net or an exported MINDIR, checked against the devices MindSpore documents for it.

    python -m src.tools.portability --config CFG [--device Ascend] [--device GPU] [--graph train]
        [--graph eval] [--batch B] [--height H --width W] [--mindir FILE ...] [KEY=VALUE ...]

A graph compiled for a device may hold only operators that device has; MindSpore's CPU package
compiles any graph, so a CPU-only construct (a pyfunc custom op, an op without a GPU kernel)
slips into an Ascend or GPU training step unnoticed until it runs there. The graphs are built
as they would be on each device (``src.ops.target_device``: the dispatch points choose what
'auto' chooses there, nothing runs) and exported to MINDIR, which runs MindSpore's frontend
only (the gradient graph included), then their primitives are listed from the protobuf.

``op_platforms.yaml`` beside this file is the table: one entry per primitive with the devices
its API page lists under "Supported Platforms" (backward primitives, which have no page of
their own, inherit their forward primitive's). Custom operators are judged by their kind:
pyfunc runs on CPU only; an AOT operator only on the device its library was built for.
Exit status 1 names every primitive a graph holds that its device does not document.
"""
import argparse
import logging
import os
import tempfile
from pathlib import Path

import yaml

TABLE_PATH = Path(__file__).with_name("op_platforms.yaml")
DEVICES = ("Ascend", "GPU", "CPU")


def load_table(path=TABLE_PATH):
    """``(structural, platforms)``: primitives accepted on every device (graph structure without a
    kernel, and the few the compiler inserts by itself) and the documented devices of every other
    primitive, backward entries resolved to their forward's."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    structural = frozenset(raw["structural"]) | frozenset(raw["compiler_inserted"])
    entries = raw["primitives"]
    platforms = {}
    for name, entry in entries.items():
        source = entry
        if "backward_of" in entry:
            source = entries.get(entry["backward_of"])
            if source is None or "platforms" not in source:
                raise ValueError(f"{path}: {name}: backward_of {entry['backward_of']!r} has no platforms entry")
        if not set(source["platforms"]) <= set(DEVICES):
            raise ValueError(f"{path}: {name}: unknown device in {source['platforms']}")
        platforms[name] = frozenset(source["platforms"])
    return structural, platforms


def mindir_primitives(path):
    """``{primitive name: [attributes of each instance]}`` of a MINDIR file (attributes as str)."""
    from mindspore.train import mind_ir_pb2

    model = mind_ir_pb2.ModelProto()
    with open(path, "rb") as f:
        model.ParseFromString(f.read())
    found = {}
    for prim in model.primitives:
        attrs = {a.name: a.s.decode(errors="replace") for a in prim.attribute if a.s}
        found.setdefault(prim.op_type, []).append(attrs)
    return found


def custom_devices(attrs):
    """Devices a Custom primitive can run on, from its kind (and an AOT library's build)."""
    from src.ops.build import library_device

    kind = attrs.get("func_type", "")
    if kind == "pyfunc":
        return frozenset({"CPU"})
    if kind == "aot":
        device = library_device(attrs.get("func_name", "").rsplit(":", 1)[0])
        return frozenset({device}) if device else frozenset()
    return frozenset()  # hybrid/akg/julia: not used by this project, not trusted anywhere


def violations(primitives, device, table):
    """Human-readable problems of a graph's ``primitives`` (``mindir_primitives``) on ``device``."""
    structural, platforms = table
    problems = []
    for name in sorted(primitives):
        if name in structural:
            continue
        if name == "Custom":
            for attrs in primitives[name]:
                runs_on = custom_devices(attrs)
                if device not in runs_on:
                    label = attrs.get("func_name") or "?"
                    problems.append(f"Custom {attrs.get('func_type', '?')} {label!r} runs on "
                                    f"{'/'.join(sorted(runs_on)) or 'no known device'}, not {device}")
        elif name not in platforms:
            problems.append(f"{name} is not in {TABLE_PATH.name} (look up its Supported Platforms and add it)")
        elif device not in platforms[name]:
            problems.append(f"{name} is documented for {'/'.join(sorted(platforms[name]))} only, not {device}")
    return problems


def example_train_inputs(cfg, trainer, batch, height, width, boxes=4):
    """Inputs of the train step's shapes (a graph depends on the shapes only)."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from src.data.synthetic import random_train_batch

    arrays = random_train_batch(np.random.default_rng(0), batch, height, width, cfg.data.max_boxes,
                                min(boxes, cfg.data.max_boxes), cfg.model.num_classes)
    dn_inputs, dn_targets = trainer.denoising(0, *arrays[2:])
    return tuple(Tensor(a) for a in arrays) + (dn_inputs, dn_targets, Tensor(1e-4, ms.float32))


def export_graphs(cfg, device, out_dir, graphs=("train", "eval"), batch=1, height=128, width=128):
    """MINDIR files of the training step and/or the evaluation net of ``cfg`` built as on
    ``device`` -> ``{"train": path, "eval": path}``."""
    import mindspore as ms

    from src.engine.trainer import Trainer
    from src.inference import InferenceNet
    from src.modeling.build import build_model
    from src.ops import target_device
    from src.runtime import set_mode

    set_mode("graph")
    with target_device(device):
        model = build_model(cfg.model, cfg.kernels)
        trainer = Trainer(cfg, model, None, None, logging.getLogger("focus_detr.portability"))
    inputs = example_train_inputs(cfg, trainer, batch, height, width)
    paths = {}
    if "train" in graphs:
        model.set_train(True)
        paths["train"] = os.path.join(out_dir, f"train_step_{device}")
        ms.export(trainer.step, *inputs, file_name=paths["train"], file_format="MINDIR")
    if "eval" in graphs:
        paths["eval"] = os.path.join(out_dir, f"eval_net_{device}")
        ms.export(InferenceNet(model, cfg.model.num_select), inputs[0], inputs[1], inputs[1],
                  file_name=paths["eval"], file_format="MINDIR")
    return {k: v + ".mindir" for k, v in paths.items()}


def main(argv=None):
    from src.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="recipe YAML: check its training step and evaluation net")
    parser.add_argument("--device", action="append", choices=DEVICES,
                        help="device to check for (repeatable; default Ascend and GPU)")
    parser.add_argument("--graph", action="append", choices=("train", "eval"),
                        help="graph of --config to check (repeatable; default both)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--mindir", nargs="*", default=[], help="exported MINDIR files to check as well")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    if not args.config and not args.mindir:
        parser.error("give --config and/or --mindir")
    table = load_table()
    devices = args.device or ["Ascend", "GPU"]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            graphs = {os.path.basename(p): p for p in args.mindir}
            if args.config:
                # the trainer creates its output directory: keep it in the temporary one
                cfg = load_config(args.config, list(args.opts) + [f"train.output_dir={tmp}"])
                built = export_graphs(cfg, device, tmp,
                                      tuple(args.graph or ("train", "eval")), args.batch, args.height, args.width)
                graphs.update({f"{name} graph": path for name, path in built.items()})
            for label, path in graphs.items():
                primitives = mindir_primitives(path)
                problems = violations(primitives, device, table)
                failed += bool(problems)
                print(f"{device:6s} {label}: {len(primitives)} primitives, "
                      f"{'ok' if not problems else f'{len(problems)} not available'}")
                for problem in problems:
                    print(f"    {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    from src.runtime import exit_process

    exit_process(main())
