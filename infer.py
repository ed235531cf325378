"""Focus-DETR inference demo: detections drawn on each image, plus a json per image.

    python infer.py --config config/focus_detr_r50_4scale_36ep.yaml --ckpt model.ckpt \
        --input IMG_OR_DIR --output DIR [--score-thr 0.3] [--class-names FILE] [--show-focus]

Writes DIR/NAME.jpg (boxes with class names and scores) and DIR/NAME.json (detections in
original pixel coordinates). ``--show-focus`` also writes DIR/NAME_focus.jpg, the tokens each
encoder layer updates (rows = encoder layers, columns = feature levels, finest first) over the
image, and a last row with the fraction of layers that keep each token. Images are run one
at a time; in graph mode every new canvas shape compiles a graph (set data.eval_canvases to
a fixed canvas, or use --mode pynative, for folders of mixed sizes).
"""
import json
import os

import cv2
import numpy as np
from mindspore import Tensor

import src  # noqa: F401  (CPU start-up fix before the first convolution)
from src.cli import base_parser, load
from src.inference import build_inference_net, preprocess, read_image
from src.runtime import exit_process

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FOCUS_PANEL = 320  # longest side of one panel of the focus picture, in pixels


def list_images(path):
    if os.path.isdir(path):
        return sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if os.path.isfile(path):
        return [path]
    raise FileNotFoundError(f"--input: no such file or folder {path}")


