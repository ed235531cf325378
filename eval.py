"""Evaluate Focus-DETR on a COCO-format dataset (box AP with pycocotools).

    python eval.py --config config/focus_detr_r50_4scale_36ep.yaml --ckpt model.ckpt \
        data.val_json=.../instances_val2017.json data.val_images=.../val2017

Under msrun (``bash scripts/run_eval.sh ... `` with ``DEVICE_NUM`` > 1) every rank evaluates its
shard of the images and rank 0 gathers the detections and prints/writes the results.
"""
import os

import src  # noqa: F401  (CPU start-up fix before the first convolution)
from src.checkpoint import load_port_checkpoint
from src.cli import base_parser, load
from src.engine.distributed import init_distributed
from src.engine.logger import setup_logger
from src.engine.trainer import build_dataset, evaluate
from src.inference import InferenceNet
from src.modeling.build import build_model
from src.runtime import enable_compile_cache, exit_process


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="model weights (.ckpt written by train.py or the converter)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a training checkpoint")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.ckpt):
        parser.error(f"--ckpt: no such file {args.ckpt}")
    cfg = load(args)
    rank, world_size = init_distributed()
    out = cfg.train.output_dir
    logger = setup_logger(out, rank=rank, name="focus_detr_eval")
    if world_size > 1:  # gathering the detections compiles a graph for the number each rank found
        logger.info("compile cache: off (sharded evaluation)")
    else:
        logger.info(enable_compile_cache("eval", cfg, {"data.eval_canvases": cfg.data.eval_canvases}))
    model = build_model(cfg.model, cfg.kernels)
    load_port_checkpoint(model, args.ckpt, use_ema=args.ema)
    dataset = build_dataset(cfg.data, "val")
    stats = evaluate(cfg, InferenceNet(model, cfg.model.num_select), dataset, logger, out, rank, world_size)
    if rank == 0:
        print("eval: " + " ".join(f"{k}={v:.4f}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    exit_process(main())
