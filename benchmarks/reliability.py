"""The reliability checks as a script of the results registry (``results/reliability.yaml``).

usage:
    python benchmarks/reliability.py [--quick] [--seed S] [--json PATH] [training.reliability flags]

Runs ``python -m training.reliability`` from any working directory (the ``script`` protocol of
``metarl results`` runs a file): SIGKILLed runs resumed, corrupted checkpoints recovered, hostile
export inputs, the soak, unsafe loading sites, non-finite batches and env faults. ``--json`` writes
the figures as one flat dict; see ``training/reliability.py``.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from training.reliability import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
