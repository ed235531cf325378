"""A scalar loss for gradient tests: an operator's output weighted and summed."""
from mindspore import nn


class WeightedSum(nn.Cell):
    """``construct(*inputs, weight)`` = sum(op(*inputs) * weight): its gradient with respect to
    the inputs is the operator's backward applied to ``weight``."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, *inputs):
        return (self.op(*inputs[:-1]) * inputs[-1]).sum()
