"""What goes into a release: the files of a folder, and what kind of thing they are.

A folder becomes a list of ``(relative path, absolute file)``; a symlink is
followed only when it stays inside the folder. The kind and entry are
inferred the way an operator would read the folder:

* ``pipeline.yaml`` at the top → a ``pipeline`` whose entry is that file;
* sub-folders holding numeric version folders (Triton's layout) → ``serve``,
  entry ``.`` (the repository is the release folder);
* ``fogline.yaml`` at the top → a ``model`` described by its manifest, entry ``.``;
* exactly one ``.onnx`` or ``.tflite`` file → a ``model``, entry that file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from fogline.errors import ConfigError
from fogline.security._document import Kind

PIPELINE_FILE = "pipeline.yaml"
MANIFEST_FILE = "fogline.yaml"  # the model manifest (fogline.model), read by the agent
MODEL_SUFFIXES = (".onnx", ".tflite")


def collect_files(source: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``source`` (or ``source`` itself), sorted by relative path."""
    source = Path(source)
    if not source.exists():
        raise ConfigError(f"{source} does not exist")
    if source.is_file():
        return [(source.name, source.resolve())]
    root = source.resolve()
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs):
            full = Path(folder, name)
            if full.is_symlink():
                raise ConfigError(
                    f"{full} is a symlink to a folder; copy the folder into the release instead"
                )
        for name in sorted(files):
            full = Path(folder, name)
            relative = full.relative_to(root).as_posix()
            target = full.resolve()
            if full.is_symlink() and not target.is_relative_to(root):
                raise ConfigError(f"{full} is a symlink that leaves {source} (to {target})")
            if not target.is_file():
                raise ConfigError(f"{full} is not a regular file (a broken link or a device?)")
            found.append((relative, target))
    if not found:
        raise ConfigError(f"{source} is empty: a release needs at least one file")
    return sorted(found)


def infer_kind_entry(paths: list[str], kind: str | None, entry: str | None) -> tuple[Kind, str]:
    """The ``(kind, entry)`` of a release with these file paths; ConfigError when unclear.

    >>> infer_kind_entry(["pipeline.yaml", "model/model.onnx"], None, None)
    ('pipeline', 'pipeline.yaml')
    >>> infer_kind_entry(["digits/1/model.onnx", "digits/config.pbtxt"], None, None)
    ('serve', '.')
    >>> infer_kind_entry(["net.onnx", "labels.txt"], None, None)
    ('model', 'net.onnx')
    """
    if kind is not None and kind not in ("model", "pipeline", "serve"):
        raise ConfigError(f"--kind must be model, pipeline or serve; got {kind!r}")
    if entry is not None:
        _check_entry(paths, entry)
        if kind is None:
            kind = _kind_of_entry(paths, entry)
        return _as_kind(kind), entry
    top = {p for p in paths if "/" not in p}
    guesses: list[tuple[Kind, str]] = []
    if PIPELINE_FILE in top:
        guesses.append(("pipeline", PIPELINE_FILE))
    if _is_model_repository(paths):
        guesses.append(("serve", "."))
    if MANIFEST_FILE in top:
        guesses.append(("model", "."))
    models = [p for p in paths if p.endswith(MODEL_SUFFIXES)]
    if len(models) == 1:
        guesses.append(("model", models[0]))
    for guess in guesses:
        if kind is None or guess[0] == kind:
            return guess
    wanted = f"a {kind} release" if kind else "this release"
    raise ConfigError(
        f"cannot tell what {wanted} runs (found {len(models)} model files, "
        f"no {PIPELINE_FILE}, no {MANIFEST_FILE}, no model repository); give --kind and --entry"
    )


def _as_kind(kind: str) -> Kind:
    if kind == "pipeline":
        return "pipeline"
    if kind == "serve":
        return "serve"
    return "model"


def _is_model_repository(paths: list[str]) -> bool:
    """Triton's layout: ``<model>/<numeric version>/<files>`` for at least one model."""
    for path in paths:
        parts = PurePosixPath(path).parts
        if len(parts) >= 3 and parts[1].isdigit():
            return True
    return False


def _check_entry(paths: list[str], entry: str) -> None:
    if entry == ".":
        return
    if entry in paths:
        return
    if any(p.startswith(entry.rstrip("/") + "/") for p in paths):
        return
    raise ConfigError(f"entry {entry!r} is not a file or folder of the release")


def _kind_of_entry(paths: list[str], entry: str) -> str:
    if entry.endswith((".yaml", ".yml")) and entry != MANIFEST_FILE:
        return "pipeline"
    if entry.endswith(MODEL_SUFFIXES) or entry == MANIFEST_FILE:
        return "model"
    prefix = "" if entry == "." else entry.rstrip("/") + "/"
    inside = [p[len(prefix) :] for p in paths if p.startswith(prefix)]
    if _is_model_repository(inside):
        return "serve"
    return "model"