def load_class_names(path):
    """Names by contiguous label from a json list of names or a COCO json (categories sorted
    by id, the dataset's label order); None when ``path`` is None."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "categories" in data:
        return [c.get("name", str(c["id"])) for c in sorted(data["categories"], key=lambda c: c["id"])]
    if isinstance(data, list) and all(isinstance(n, str) for n in data):
        return data
    raise ValueError(f"{path}: expected a json list of class names or a COCO json with 'categories'")


def class_names_source(args, cfg):
    """--class-names, else the dataset json of the config if it exists (ids as names otherwise)."""
    if args.class_names:
        return args.class_names
    for candidate in (cfg.data.val_json, cfg.data.train_json):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def colour(label):
    hue = (label * 47) % 180  # spread neighbouring labels over the hue circle
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(c) for c in bgr)


def draw_detections(image_rgb, detections):
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for det in reversed(detections):  # highest score drawn last, on top
        x0, y0, x1, y1 = (int(round(v)) for v in det["box_xyxy"])
        c = colour(det["label"])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), c, thickness)
        text = f"{det['name']} {det['score']:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, thickness)
        top = max(y0 - th - base, 0)
        cv2.rectangle(canvas, (x0, top), (x0 + tw, top + th + base), c, -1)
        cv2.putText(canvas, text, (x0, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 0), thickness)
    return canvas


def detections_of(scores, labels, boxes, keep, score_thr, names):
    dets = []
    for s, label, box in zip(scores[keep], labels[keep], boxes[keep]):
        if s >= score_thr:
            name = names[label] if names is not None and label < len(names) else str(int(label))
            dets.append({"label": int(label), "name": name, "score": float(s),
                         "box_xyxy": [float(v) for v in box]})
    return dets


def kept_token_maps(focus, num_layers, num_levels):
    """Per encoder layer and level, the (h, w) 0/1 map of the tokens the layer updates in image
    0: the first min(k_l, focus_token_nums) rows of its foreground ranking (rows beyond k_l are
    static-shape padding; rows beyond the image's own budget are not written back). ``focus``:
    {name: array} of the ``InferenceNet``'s ``focus_names``."""
    inds = [focus[f"foreground_inds_l{layer}"] for layer in range(num_layers)]
    layer_k, focus_nums = focus["encoder_foreground_topk"], focus["focus_token_nums"]
    shapes = [focus[f"mask_l{lvl}"].shape[1:] for lvl in range(num_levels)]
    ends = np.cumsum([h * w for h, w in shapes])
    maps = []
    for layer in range(num_layers):
        kept = np.zeros(ends[-1], np.float32)
        kept[inds[layer][0, :min(int(layer_k[0, layer]), int(focus_nums[0]))]] = 1.0
        maps.append([s.reshape(h, w) for s, (h, w) in zip(np.split(kept, ends[:-1]), shapes)])
    return maps


def focus_picture(image_rgb, maps, canvas_hw, image_hw):
    """Grid of panels: rows = encoder layers + one row of the fraction of layers keeping each
    token, columns = levels. Kept tokens show the image at full brightness, dropped ones dimmed
    (a colour overlay would hide coloured objects); the last row is a jet heat map. Each token
    map covers the canvas; the part over the resized image is shown."""
    height, width = image_rgb.shape[:2]
    scale = FOCUS_PANEL / max(height, width)
    pw, ph = max(1, round(width * scale)), max(1, round(height * scale))
    base = cv2.resize(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), (pw, ph), interpolation=cv2.INTER_AREA)

    def panel_map(token_map):
        full = cv2.resize(token_map, (canvas_hw[1], canvas_hw[0]), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(full[:image_hw[0], :image_hw[1]], (pw, ph), interpolation=cv2.INTER_NEAREST)

    rows = []
    for layer, level_maps in enumerate(maps):
        panels = []
        for lvl, m in enumerate(level_maps):
            panel = (base * (0.2 + 0.8 * panel_map(m)[..., None])).astype(np.uint8)
            label = f"layer {layer} level {lvl}: {int(m.sum())}/{m.size}"
            cv2.putText(panel, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            panels.append(panel)
        rows.append(np.concatenate(panels, 1))
    heat_panels = []
    for lvl in range(len(maps[0])):
        fraction = np.mean([level_maps[lvl] for level_maps in maps], 0).astype(np.float32)
        heat = cv2.applyColorMap((255 * panel_map(fraction)).astype(np.uint8), cv2.COLORMAP_JET)
        panel = cv2.addWeighted(base, 0.4, heat, 0.6, 0)
        cv2.putText(panel, f"level {lvl}: fraction of layers", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1)
        heat_panels.append(panel)
    rows.append(np.concatenate(heat_panels, 1))
    return np.concatenate(rows, 0)


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="model weights (.ckpt written by train.py or the converter)")
    parser.add_argument("--input", required=True, help="an image or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the pictures and json files")
    parser.add_argument("--score-thr", type=float, default=0.3)
    parser.add_argument("--class-names", help="json list of names or COCO json (default: the config's dataset json)")
    parser.add_argument("--show-focus", action="store_true", help="also draw the foreground tokens of each layer")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.ckpt):
        parser.error(f"--ckpt: no such file {args.ckpt}")
    paths = list_images(args.input)
    if any(os.path.dirname(os.path.abspath(p)) == os.path.abspath(args.output) for p in paths):
        parser.error("--output must not be the input folder (NAME.jpg could overwrite an input)")
    cfg = load(args)
    names = load_class_names(class_names_source(args, cfg))
    net = build_inference_net(cfg, args.ckpt, with_focus=args.show_focus)
    num_layers, num_levels = cfg.model.num_encoder_layers, cfg.model.num_levels
    os.makedirs(args.output, exist_ok=True)
    for path in paths:
        image = read_image(path)
        batch, image_sizes, orig_sizes = preprocess([image], cfg.data, cfg.data.eval_canvases)
        out = [t.asnumpy() for t in net(Tensor(batch), Tensor(image_sizes), Tensor(orig_sizes))]
        dets = detections_of(*(o[0] for o in out[:4]), args.score_thr, names)
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        cv2.imwrite(stem + ".jpg", draw_detections(image, dets))
        with open(stem + ".json", "w", encoding="utf-8") as f:
            json.dump({"image": path, "height": image.shape[0], "width": image.shape[1], "detections": dets}, f,
                      indent=1)
        if args.show_focus:
            maps = kept_token_maps(dict(zip(net.focus_names, out[4:])), num_layers, num_levels)
            cv2.imwrite(stem + "_focus.jpg", focus_picture(image, maps, batch.shape[2:], image_sizes[0]))
        print(f"infer: {path}: {len(dets)} detections >= {args.score_thr} -> {stem}.jpg")
    return 0


if __name__ == "__main__":
    exit_process(main())
