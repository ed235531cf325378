"""The port's model run on a golden fixture: the teacher-forced eval forward with post-processing,
the training forward with the criterion, and the gradient of the training loss. Each returns
numpy outputs for the comparisons."""
import numpy as np

from src.checkpoint import parameter_shapes
from src.runtime import set_mode
from src.tools.parity.golden import batch_images, eval_batch, fixture_denoising, fixture_targets, teacher_topk


def run_eval_model(model, g, mode, canvas=None):
    """Teacher-forced eval forward + post-processing on the fixture's canvas or a larger
    ``canvas`` (H, W); returns {name: numpy}."""
    from mindspore import Tensor

    from src.modeling.focus_detr import named_outputs
    from src.modeling.postprocess import PostProcess

    set_mode(mode)
    model.set_train(False)
    model.set_capture(True)
    images, model_sizes, sizes = eval_batch(g, model.canvas_extent, canvas)
    result = named_outputs(model, model(Tensor(images), Tensor(model_sizes), None, Tensor(teacher_topk(g, canvas))))
    num_select = g["postprocess_topk_values"].shape[1]
    post = PostProcess(num_select)(result["pred_logits"][-1], result["pred_boxes"][-1], Tensor(sizes),
                                   Tensor(g["orig_sizes"].astype(np.int32)))
    out = {k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in result.items()}
    out["det"] = tuple(p.asnumpy() for p in post)
    return out


def train_criterion(model, meta, matcher="auto"):
    """The criterion with the fixture's settings (``meta['criterion']``) and assignment backend
    ``matcher`` (a ``kernels.matcher`` value)."""
    from src.losses.assignment import build_assignment
    from src.losses.criterion import FocusDETRCriterion
    from src.losses.matcher import HungarianMatcher

    crit = meta["criterion"]
    return FocusDETRCriterion(num_classes=model.num_classes, focal_alpha=crit["focal_alpha"],
                              focal_gamma=crit["focal_gamma"], fg_strides=tuple(crit["fg_strides"]),
                              fg_limit_ranges=tuple(tuple(r) for r in crit["fg_limit_range"]),
                              matcher=HungarianMatcher(assignment=build_assignment(matcher)))


def train_inputs(model, g, meta, canvas=None):
    """(model inputs, criterion targets, denoising batch) of a training fixture: the images on
    their canvas (or a larger ``canvas`` (H, W)), the replayed denoising queries, the
    teacher-forced two-stage top-k, the GT."""
    from mindspore import Tensor

    images, sizes = batch_images(g, canvas)
    dn = fixture_denoising(g, model.num_classes, meta["dn"])
    model_in = (Tensor(images), Tensor(sizes), tuple(Tensor(a) for a in dn.model_inputs()),
                Tensor(teacher_topk(g, canvas)))
    boxes, labels, valid = fixture_targets(g)
    targets = (Tensor(boxes), Tensor(labels), Tensor(valid), Tensor(sizes), tuple(images.shape[2:]),
               tuple(Tensor(a) for a in dn.criterion_inputs()))
    return model_in, targets, dn


def run_train_model(model, g, meta, mode, matcher="auto"):
    """Training-mode forward (denoising replayed, two-stage top-k teacher-forced) and the
    criterion on its outputs (assignment backend ``matcher``: a ``kernels.matcher`` value)."""

    from src.modeling.focus_detr import named_outputs

    set_mode(mode)
    model.set_train(True)
    model.set_capture(True)
    model_in, targets, dn = train_inputs(model, g, meta)
    raw = model(*model_in)
    result = named_outputs(model, raw)
    total, losses, matches, fg_targets = train_criterion(model, meta, matcher)(raw[0], *targets)
    out = {k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in result.items()}
    out.update(dn=dn, label_enc=model.label_enc.embedding_table.asnumpy(), total_loss=float(total.asnumpy()),
               losses=[float(v.asnumpy()) for v in losses],
               matches=matches.asnumpy(), fg_targets=fg_targets.asnumpy())
    return out


def grad_step(model, g, meta, mode, matcher="auto", canvas=None):
    """The Cell that ``run_grad_model`` runs and its inputs: one ``ops.value_and_grad`` of the
    model + criterion (its ``net``, the loss alone) w.r.t. every trainable parameter, on the
    training fixture's inputs. Returns (step, inputs, parameters)."""
    from mindspore import ParameterTuple, nn, ops

    set_mode(mode)
    model.set_train(True)
    model.set_capture(False)
    model_in, targets, _ = train_inputs(model, g, meta, canvas)
    params = model.trainable_params()

    class ModelLoss(nn.Cell):
        def __init__(self, net, criterion, canvas):
            super().__init__(auto_prefix=False)  # keep the model's parameter names
            self.net = net
            self.criterion = criterion
            self.canvas = canvas

        def construct(self, images, sizes, dn_inputs, topk, boxes, labels, valid, image_sizes, dn_targets):
            outputs, _ = self.net(images, sizes, dn_inputs, topk)
            total, losses, _, _ = self.criterion(outputs, boxes, labels, valid, image_sizes, self.canvas,
                                                 dn_targets)
            return total, losses

    class GradStep(nn.Cell):
        def __init__(self, net, weights):
            super().__init__(auto_prefix=False)
            self.net = net
            self.grad_fn = ops.value_and_grad(net, None, weights, has_aux=True)

        def construct(self, images, sizes, dn_inputs, topk, boxes, labels, valid, image_sizes, dn_targets):
            return self.grad_fn(images, sizes, dn_inputs, topk, boxes, labels, valid, image_sizes, dn_targets)

    boxes, labels, valid, image_sizes, canvas_hw, dn_targets = targets
    step = GradStep(ModelLoss(model, train_criterion(model, meta, matcher), canvas_hw), ParameterTuple(params))
    return step, (*model_in, boxes, labels, valid, image_sizes, dn_targets), params


def run_grad_model(model, g, meta, mode, matcher="auto", canvas=None):
    """One ``ops.value_and_grad`` of the model + criterion (the training fixture's inputs, replayed
    denoising draws, teacher-forced two-stage top-k) w.r.t. every trainable parameter of the
    port: the plain float32 sum of the weighted losses, as the training step differentiates it.
    Returns {'total_loss', 'losses', 'grads': {port name: numpy gradient}}."""
    step, inputs, params = grad_step(model, g, meta, mode, matcher, canvas)
    (total, losses), grads = step(*inputs)
    return {"total_loss": float(total.asnumpy()), "losses": [float(v.asnumpy()) for v in losses],
            "grads": {p.name: gr.asnumpy() for p, gr in zip(params, grads)},
            "frozen": [p.name for p in model.get_parameters() if not p.requires_grad],
            "shapes": parameter_shapes(model)}
