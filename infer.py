"""Focus-DETR inference demo: detections drawn on each image or video frame, plus json.

    python infer.py --config config/focus_detr_r50_4scale_36ep.yaml --ckpt model.ckpt \
        --input IMG_OR_DIR_OR_VIDEO --output DIR [--score-threshold 0.3] [--class-names FILE] [--show-focus]

An image gives DIR/NAME.jpg (boxes with class names and scores) and DIR/NAME.json (detections in
original pixel coordinates); a folder, each of its images, with progress (images, images/s,
ETA). ``--show-focus`` also writes DIR/NAME_focus.jpg, the tokens each encoder layer updates
(rows = encoder layers, columns = feature levels, finest first) over the image, and a last row
with the fraction of layers that keep each token. A video (``VIDEO_EXTENSIONS``) gives
DIR/NAME.mp4, every frame annotated at the input's frame rate, and DIR/NAME.jsonl, one line of
detections per frame, with progress in frames/s. Images are run one at a time; in graph mode
every new canvas shape compiles a graph (the frames of a video share one; set
data.eval_canvases to a fixed canvas, or use --mode pynative, for folders of mixed sizes).
"""
import json
import os

import src  # noqa: F401  (first: its process settings must precede mindspore; src.runtime)

# isort: split
import cv2
import numpy as np
from mindspore import Tensor

from src.cli import base_parser, load
from src.engine.logger import Progress
from src.inference import build_inference_net, preprocess, read_image
from src.runtime import enable_compile_cache, exit_process
from src.visualize import draw_boxes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PROGRESS_PERIOD = 25  # frames between two progress lines of a video
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


def detect(net, image, cfg, score_thr, names):
    """(detections of the RGB ``image``, the raw outputs, the padded batch, its image sizes)."""
    batch, image_sizes, orig_sizes = preprocess([image], cfg.data, cfg.data.eval_canvases)
    out = [t.asnumpy() for t in net(Tensor(batch), Tensor(image_sizes), Tensor(orig_sizes))]
    return detections_of(*(o[0] for o in out[:4]), score_thr, names), out, batch, image_sizes


def annotate(image, dets):
    return draw_boxes(image, [d["box_xyxy"] for d in dets], [d["label"] for d in dets],
                      [f"{d['name']} {d['score']:.2f}" for d in dets])


def infer_images(net, paths, cfg, args, names):
    progress = Progress(0, len(paths), 1)
    for k, path in enumerate(paths):
        image = read_image(path)
        dets, out, batch, image_sizes = detect(net, image, cfg, args.score_thr, names)
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        cv2.imwrite(stem + ".jpg", annotate(image, dets))
        with open(stem + ".json", "w", encoding="utf-8") as f:
            json.dump({"image": path, "height": image.shape[0], "width": image.shape[1], "detections": dets}, f,
                      indent=1)
        if args.show_focus:
            maps = kept_token_maps(dict(zip(net.focus_names, out[4:])), cfg.model.num_encoder_layers,
                                   cfg.model.num_levels)
            cv2.imwrite(stem + "_focus.jpg", focus_picture(image, maps, batch.shape[2:], image_sizes[0]))
        speed, eta = progress.report(k)
        print(f"infer: [{k + 1}/{len(paths)}] {path}: {len(dets)} detections >= {args.score_thr} -> {stem}.jpg  "
              f"{speed:.2f} img/s  eta: {eta}")


def infer_video(net, path, cfg, args, names):
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise SystemExit(f"--input: {path}: not a readable video")
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
    stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
    writer, progress, frame = None, Progress(0, max(total, 1), 1), 0
    with open(stem + ".jsonl", "w", encoding="utf-8") as lines:
        while True:
            ok, bgr = video.read()
            if not ok:
                break
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            dets = detect(net, image, cfg, args.score_thr, names)[0]
            if writer is None:
                writer = cv2.VideoWriter(stem + ".mp4", cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (image.shape[1], image.shape[0]))
            writer.write(annotate(image, dets))
            lines.write(json.dumps({"frame": frame, "detections": dets}) + "\n")
            speed, eta = progress.report(frame)
            frame += 1
            if frame % PROGRESS_PERIOD == 0 or frame == total or frame == 1:
                print(f"infer: {path}: frame {frame}/{total or '?'}  {speed:.2f} frames/s  eta: {eta}")
    video.release()
    if writer is None:
        raise SystemExit(f"--input: {path}: no frame could be read")
    writer.release()
    print(f"infer: {path}: {frame} frames -> {stem}.mp4, {stem}.jsonl")


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="model weights (.ckpt written by train.py or the converter)")
    parser.add_argument("--input", required=True, help="an image, a folder of images or a video file")
    parser.add_argument("--output", required=True, help="folder for the pictures, videos and json files")
    parser.add_argument("--score-threshold", "--score-thr", dest="score_thr", type=float, default=0.3,
                        help="draw and write the detections scoring at least this (default 0.3)")
    parser.add_argument("--class-names", help="json list of names or COCO json (default: the config's dataset json)")
    parser.add_argument("--show-focus", action="store_true", help="also draw the foreground tokens of each layer")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.ckpt):
        parser.error(f"--ckpt: no such file {args.ckpt}")
    video = os.path.isfile(args.input) and args.input.lower().endswith(VIDEO_EXTENSIONS)
    if video and args.show_focus:
        parser.error("--show-focus draws pictures of images, not of videos")
    paths = [args.input] if video else list_images(args.input)
    if any(os.path.dirname(os.path.abspath(p)) == os.path.abspath(args.output) for p in paths):
        parser.error("--output must not be the input folder (NAME.jpg could overwrite an input)")
    cfg = load(args)
    names = load_class_names(class_names_source(args, cfg))
    print("infer: " + enable_compile_cache("infer", cfg, {"data.eval_canvases": cfg.data.eval_canvases},
                                           show_focus=args.show_focus))
    net = build_inference_net(cfg, args.ckpt, with_focus=args.show_focus)
    os.makedirs(args.output, exist_ok=True)
    if video:
        infer_video(net, args.input, cfg, args, names)
    else:
        infer_images(net, paths, cfg, args, names)
    return 0


if __name__ == "__main__":
    exit_process(main())
