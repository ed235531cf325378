"""Console + file logging and the training progress line (iterations, losses, lr, speed, ETA)."""
import logging
import os
import sys
import time


def setup_logger(output_dir, name="focus_detr", rank=0):
    """Rank 0 logs INFO to the console and to ``output_dir/log.txt``; other ranks (whose stdout
    msrun writes to its worker logs) only show warnings."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    fmt = logging.Formatter("[%(asctime)s] %(message)s", "%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    else:
        console.setLevel(logging.WARNING)
    return logger


def format_duration(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Throughput and ETA over the iterations since the last report (the first iteration, which
    compiles the graph, is excluded from the speed)."""

    def __init__(self, start_iter, max_iter, images_per_iter):
        self.max_iter = max_iter
        self.images_per_iter = images_per_iter
        self.last_iter, self.last_time = start_iter, None

    def report(self, iteration):
        """(images/s, ETA string) after ``iteration`` (0-based) finished."""
        now = time.perf_counter()
        if self.last_time is None:  # compile step: start timing from here
            self.last_iter, self.last_time = iteration, now
            return float("nan"), "?"
        done = iteration - self.last_iter
        per_iter = (now - self.last_time) / max(done, 1)
        self.last_iter, self.last_time = iteration, now
        eta = format_duration(per_iter * (self.max_iter - iteration - 1))
        return self.images_per_iter / per_iter, eta
