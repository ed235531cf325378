"""Float16 mixed precision for training: which Cells compute in float16.

MindSpore's ``auto_mixed_precision`` does not work on this model (measured, MindSpore 2.10):
its O1 rewrites the network's source and fails on it (``TypeError ... _PyboostConcatPrim``), and
its O2 is ``Cell.to_float`` with a norm black list, which is what ``O2`` below does too. So both
levels are cell-level ``to_float`` here:

* ``O1``: the matrix-multiply Cells (``nn.Dense``, ``nn.Conv2d``, multi-head attention) run in
  float16 and hand float32 back; everything else (norms, box refinement, positional embedding,
  deformable sampling, token scoring and selection) stays float32.
* ``O2``: the whole model runs in float16 except the normalization layers (LayerNorm, GroupNorm,
  BatchNorm), which run in float32 and hand float16 back, and the image's position embedding,
  which stays float32 throughout: its angles reach 1e6 on fully padded rows (the official
  normalization divides by 1e-6 there), far beyond float16's 65504.

Parameters stay float32 either way (they are the master weights the optimizer updates); the
model's outputs are cast to float32 before the criterion (``ModelWithLoss``), so matching and
every loss are computed in float32. Attention masking/softmax and the custom kernels compute in
float32 internally (``src.layers.attention``, ``src.ops``).
"""
import mindspore as ms
from mindspore import nn, ops

from ..layers.attention import MultiheadAttention
from ..layers.position_embedding import PositionEmbeddingSine
from ..modeling.backbone.resnet_norm import FrozenBatchNorm2d

AMP_LEVELS = ("O0", "O1", "O2")
O1_FLOAT16_CELLS = (nn.Dense, nn.Conv2d, MultiheadAttention)
O2_FLOAT32_CELLS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, FrozenBatchNorm2d)


class _CastOutput(nn.Cell):
    """Run ``cell`` and cast its output to ``dtype``; keeps the cell's parameter names."""

    def __init__(self, cell, dtype):
        super().__init__(auto_prefix=False)
        self.cell = cell
        self.dtype = dtype

    def construct(self, *args, **kwargs):
        return ops.cast(self.cell(*args, **kwargs), self.dtype)


def _wrap(cell, kinds, compute_dtype, output_dtype):
    """Replace every sub-cell of ``kinds`` (not descending into them) by a cast wrapper."""
    for name, sub in list(cell.name_cells().items()):
        if isinstance(sub, kinds):
            cell._cells[name] = _CastOutput(sub.to_float(compute_dtype), output_dtype)  # pylint: disable=protected-access
        else:
            _wrap(sub, kinds, compute_dtype, output_dtype)
    if isinstance(cell, nn.SequentialCell):
        cell.cell_list = list(cell.cells())


def apply_mixed_precision(model, level):
    """Set ``model`` (in place) to compute at ``level`` ('O0' float32, 'O1', 'O2'); returns it."""
    if level not in AMP_LEVELS:
        raise ValueError(f"train.amp_level {level!r}: expected one of {', '.join(AMP_LEVELS)}")
    if level == "O1":
        _wrap(model, O1_FLOAT16_CELLS, ms.float16, ms.float32)
    elif level == "O2":
        model.to_float(ms.float16)
        for _, cell in model.cells_and_names():
            if isinstance(cell, PositionEmbeddingSine):  # its output is float32, as at O0
                cell.to_float(ms.float32)
        _wrap(model, O2_FLOAT32_CELLS, ms.float32, ms.float16)
    return model
