"""TF Serving's model layout: ``<base>/<name>/<version>/``, integer versions, written atomically.

TF Serving watches ``<base>/<name>`` and loads the highest integer-named sub-directory. An export is
first written into a hidden temporary directory beside the versions (TF Serving ignores names that
are not integers), then renamed into place in one step, so a server never sees half a model. An
existing version directory is never replaced.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import Callable


def existing_versions(model_dir: str) -> list[int]:
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def next_version(model_dir: str) -> int:
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def write_versioned(base: str, name: str, write: Callable[[str], None],
                    version: int | None = None) -> str:
    """Calls ``write(tmp_dir)`` and moves the result to ``<base>/<name>/<version>``.

    Args:
      base: the model base directory (TF Serving's ``--model_base_path`` is ``<base>/<name>``).
      name: model name; a plain directory name.
      write: writes the complete export into the directory it is given.
      version: explicit version (a positive integer); default: one more than the highest present.

    Returns:
      The version directory written.

    Raises:
      FileExistsError: the version directory exists already (it is left untouched).
      ValueError: bad ``name`` or ``version``.
    """
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"`name` must be a plain directory name, got {name!r}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ValueError(f"`version` must be a positive integer, got {version!r}")
    model_dir = os.path.join(base, name)
    os.makedirs(model_dir, exist_ok=True)
    auto = version is None
    version = next_version(model_dir) if auto else version
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"export version directory {final} already exists; "
                              "exports are never overwritten (choose another --version)")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        write(tmp)
        while True:
            # rename(2) refuses to replace a non-empty directory, so a concurrent exporter that
            # took this version first (its rename put a complete export there) is never replaced.
            try:
                if os.path.exists(final):
                    raise FileExistsError(final)
                os.rename(tmp, final)
                break
            except OSError as err:
                if not (isinstance(err, FileExistsError)
                        or err.errno in (errno.EEXIST, errno.ENOTEMPTY)):
                    raise
                if not auto:
                    raise FileExistsError(f"export version directory {final} appeared during the "
                                          "export; exports are never overwritten") from None
                version = next_version(model_dir)  # the next free one, as if asked for it now
                final = os.path.join(model_dir, str(version))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
