"""Train Focus-DETR.

    python train.py --config config/focus_detr_r50_4scale_12ep.yaml data.train_json=... [KEY=VALUE ...]
        [--ckpt converted.ckpt] [--resume output/checkpoint_iter0005000.ckpt | --resume auto]

Logs go to the console and to ``train.output_dir/log.txt``; every loss term of every logged
iteration to ``metrics.jsonl``; checkpoints (model, optimizer, loss scale,
iteration) to ``train.output_dir`` every ``train.checkpoint_period`` iterations, each with a
manifest (size, SHA-256) written after it; the newest ``train.max_checkpoints`` complete ones
are kept. Every evaluation (``train.eval_period`` and the final one) appends its AP to
``metrics.jsonl`` and keeps the weights of the best AP so far in ``model_best.ckpt``. After a
killed job, the same command with ``--resume auto`` continues exactly.
"""

import src  # noqa: F401  (CPU start-up fix before the first convolution)
from src.checkpoint import load_backbone_checkpoint, load_for_fine_tuning
from src.cli import base_parser, load
from src.engine.distributed import init_distributed
from src.engine.logger import setup_logger
from src.engine.trainer import Trainer, build_dataset, evaluate
from src.modeling.build import build_model
from src.runtime import enable_compile_cache, exit_process


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="initial weights: a .ckpt of this model (e.g. a converted official one), "
                        "also of another class count (its class heads and label embedding are then re-initialized)")
    parser.add_argument("--backbone-ckpt", help="local ImageNet backbone weights (detectron2 .pkl, torchvision "
                        ".pth/.npz/.safetensors, mindcv .ckpt); nothing is downloaded")
    parser.add_argument("--resume", help="training checkpoint to continue from exactly, or 'auto': the newest "
                        "complete one in train.output_dir (a fresh start when there is none)")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    args = parser.parse_args(argv)
    cfg = load(args)
    import mindspore as ms

    rank, world_size = init_distributed()
    ms.set_seed(cfg.train.seed)  # same initial weights on every rank
    out = cfg.train.output_dir
    logger = setup_logger(out, rank=rank)
    logger.info(f"config {args.config} overrides {args.opts}; rank {rank} of {world_size}")
    evaluates = bool(cfg.data.val_json) and (not args.no_eval or bool(cfg.train.eval_period))
    canvases = {"data.canvases": cfg.data.canvases}
    if evaluates:
        canvases["data.eval_canvases"] = cfg.data.eval_canvases
    logger.info(enable_compile_cache("train", cfg, canvases, world_size, resume=bool(args.resume), evaluates=evaluates))
    model = build_model(cfg.model, cfg.kernels)
    if args.backbone_ckpt:
        count = load_backbone_checkpoint(model, args.backbone_ckpt, cfg.model.backbone.name)
        logger.info(f"loaded {count} backbone tensors from {args.backbone_ckpt}")
    if args.ckpt:
        fresh = load_for_fine_tuning(model, args.ckpt)
        logger.info(f"loaded weights from {args.ckpt}")
        if fresh:
            logger.info(f"fine-tuning for model.num_classes={cfg.model.num_classes}: the checkpoint's class count "
                        f"differs, {len(fresh)} class-sized parameters keep their initialization: {', '.join(fresh)}")
    train_set = build_dataset(cfg.data, "train")
    val_set = build_dataset(cfg.data, "val") if cfg.data.val_json else None
    if train_set.num_classes != cfg.model.num_classes:
        raise SystemExit(f"{cfg.data.train_json} has {train_set.num_classes} categories but "
                         f"model.num_classes is {cfg.model.num_classes}")
    trainer = Trainer(cfg, model, train_set, val_set, logger, rank, world_size)
    if args.resume:
        trainer.resume(args.resume)
    trainer.train()
    if val_set is not None and not args.no_eval and rank == 0:
        trainer.record_evaluation(cfg.train.max_iter, evaluate(cfg, trainer.eval_net, val_set, logger, out))
    return 0


if __name__ == "__main__":
    exit_process(main())
