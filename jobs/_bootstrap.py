"""Make `mpi_ray` importable when a job runs from a plain checkout (ray job submit --working-dir .)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
