"""Feed-forward blocks with the detrex parameter layout (``layers.{i}``)."""
from mindspore import nn, ops

from .dense import Dense


class MLP(nn.Cell):
    """``num_layers`` Dense layers with ReLU between them (detrex ``MLP``)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.CellList([Dense(i, o) for i, o in zip(dims_in, dims_out)])
        self.num_layers = num_layers

    def construct(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = ops.relu(x)
        return x


class FFN(nn.Cell):
    """Transformer FFN ``x + W2 relu(W1 x)`` (dropout 0), keys ``layers.0.0`` and ``layers.1``."""

    def __init__(self, embed_dim=256, feedforward_dim=2048):
        super().__init__()
        self.layers = nn.CellList([
            nn.SequentialCell([Dense(embed_dim, feedforward_dim), nn.ReLU()]),
            Dense(feedforward_dim, embed_dim),
        ])

    def construct(self, x):
        return x + self.layers[1](self.layers[0](x))
