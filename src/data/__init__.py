"""Data: COCO-format reading and validation (``coco``), augmentations (``transforms``),
padded static-shape batches (``loader``, imports MindSpore only inside ``build_loader``) and
the synthetic shapes dataset (``synthetic``, import it from its module: it is also a CLI)."""
from .coco import CocoDetection, DatasetError, ImageRecord
from .loader import COLUMNS, build_loader, choose_canvas, plan_epoch
from .transforms import AugmentConfig, apply_plan, eval_plan, resize_shortest_edge_size, sample_train_plan

__all__ = ["COLUMNS", "AugmentConfig", "CocoDetection", "DatasetError", "ImageRecord", "apply_plan", "build_loader",
           "choose_canvas", "eval_plan", "plan_epoch", "resize_shortest_edge_size", "sample_train_plan"]
