"""``Report``: the benchmarks' printer that also keeps their output in a file, written atomically."""
from __future__ import annotations

import os


def fmt(x) -> str:
    """``key=value`` formatting: floats to 5 significant digits."""
    return f"{x:.5g}" if isinstance(x, float) else str(x)


class Report:
    """Prints lines and keeps them, rewriting ``path`` atomically (temp file + rename) after every
    line, so an interrupted run leaves what it had measured.

    Args:
      path: the output file, or None to print only.
      header: first lines (the command, the date, the machine).
      keep_existing: start from ``path``'s current lines (a run that adds to an earlier output).
    """

    def __init__(self, path: str | None, header: list[str], keep_existing: bool = False):
        self.path, self.lines = path, []
        if keep_existing and path and os.path.exists(path):
            with open(path) as f:
                self.lines = f.read().splitlines()
        for h in header:
            self(h)

    def __call__(self, text: str = "", **kv):
        text = text or " ".join(f"{k}={fmt(v)}" for k, v in kv.items())
        print(text, flush=True)
        self.lines.append(text)
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join(self.lines) + "\n")
            os.replace(tmp, self.path)
