"""Make the test support modules (the stub OpenAI server) importable as top-level modules.

Tests run with `--import-mode=importlib`, so `tests/` is not a package on sys.path; the stub
also runs as a standalone script, so it is imported by its file name: `from stub_server import ...`.
"""

import sys
from pathlib import Path

_SUPPORT = str(Path(__file__).parent / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)
