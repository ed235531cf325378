"""Focus-DETR train entry point (not implemented yet: see the project issues)."""
import sys

if __name__ == "__main__":
    print("train.py is not implemented yet", file=sys.stderr)
    sys.exit(2)
