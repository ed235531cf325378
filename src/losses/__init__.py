"""Training losses: Hungarian matcher, sigmoid focal loss, foreground-supervision targets and the
full Focus-DETR criterion."""
