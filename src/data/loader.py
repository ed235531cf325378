"""Static-shape padded batches as a ``mindspore.dataset`` pipeline.

Every random choice of an epoch is made up front in the calling process (``plan_epoch``):
the shuffle, each image's augmentation plan, and the grouping into batches. The workers
only read, transform and pad, so the batches depend on (seed, epoch, shard) alone and not
on worker scheduling, and resuming at step k of an epoch is ``start_step=k``.

Canvases: with a list of (H, W) canvas shapes, each image's bucket is the smallest-area
canvas that holds its resized size, batches are formed within a bucket (detectron2's
aspect-ratio grouping, with canvases as the groups), and a batch is padded to the smallest
canvas that holds all its images, so graph mode sees at most ``len(canvases)`` input shapes.
With ``canvases=None`` a batch is padded to its own maximum height and width, as the
reference does (dynamic shapes), and buckets are landscape vs portrait as in detectron2.

Batch columns (``COLUMNS``), B = batch size, (Hc, Wc) = canvas, M = ``max_boxes``:
    images       float32 (B, 3, Hc, Wc)  RGB 0..255, not normalized, zero bottom/right padding
    image_sizes  int32   (B, 2)  [h, w] of the resized image inside the canvas
    gt_boxes     float32 (B, M, 4)  cx, cy, w, h divided by the image size (not the canvas)
    gt_labels    int32   (B, M)  contiguous labels
    gt_valid     bool    (B, M)  False on padding rows (their box and label are 0)
    image_ids    int32   (B,)    json image id; -1 marks a filler slot
    orig_sizes   int32   (B, 2)  [h, w] of the original image (json size)

Training drops the incomplete batch of every bucket at the end of an epoch (new shuffle, new
leftovers each epoch) and cuts every shard to the shortest shard's batch count, so all ranks
run the same number of steps. Evaluation keeps every image: the last batch of a bucket is
completed with filler slots (zero image, image_sizes = orig_sizes = canvas size, no boxes,
image id -1) that the evaluator must ignore; shards may then differ by a batch or so.
"""
import logging

import numpy as np

from .transforms import AugmentConfig, apply_plan, eval_plan, plan_output_size, sample_train_plan

log = logging.getLogger(__name__)

COLUMNS = ("images", "image_sizes", "gt_boxes", "gt_labels", "gt_valid", "image_ids", "orig_sizes")


def choose_canvas(sizes, canvases):
    """Smallest-area canvas (H, W) holding every (h, w) in ``sizes``; batch maximum if None."""
    max_h = max(h for h, _ in sizes)
    max_w = max(w for _, w in sizes)
    if canvases is None:
        return max_h, max_w
    fitting = [tuple(c) for c in canvases if c[0] >= max_h and c[1] >= max_w]
    if not fitting:
        raise ValueError(f"no canvas in {[tuple(c) for c in canvases]} holds an image of size "
                         f"{max_h}x{max_w} (h x w); add a larger canvas or lower the resize sizes")
    return min(fitting, key=lambda c: c[0] * c[1])


def pad_to_canvas(images, canvas_hw):
    """(B,3,H,W) float32 batch with each (h, w, 3) image of ``images`` at the top-left of an
    H x W zero canvas (None leaves its slot empty), as the official batching pads."""
    batch = np.zeros((len(images), 3) + tuple(canvas_hw), np.float32)
    for i, image in enumerate(images):
        if image is not None:
            batch[i, :, :image.shape[0], :image.shape[1]] = image.transpose(2, 0, 1)
    return batch


def _bucket(size, canvases):
    if canvases is None:
        return 0 if size[1] > size[0] else 1  # detectron2: landscape vs portrait-or-square
    return choose_canvas([size], canvases)


