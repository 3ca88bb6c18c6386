"""What goes into a release: the files of a folder, and what kind of thing they are.

A folder becomes a list of ``(relative path, absolute file)``; a symlink is
followed only when it stays inside the folder. The kind and entry are
inferred the way an operator would read the folder, from the table of what
each kind contains (:data:`~fogline.security._document.CONTENTS`), first fit wins:

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
from fogline.security._document import (
    CONTENTS,
    FOLDER_KIND,
    KINDS,
    MANIFEST_FILE,
    PIPELINE_FILE,
    Kind,
)


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
    wanted_kind = None if kind is None else _as_kind(kind)
    if entry is not None:
        _check_entry(paths, entry)
        return wanted_kind or _kind_of_entry(paths, entry), entry
    top = {p for p in paths if "/" not in p}
    guesses: list[tuple[Kind, str]] = []
    singles: list[str] = []
    for name, contents in CONTENTS.items():
        if contents.top_entry is not None and contents.top_entry in top:
            guesses.append((name, contents.top_entry))
        if contents.repository and _is_model_repository(paths):
            guesses.append((name, "."))
        if contents.manifest is not None and contents.manifest in top:
            guesses.append((name, "."))
        if contents.single:
            found = [p for p in paths if p.endswith(contents.suffixes)]
            singles += found
            if len(found) == 1:
                guesses.append((name, found[0]))
    for guess in guesses:
        if wanted_kind is None or guess[0] == wanted_kind:
            return guess
    wanted = f"a {kind} release" if kind else "this release"
    raise ConfigError(
        f"cannot tell what {wanted} runs (found {len(singles)} model files, "
        f"no {PIPELINE_FILE}, no {MANIFEST_FILE}, no model repository); give --kind and --entry"
    )


def _as_kind(name: str) -> Kind:
    for kind in KINDS:
        if kind == name:
            return kind
    raise ConfigError(f"--kind must be {', '.join(KINDS[:-1])} or {KINDS[-1]}; got {name!r}")


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


def _kind_of_entry(paths: list[str], entry: str) -> Kind:
    """The kind of a release whose entry is given: by its name, or by what the folder holds.

    >>> _kind_of_entry(["fogline.yaml", "m.onnx"], "fogline.yaml")
    'model'
    >>> _kind_of_entry(["app/pipeline.yml"], "app/pipeline.yml")
    'pipeline'
    >>> _kind_of_entry(["learner.yaml"], "learner.yaml")
    'learner'
    """
    for kind, contents in CONTENTS.items():  # a manifest is YAML, but not a pipeline
        if entry in (contents.manifest, contents.top_entry):
            return kind
    for kind, contents in CONTENTS.items():
        if contents.suffixes and entry.endswith(contents.suffixes):
            return kind
    prefix = "" if entry == "." else entry.rstrip("/") + "/"
    inside = [p[len(prefix) :] for p in paths if p.startswith(prefix)]
    for kind, contents in CONTENTS.items():
        if contents.repository and _is_model_repository(inside):
            return kind
    return FOLDER_KIND
