"""``python -m fastdiffsr`` (and ``torchrun -m fastdiffsr``) runs the CLI."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
