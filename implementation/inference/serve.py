"""Start the model server: ``python implementation/inference/serve.py [ai-system serve options]``.

The same as ``ai-system serve``; see ``--help`` and implementation/inference/README.md.
"""

from __future__ import annotations

import sys

from ai_system.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
