"""docs/TF_AGENTS.md's loop runs as written, on the test session's PointNav export."""
import contextlib
import io
import os
import re

from conftest import ROOT


def test_the_documented_loop_runs(exports):
    with open(os.path.join(ROOT, "docs", "TF_AGENTS.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    loop = blocks[0]
    assert 'EXPORT = "exports/pointnav/1"' in loop
    code = loop.replace('EXPORT = "exports/pointnav/1"', f"EXPORT = {exports['pointnav']!r}")
    out = io.StringIO()
    namespace = {"__name__": "docs_loop"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/TF_AGENTS.md", "exec"), namespace)
    printed = out.getvalue()
    match = re.search(r"average return (-?\d+\.\d) before adapting, (-?\d+\.\d) after one step",
                      printed)
    assert match, printed
    # the printed figures are the metric's; returns are sums of 100 negative distances
    assert float(match.group(1)) == round(namespace["before"], 1)
    assert -100 * 1.5 < namespace["before"] < 0 and -100 * 1.5 < namespace["after"] < 0
