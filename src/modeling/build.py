"""Build the detector from the ``model`` and ``kernels`` sections of a config."""
from .backbone.resnet import ResNetBackbone
from .backbone.swin import swin_backbone
from .focus_detr import FocusDETR
from .transformer import FocusDETRTransformer


def build_backbone(cfg, kernels_cfg=None):
    """The backbone of ``cfg`` (``model.backbone``) with the operators of ``kernels_cfg`` (the
    ``kernels`` section; None: MindSpore's own throughout)."""
    def impl(name):
        return "native" if kernels_cfg is None else getattr(kernels_cfg, name)

    if cfg.name == "resnet":
        return ResNetBackbone(cfg.depth, cfg.freeze_at, cfg.norm, frozen_bn_impl=impl("frozen_bn"))
    if cfg.name == "swin":
        overrides = {} if cfg.drop_path_rate is None else {"drop_path_rate": cfg.drop_path_rate}
        return swin_backbone(cfg.variant, gelu_impl=impl("gelu"), attention_impl=impl("window_attention"),
                             layer_norm_impl=impl("layer_norm"), **overrides)
    raise ValueError(f"model.backbone.name: unknown backbone {cfg.name!r} (resnet | swin)")


def build_model(model_cfg, kernels_cfg):
    transformer = FocusDETRTransformer(
        embed_dim=model_cfg.embed_dim, num_heads=model_cfg.num_heads, ffn_dim=model_cfg.ffn_dim,
        num_levels=model_cfg.num_levels, num_points=model_cfg.num_points,
        num_encoder_layers=model_cfg.num_encoder_layers, num_decoder_layers=model_cfg.num_decoder_layers,
        num_queries=model_cfg.num_queries, num_classes=model_cfg.num_classes,
        focus_rho=model_cfg.focus_rho, cascade=tuple(model_cfg.cascade), topk_sa=model_cfg.topk_sa,
        msda_impl=kernels_cfg.msda, token_ops_impl=kernels_cfg.token_ops, gelu_impl=kernels_cfg.gelu,
        layer_norm_impl=kernels_cfg.layer_norm)
    backbone = build_backbone(model_cfg.backbone, kernels_cfg)
    return FocusDETR(backbone, transformer,
                     num_classes=model_cfg.num_classes,
                     embed_dim=model_cfg.embed_dim,
                     pos_temperature=model_cfg.position_embedding.temperature,
                     pos_offset=model_cfg.position_embedding.offset,
                     canvas=model_cfg.canvas,
                     position_embedding_impl=kernels_cfg.position_embedding)
