"""The model repository: Triton's folder layout, scanned for models and their versions.

A repository is a folder of models, each a folder of numbered versions::

    repository/
      digits/
        config.pbtxt          optional: Triton's model configuration
        fogline.yaml          optional: a fogline manifest for the whole model
        warmup/               optional: files that config.pbtxt's model_warmup reads
        1/model.onnx
        2/model.tflite        (or a fogline.yaml naming the model file)

A model's ``config.pbtxt`` is read with :func:`~fogline.serve._pbtxt.read_config`;
without one, its manifest's signature (or the model itself, once loaded)
says what the configuration leaves out.

Nothing here loads a model and nothing is cached: each call reads the folder
again, so the polling control mode sees a version the moment it is dropped in.
Calls are plain synchronous file reads, safe from any thread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from fogline.errors import ConfigError, FoglineError, ManifestError, ModelNotFound
from fogline.model import MANIFEST_NAME, Manifest, Signature
from fogline.serve._config import ModelConfig
from fogline.serve._pbtxt import CONFIG_NAME, MODEL_FILES, check_against, read_config
from fogline.serve._warmup import WARMUP_FOLDER


class Repository:
    """A Triton-style model repository on disk: its models, configs and versions.

    A *version* is a folder named by a positive integer (``1``, not ``01``)
    holding ``model.onnx`` or ``model.tflite``, or a ``fogline.yaml`` that
    names the model file. Anything else in a model folder is ignored, with
    the reason in :meth:`ignored`; models that cannot be served at all are in
    :meth:`problems`. An unknown model name raises :class:`ConfigError`.

    >>> import shutil, tempfile
    >>> from fogline.examples import digits_model_path
    >>> root = Path(tempfile.mkdtemp())
    >>> for version in ("1", "2"):
    ...     (root / "digits" / version).mkdir(parents=True)
    ...     _ = shutil.copy(digits_model_path(), root / "digits" / version / "model.onnx")
    >>> repository = Repository(root)
    >>> repository.model_names(), repository.all_versions("digits")
    (['digits'], [1, 2])
    >>> list(repository.versions("digits"))  # Triton's default policy: the latest one
    [2]
    >>> shutil.rmtree(root)
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"{self.root}: the model repository is not a folder")

    def model_names(self) -> list[str]:
        """The folders holding at least one version, sorted (a bad config does not hide one)."""
        return [
            folder.name
            for folder in self._model_folders()
            if _safe_name(folder.name) and _scan(folder).versions
        ]

    def config(self, name: str) -> ModelConfig:
        """The model's configuration: its config.pbtxt, else its manifest's signature, else defaults.

        The name inside config.pbtxt or a manifest, when given, must be the
        folder's: Triton refuses a mismatch, and it usually means a model was
        copied into the wrong folder.
        """
        folder = self._folder(name)
        path = folder / CONFIG_NAME
        if path.is_file():
            config = read_config(_read_text(path), where=str(path))
            if config.name and config.name != name:
                raise ConfigError(
                    f"{path}: the config names the model {config.name!r}, but its folder is "
                    f"{name!r}; the two must agree"
                )
            return replace(config, name=name)
        found = _manifest(folder)
        if found is None:
            return ModelConfig(name=name)
        manifest, manifest_path = found
        if manifest.name != name:
            raise ConfigError(
                f"{manifest_path}: the manifest names the model {manifest.name!r}, but its folder "
                f"is {name!r}; the two must agree"
            )
        return check_against(ModelConfig(name=name), manifest.signature())

    def all_versions(self, name: str) -> list[int]:
        """Every version the folder holds, whatever the version policy says, ascending."""
        return sorted(_scan(self._folder(name)).versions)

    def versions(self, name: str) -> dict[int, Path]:
        """The model file of each version the config's version policy selects, ascending."""
        available = _scan(self._folder(name)).versions
        selected = self.config(name).version_policy.select(list(available))
        return {version: available[version] for version in selected}

    def ignored(self, name: str) -> dict[str, str]:
        """Entries of the model folder that are not versions, each with the reason."""
        return dict(_scan(self._folder(name)).ignored)

    def problems(self) -> dict[str, str]:
        """Model folders that cannot be served, each with the reason."""
        out: dict[str, str] = {}
        for folder in self._model_folders():
            try:
                self._folder(folder.name)
                scan = _scan(folder)
                if not scan.versions:
                    out[folder.name] = _why_no_versions(scan.ignored)
                    continue
                policy = self.config(folder.name).version_policy
                if not policy.select(list(scan.versions)):
                    have = ", ".join(str(v) for v in sorted(scan.versions))
                    out[folder.name] = f"its version_policy selects none of its versions ({have})"
            except FoglineError as exc:
                out[folder.name] = str(exc)
        return out

    def warmup_file(self, name: str, filename: str) -> bytes:
        """A file of the model's ``warmup/`` folder (Triton's ``input_data_file``).

        The name must lead to a file inside that folder: a link or a path that
        leaves it is refused, like a missing file, with :class:`ConfigError`.
        """
        folder = self._folder(name) / WARMUP_FOLDER
        path = folder / filename
        try:
            inside = path.resolve().is_relative_to(folder.resolve())
            data = path.read_bytes() if inside else None
        except OSError as exc:
            raise ConfigError(
                f"model {name!r}: warm-up file {WARMUP_FOLDER}/{filename}: {exc.strerror or exc}"
            ) from exc
        if data is None:
            raise ConfigError(
                f"model {name!r}: warm-up file {WARMUP_FOLDER}/{filename} lies outside the "
                f"model's {WARMUP_FOLDER}/ folder"
            )
        return data

    @staticmethod
    def check_against(config: ModelConfig, signature: Signature) -> ModelConfig:
        """:func:`check_against`, reachable from a repository the caller already holds."""
        return check_against(config, signature)

    def fingerprint(self, name: str) -> str:
        """A digest of the names, sizes and mtimes of every file under the model folder.

        Cheap (no file is read) and it changes when a version is added,
        removed or rewritten, or the config edited: what the polling control
        mode compares between two looks.
        """
        folder = self._folder(name)
        digest = hashlib.blake2b(digest_size=16)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            relative = os.path.relpath(dirpath, folder)
            digest.update(f"d {relative}\n".encode("utf-8", "surrogateescape"))
            for filename in sorted(filenames):
                try:
                    stat = os.stat(os.path.join(dirpath, filename))
                except OSError:  # gone since the listing, or a dangling link
                    continue
                line = f"f {relative}/{filename} {stat.st_size} {stat.st_mtime_ns}\n"
                digest.update(line.encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def _model_folders(self) -> list[Path]:
        try:
            entries = sorted(self.root.iterdir())
        except OSError as exc:
            raise ConfigError(f"{self.root}: cannot list the model repository: {exc}") from exc
        return [e for e in entries if e.is_dir() and not e.name.startswith(".")]

    def _folder(self, name: str) -> Path:
        if not _safe_name(name):
            raise ConfigError(
                f"{name!r} is not a model name: it may not be empty, start with '.', or hold "
                "'/', '\\' or '..'"
            )
        folder = self.root / name
        if not folder.is_dir():
            raise ModelNotFound(f"no model named {name!r} in the repository {self.root}")
        return folder


def _safe_name(name: str) -> bool:
    """Whether ``name`` can only mean a folder directly under the repository root."""
    unsafe = ("/", "\\", "..", "\0")
    return bool(name) and not name.startswith(".") and not any(bad in name for bad in unsafe)


@dataclass(frozen=True)
class _Scan:
    versions: dict[int, Path]
    manifests: dict[int, tuple[Manifest, Path]]
    ignored: dict[str, str]


def _scan(folder: Path) -> _Scan:
    """Sort a model folder's entries into versions (with their model file) and ignored ones."""
    versions: dict[int, Path] = {}
    manifests: dict[int, tuple[Manifest, Path]] = {}
    ignored: dict[str, str] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot list the model folder: {exc}") from exc
    for entry in entries:
        if entry.name in (CONFIG_NAME, MANIFEST_NAME) and entry.is_file():
            continue
        if entry.name == WARMUP_FOLDER and entry.is_dir():
            continue
        if entry.name.startswith("."):
            ignored[entry.name] = "hidden"
        elif not entry.is_dir():
            ignored[entry.name] = "not a version folder (a folder named by a positive integer)"
        elif not (entry.name.isascii() and entry.name.isdigit()):
            ignored[entry.name] = "not a version number"
        elif entry.name.startswith("0"):
            ignored[entry.name] = "versions are positive integers without leading zeros"
        else:
            try:
                found = _manifest_model(entry)
            except FoglineError as exc:
                ignored[entry.name] = str(exc)
                continue
            if found is not None:
                versions[int(entry.name)] = found[0]
                manifests[int(entry.name)] = (found[1], entry / MANIFEST_NAME)
                continue
            model = next((entry / f for f in MODEL_FILES if (entry / f).is_file()), None)
            if model is None:
                ignored[entry.name] = f"holds no model file ({' or '.join(MODEL_FILES)})"
            else:
                versions[int(entry.name)] = model
    return _Scan(versions, manifests, ignored)


def _manifest_model(version_folder: Path) -> tuple[Path, Manifest] | None:
    """The model file a version's manifest names, checked to lie in the folder; None if no manifest."""
    path = version_folder / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest = Manifest.read(path)
    filename = manifest.model.path
    if filename != Path(filename).name or filename.startswith("."):
        raise ManifestError(f"{path}: the model file {filename!r} must sit beside the manifest")
    if Path(filename).suffix not in (".onnx", ".tflite"):
        raise ManifestError(f"{path}: the model file {filename!r} is not .onnx or .tflite")
    model = version_folder / filename
    if not model.is_file():
        raise ManifestError(f"{path}: the model file {filename!r} it names is missing")
    return model, manifest


def _manifest(folder: Path) -> tuple[Manifest, Path] | None:
    """The model's manifest: the folder's own, else that of its highest version that has one."""
    path = folder / MANIFEST_NAME
    if path.is_file():
        return Manifest.read(path), path
    manifests = _scan(folder).manifests
    return manifests[max(manifests)] if manifests else None


def _why_no_versions(ignored: dict[str, str]) -> str:
    if not ignored:
        return (
            "no version folders (a version is a folder named by a positive integer holding "
            f"{' or '.join(MODEL_FILES)})"
        )
    reasons = "; ".join(f"{entry}: {reason}" for entry, reason in ignored.items())
    return f"no version to serve ({reasons})"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the model configuration: {exc}") from exc