def _shard_slots(dataset, train, seed, epoch, num_shards, augment):
    """Per shard, the list of (record index, plan) it sees this epoch."""
    n = len(dataset)
    if not train:
        slots = [(i, eval_plan(r.height, r.width, augment)) for i, r in enumerate(dataset.records)]
        return [slots[s::num_shards] for s in range(num_shards)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    # equal shard sizes: wrap around to the start of the permutation (torch DistributedSampler)
    order = np.resize(order, -(-n // num_shards) * num_shards)
    slots = []
    for i in order:
        record = dataset.records[i]
        slots.append((int(i), sample_train_plan(rng, record.height, record.width, augment)))
    return [slots[s::num_shards] for s in range(num_shards)]


def _group(dataset, slots, batch_size, canvases, drop_last):
    """Batches (lists of slots) of images sharing a bucket, emitted in order of completion."""
    open_batches, batches = {}, []
    for slot in slots:
        record = dataset.records[slot[0]]
        key = _bucket(plan_output_size(record.height, record.width, slot[1]), canvases)
        batch = open_batches.setdefault(key, [])
        batch.append(slot)
        if len(batch) == batch_size:
            batches.append(batch)
            open_batches[key] = []
    if not drop_last:
        for batch in open_batches.values():
            if batch:
                batches.append(batch + [None] * (batch_size - len(batch)))
    return batches


def plan_epoch(dataset, batch_size, train, canvases=None, augment=AugmentConfig(), seed=0, epoch=0,
               shard_id=0, num_shards=1):
    """The batches of one epoch for one shard: lists of ``batch_size`` slots, each slot
    (record index, augmentation plan) or None for a filler (evaluation only)."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    shards = _shard_slots(dataset, train, seed, epoch, num_shards, augment)
    if not train:
        return _group(dataset, shards[shard_id], batch_size, canvases, drop_last=False)
    # every rank groups every shard (cheap: sizes only) to agree on the shortest one
    grouped = [_group(dataset, s, batch_size, canvases, drop_last=True) for s in shards]
    return grouped[shard_id][:min(len(g) for g in grouped)]


class BatchSource:
    """Random-access source for ``GeneratorDataset``: item k is planned batch k as the
    tuple of ``COLUMNS`` arrays."""

    def __init__(self, dataset, batches, canvases, augment, max_boxes, train, seed, epoch, start_step):
        self.dataset = dataset
        self.batches = batches
        self.canvases = canvases
        self.augment = augment
        self.max_boxes = max_boxes
        self.train = train
        self.seed = seed
        self.epoch = epoch
        self.start_step = start_step
        self._warned_max_boxes = False

    def __len__(self):
        return len(self.batches) - self.start_step

    def _load(self, slot, step, position):
        """(image, boxes, labels, record) after augmentation, or None for a filler slot.

        An unreadable image (``bad_image="skip"``) becomes a filler in evaluation, and in
        training is replaced by the next readable record, with a plan drawn from a
        generator keyed by (seed, epoch, step, position) so the result stays deterministic.
        """
        if slot is None:
            return None
        index, plan = slot
        for attempt in range(len(self.dataset)):
            image = self.dataset.read_image(index)
            if image is not None:
                break
            if not self.train:
                return None
            index = (index + 1) % len(self.dataset)
            record = self.dataset.records[index]
            rng = np.random.default_rng([self.seed, self.epoch, step, position, attempt])
            plan = sample_train_plan(rng, record.height, record.width, self.augment)
        else:
            raise RuntimeError(f"no readable image left in {self.dataset.ann_file}")
        record = self.dataset.records[index]
        image, boxes, keep = apply_plan(image, record.boxes, plan, self.augment.interpolation)
        return image, boxes, record.labels[keep], record

    def _planned_size(self, slot):
        record = self.dataset.records[slot[0]]
        return plan_output_size(record.height, record.width, slot[1])

    def __getitem__(self, k):
        step = k + self.start_step
        slots = self.batches[step]
        items = [self._load(slot, step, i) for i, slot in enumerate(slots)]
        # an eval image found unreadable keeps its planned size, so the canvas is as planned
        sizes = [item[0].shape[:2] if item is not None else self._planned_size(slot)
                 for slot, item in zip(slots, items) if slot is not None]
        canvas_h, canvas_w = choose_canvas(sizes, self.canvases)
        b, m = len(items), self.max_boxes
        images = pad_to_canvas([item[0] if item is not None else None for item in items], (canvas_h, canvas_w))
        image_sizes = np.tile(np.array([canvas_h, canvas_w], np.int32), (b, 1))
        orig_sizes = image_sizes.copy()
        gt_boxes = np.zeros((b, m, 4), np.float32)
        gt_labels = np.zeros((b, m), np.int32)
        gt_valid = np.zeros((b, m), bool)
        image_ids = np.full((b,), -1, np.int32)
        for i, item in enumerate(items):
            if item is None:
                continue
            image, boxes, labels, record = item
            h, w = image.shape[:2]
            image_sizes[i] = (h, w)
            orig_sizes[i] = (record.height, record.width)
            image_ids[i] = record.image_id
            if len(boxes) > m:
                if not self._warned_max_boxes:
                    log.warning("image %d has %d boxes after augmentation; keeping the first max_boxes=%d "
                                "(warned once per loader)", record.image_id, len(boxes), m)
                    self._warned_max_boxes = True
                boxes, labels = boxes[:m], labels[:m]
            n = len(boxes)
            scale = np.array([w, h, w, h], np.float32)
            gt_boxes[i, :n, :2] = (boxes[:, :2] + boxes[:, 2:]) / 2 / scale[:2]
            gt_boxes[i, :n, 2:] = (boxes[:, 2:] - boxes[:, :2]) / scale[2:]
            gt_labels[i, :n] = labels
            gt_valid[i, :n] = True
        return images, image_sizes, gt_boxes, gt_labels, gt_valid, image_ids, orig_sizes


def build_loader(dataset, batch_size, train, canvases=None, augment=AugmentConfig(), num_workers=1, seed=0,
                 epoch=0, start_step=0, max_boxes=100, shard_id=0, num_shards=1, multiprocessing=False):
    """One epoch of batches as a ``mindspore.dataset.GeneratorDataset`` (columns ``COLUMNS``).

    Build one loader per epoch (``epoch`` selects the shuffle and augmentations); to resume
    after k completed steps of an epoch pass ``start_step=k``. ``multiprocessing=False`` runs
    the workers as threads: measured on the 2-core CPU machine they are as fast as processes
    (cv2 releases the GIL; one thread already gives ~115 img/s at the official sizes, far above
    the training speed) and ``dataset.skipped`` then counts unreadable images; worker
    processes would count them in their own copies and only log them.
    """
    import mindspore.dataset as ds

    batches = plan_epoch(dataset, batch_size, train, canvases, augment, seed, epoch, shard_id, num_shards)
    if not 0 <= start_step <= len(batches):
        raise ValueError(f"start_step must be in [0, {len(batches)}], got {start_step}")
    source = BatchSource(dataset, batches, canvases, augment, max_boxes, train, seed, epoch, start_step)
    return ds.GeneratorDataset(source, column_names=list(COLUMNS), shuffle=False,
                               num_parallel_workers=num_workers, python_multiprocessing=multiprocessing)
