"""Boxes with labels drawn on pictures: the detections of the demo (infer.py) and the ground
truth of the dataset browser (scripts/browse_dataset.py) look the same, one colour per class."""
import cv2
import numpy as np


def colour(label):
    """BGR colour of class ``label``: hues a golden-ratio turn apart, so that any few labels
    (not only neighbours) get distinct colours."""
    hue = int(label * 111.246) % 180  # OpenCV hue circle: 180 = 360 degrees; 111.246 = 180 x 0.618
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(c) for c in bgr)


def draw_boxes(image_rgb, boxes_xyxy, labels, texts):
    """A BGR copy of ``image_rgb`` (uint8) with each box outlined in its class colour and its
    text on a filled tab above it; the first box is drawn last (on top)."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for box, label, text in reversed(list(zip(boxes_xyxy, labels, texts))):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        c = colour(int(label))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), c, thickness)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, thickness)
        top = max(y0 - th - base, 0)
        cv2.rectangle(canvas, (x0, top), (x0 + tw, top + th + base), c, -1)
        cv2.putText(canvas, text, (x0, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, (0, 0, 0), thickness)
    return canvas
