"""Counting the matmul FLOPs of an XLA HLO module from its text (``benchmarks/maml_sinusoid.py``)."""
from __future__ import annotations

import math
import re

_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_DOT = re.compile(r"\bdot\(%([\w.\-]+),")
_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")


def dot_flops(hlo_text: str) -> tuple[int, int]:
    """``(sum 2 * |output| * |contracted|, number of dots)`` over the dot ops of an HLO module's
    text (the lhs shape is looked up by the operand's name). Each dot line is counted once: right
    for a module without loops (the meta-gradient of a one-step MAML has none)."""
    shapes, total, count = {}, 0, 0
    lines = hlo_text.splitlines()
    for line in lines:
        m = _DEF.search(line)
        if m:
            shapes[m.group(1)] = [int(d) for d in m.group(2).split(",") if d]
    for line in lines:
        d, m = _DOT.search(line), _DEF.search(line)
        if not (d and m):
            continue
        lhs, out = shapes[d.group(1)], shapes[m.group(1)]
        c = _CONTRACT.search(line)
        contracted = [lhs[int(i)] for i in c.group(1).split(",") if i] if c else []
        total += 2 * math.prod(out) * math.prod(contracted)
        count += 1
    return total, count
