"""Training entry point: ``torchrun --nproc-per-node N implementation/training/train.py [options]``.

Also runs as a single unsharded process with plain ``python``. Options: ``--help``.
"""

import sys

from ai_system.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
