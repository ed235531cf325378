"""Element-wise sigmoid focal loss (RetinaNet form used by detrex's ``sigmoid_focal_loss``)."""
from mindspore import ops


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Unreduced focal loss; ``targets`` is a 0/1 float tensor shaped like ``logits``.

    The cross-entropy term is the stable BCE-with-logits, as in the reference; callers apply
    the DETR normalisation (sum over queries and classes / num_boxes).
    """
    prob = ops.sigmoid(logits)
    ce = ops.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss
