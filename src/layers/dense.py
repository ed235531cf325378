"""``nn.Dense`` with a construct of fewer graph nodes.

MindSpore's own construct reads the input's rank and rebuilds the output shape with tuple
arithmetic in the graph, about 20 nodes per call, and graph mode type-infers them again for
each of the model's 100-190 linear layers (R50 to Swin-T): the compiler's working memory, the
peak of a first start on CPU, grows with that count (README, "Graph-mode memory on CPU"). Same
parameters, names and products: a subclass, so mixed precision (``O1``) still finds it.
"""
import mindspore as ms
from mindspore import nn


@ms.constexpr
def _output_shape(input_shape, out_channels):
    return tuple(input_shape[:-1]) + (out_channels,)


class Dense(nn.Dense):
    """y = x W^T + b over the last axis of x, for inputs of any rank; ``nn.Dense``'s arguments
    except ``activation`` (this construct applies none: a Cell after it does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.activation_flag:
            raise ValueError("Dense applies no activation; put the activation Cell after it")

    def construct(self, x):
        y = self.matmul(x.reshape(-1, x.shape[-1]), self.weight)
        if self.has_bias:
            y = self.bias_add(y, self.bias)
        return y.reshape(_output_shape(x.shape, self.out_channels))
