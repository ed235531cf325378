"""Focus-DETR eval entry point (not implemented yet: see the project issues)."""
import sys

if __name__ == "__main__":
    print("eval.py is not implemented yet", file=sys.stderr)
    sys.exit(2)
