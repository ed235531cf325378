"""The assembled Focus-DETR model and its parts."""
