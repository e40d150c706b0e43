"""TF Serving's ``models.config``: one ``ModelServerConfig`` text proto for every model under a base.

``tensorflow_model_server --model_config_file=models.config`` serves several models from one
process; each entry names a model and the directory that holds its integer versions (the
``<base>/<name>/`` of ``export.layout``)::

    model_config_list {
      config {
        name: "sinusoid"
        base_path: "/models/sinusoid"
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 1 } }
      }
    }

``base_path`` must be the path *the server* sees: with docker, the base is mounted at ``/models``
and ``serving_base`` is ``"/models"``; run natively, it is the absolute path of the base. Write
one with ``metarl export --to BASE --serving-config`` (or ``write_serving_config(BASE)``).
"""
from __future__ import annotations

import os
import posixpath
import tempfile

from export.layout import existing_versions

VERSION_POLICIES = ("latest", "all")


def exported_models(base: str) -> dict[str, list[int]]:
    """``{name: [versions]}`` for every ``<base>/<name>/<version>/saved_model.pb`` under ``base``.

    Directories whose name starts with ``.`` (temporary exports) and versions without a
    ``saved_model.pb`` are skipped.
    """
    if not os.path.isdir(base):
        raise FileNotFoundError(f"export base {base!r} is not a directory")
    models = {}
    for name in sorted(os.listdir(base)):
        model_dir = os.path.join(base, name)
        if name.startswith(".") or not os.path.isdir(model_dir):
            continue
        versions = [v for v in existing_versions(model_dir)
                    if os.path.isfile(os.path.join(model_dir, str(v), "saved_model.pb"))]
        if versions:
            models[name] = versions
    return models


def _quote(text: str) -> str:
    # A text-proto string literal: backslash and double quote escaped, no control characters.
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"path or name {text!r} contains a control character")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serving_config_text(base: str, serving_base: str | None = None, version_policy: str = "latest",
                        num_versions: int = 1) -> str:
    """The ``models.config`` text for every exported model under ``base``.

    Args:
      base: the export base directory (``metarl export --to``).
      serving_base: the base as the server sees it (e.g. ``/models`` inside docker); default the
        absolute path of ``base``.
      version_policy: ``"latest"`` (serve the ``num_versions`` highest versions) or ``"all"``.
      num_versions: with ``"latest"``, how many versions to serve (>= 1).

    Raises:
      FileNotFoundError: ``base`` is missing. ValueError: no export under ``base``, bad policy.
    """
    if version_policy not in VERSION_POLICIES:
        raise ValueError(f"`version_policy` must be one of {VERSION_POLICIES}, got {version_policy!r}")
    if isinstance(num_versions, bool) or not isinstance(num_versions, int) or num_versions < 1:
        raise ValueError(f"`num_versions` must be an integer >= 1, got {num_versions!r}")
    models = exported_models(base)
    if not models:
        raise ValueError(f"no exported model under {base!r} (expected <base>/<name>/<version>/"
                         "saved_model.pb)")
    root = os.path.abspath(base) if serving_base is None else serving_base
    join = posixpath.join if root.startswith("/") else os.path.join
    policy = (f"latest {{ num_versions: {num_versions} }}" if version_policy == "latest"
              else "all {}")
    lines = ["# TF Serving ModelServerConfig, written by `metarl export --serving-config`.",
             f"# Models: {', '.join(f'{n} (versions {vs})' for n, vs in models.items())}",
             "model_config_list {"]
    for name in models:
        lines += ["  config {",
                  f"    name: {_quote(name)}",
                  f"    base_path: {_quote(join(root, name))}",
                  '    model_platform: "tensorflow"',
                  f"    model_version_policy {{ {policy} }}",
                  "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_serving_config(base: str, path: str | None = None, serving_base: str | None = None,
                         version_policy: str = "latest", num_versions: int = 1) -> str:
    """Writes ``serving_config_text(...)`` atomically to ``path`` (default ``<base>/models.config``)
    and returns the path. An existing config is replaced as a whole (it is a listing, not an
    export: the exports themselves are never touched)."""
    text = serving_config_text(base, serving_base, version_policy, num_versions)
    path = os.path.join(base, "models.config") if path is None else path
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".models.config-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
