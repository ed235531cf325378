"""The static-shape token budget: one top-K_max with per-layer row counts R_l fixed by the
canvas, and the data-dependent counts k_l as tensors (official formula, float32)."""
import numpy as np
import pytest
from mindspore import Tensor, nn

from src.modeling.token_selector import ForegroundTokenSelector, static_layer_rows

CASCADE = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2)


def official_budget(valid_counts, rho=0.5):
    focus = (np.asarray(valid_counts, np.float32) * np.float32(rho)).astype(np.int64) + 1
    top = np.float32(focus.max())
    return focus, [int(np.float32(c) * top) for c in CASCADE]


@pytest.mark.parametrize("num_tokens", [3060, 3293, 894, 20349])
def test_static_rows_bound_every_budget(num_tokens):
    k_max, rows = static_layer_rows(num_tokens, 0.5, CASCADE)
    _, full = official_budget([num_tokens])
    assert list(rows) == full  # a canvas filled by one image uses every static row
    for valid in (1, num_tokens // 3, num_tokens - 1):
        _, ks = official_budget([valid])
        assert all(k <= r for k, r in zip(ks, rows))
    assert k_max == min(int(num_tokens * 0.5) + 1, num_tokens)


class Budget(nn.Cell):
    def __init__(self):
        super().__init__()
        self.selector = ForegroundTokenSelector(focus_rho=0.5, cascade=CASCADE)

    def construct(self, mask):
        return self.selector.budget(mask), self.selector.budget(mask, per_image=True)


def test_budget_matches_official_formula(mode):
    """One budget for the batch (official training), and each image's own (each image its own
    batch, as the official inference)."""
    rng = np.random.default_rng(1)
    budget = Budget()
    for _ in range(3):
        mask = rng.random((3, 3060)) < rng.random((3, 1))
        shared, per_image = budget(Tensor(mask))
        valid, focus, layer_k = (t.asnumpy() for t in shared)
        ref_focus, ref_k = official_budget((~mask).sum(1))
        np.testing.assert_array_equal(valid, (~mask).sum(1))
        np.testing.assert_array_equal(focus, ref_focus)
        np.testing.assert_array_equal(layer_k, np.tile(ref_k, (3, 1)))
        np.testing.assert_array_equal(per_image[2].asnumpy(), [official_budget([v])[1] for v in valid])


@pytest.mark.parametrize("cascade", [CASCADE[:5], CASCADE + (0.1,)])
def test_cascade_needs_one_ratio_per_encoder_layer(cascade):
    """A short cascade once failed as an IndexError inside graph compilation and a long one was
    silently cut: both are refused when the transformer is built."""
    from src.modeling.transformer import FocusDETRTransformer

    with pytest.raises(ValueError, match=f"the cascade has {len(cascade)} ratios for 6 encoder layers"):
        FocusDETRTransformer(embed_dim=32, num_heads=2, ffn_dim=64, num_queries=10, num_classes=3,
                             num_encoder_layers=6, cascade=cascade)


def test_named_outputs_refuses_an_unnamed_capture():
    """Captured tensors are named by ``capture_names``; one more value than names is an error,
    not a silent shift of every later name."""
    from src.modeling.focus_detr import OUTPUT_NAMES, named_outputs

    class Model:
        @staticmethod
        def capture_names():
            return ("a", "b")

    outputs = tuple(range(len(OUTPUT_NAMES)))
    assert named_outputs(Model, (outputs, (10, 11)))["b"] == 11
    with pytest.raises(ValueError, match="3 captured tensors for .* 2 capture names"):
        named_outputs(Model, (outputs, (10, 11, 12)))
