"""Backbones returning the three multi-scale feature maps (strides 8, 16, 32)."""
