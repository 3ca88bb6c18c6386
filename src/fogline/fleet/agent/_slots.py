"""The release slots of a device: staged releases, the atomic swap of ``active/<name>``, recovery.

Under the device data folder ``DEV``::

    DEV/releases/<name>/<version>/       a staged release built from blobs (read-only)
    DEV/releases/<name>/<version>.json   its release document
    DEV/active/<name>                    symlink to ../releases/<name>/<version>
    DEV/installed.json                   active and previous (last-known-good) per name

A staged folder appears under its final name only when complete (built as
``.staging-*`` and renamed), and ``active/<name>`` is replaced with
``os.replace`` of a new symlink, so a ``kill -9`` at any moment leaves it on
the old or the new complete release. ``installed.json`` is journalled (the
new state is written as pending before the swap) so :meth:`Slots.recover`
knows which it was. Damage found on disk is
:class:`~fogline.errors.ReleaseRefused`.

Concurrency: blocking I/O, called under the installer's lock.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field, ValidationError

from fogline._files import TEMP_PREFIX, atomic_write, remove_tree, sha256_file
from fogline.errors import FoglineError, ModelNotFound, ReleaseRefused
from fogline.security import ReleaseDocument, ReleaseFile

_STAGING = ".staging-"
_TRASH = ".trash-"


@dataclass(frozen=True)
class StagedRelease:
    """A verified release in its own read-only folder, ready to activate."""

    name: str
    version: str
    path: Path
    document: ReleaseDocument

    @property
    def entry(self) -> Path:
        """What to run: the model file, the pipeline YAML or the repository folder."""
        entry = self.document.entry
        return self.path if entry == "." else self.path.joinpath(*entry.split("/"))


class Slot(BaseModel):
    """The active release of one name and the last-known-good one to roll back to."""

    active: str | None = None
    previous: str | None = None


class _Installed(BaseModel):
    releases: dict[str, Slot] = Field(default_factory=dict)
    pending: dict[str, Slot] = Field(default_factory=dict)  # a swap that may have happened


class Slots:
    """The staged and active releases under the device folder ``data``, built from ``blobs``."""

    def __init__(
        self,
        data: Path,
        blobs: Path,
        check: Callable[[Path, ReleaseFile], str | None] | None = None,
    ) -> None:
        self.data = data
        self.blobs = blobs
        #: What is wrong with a kept file (a sealed model is opened and hashed), or None.
        self._check = check or _check_plain
        self.releases = data / "releases"
        self.active_links = data / "active"
        self._state_file = data / "installed.json"

    # -- reading ------------------------------------------------------------------------------

    def slot(self, name: str) -> Slot:
        """The active and previous versions of ``name`` (both None when it has none)."""
        return self._state().releases.get(name, Slot())

    def staged(self, name: str, version: str) -> StagedRelease | None:
        """Release ``name`` ``version`` when it is staged on the device, else None."""
        folder = self.releases / name / version
        doc_file = self.releases / name / f"{version}.json"
        if not folder.is_dir() or not doc_file.is_file():
            return None
        try:
            doc = ReleaseDocument.model_validate_json(doc_file.read_bytes())
        except (OSError, ValidationError):
            return None
        return StagedRelease(name, version, folder, doc)

    def active(self, name: str) -> StagedRelease | None:
        """The release ``active/<name>`` points at, or None."""
        version = self.link_version(name)
        return None if version is None else self.staged(name, version)

    def link_version(self, name: str) -> str | None:
        """The version ``active/<name>`` points at, or None."""
        link = self.active_links / name
        if not link.is_symlink():
            return None
        return PurePosixPath(os.readlink(link)).name

    def verify(self, staged: StagedRelease) -> None:
        """Check every file of ``staged`` against its size and sha256; ReleaseRefused if damaged."""
        for item in staged.document.files:
            file = staged.path.joinpath(*item.path.split("/"))
            problem = None
            if file.is_symlink() or not file.is_file():
                problem = "is missing"
            else:
                problem = self._check(file, item)
            if problem:
                raise ReleaseRefused(
                    f"{staged.name} {staged.version}: file {item.path} {problem} (damaged on disk)"
                )

    # -- staging and swapping -----------------------------------------------------------------

    def stage(self, doc: ReleaseDocument, body: bytes) -> StagedRelease:
        """Build ``doc``'s folder from the blobs (all downloaded) and give it its final name."""
        folder = self.releases / doc.name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_STAGING}{doc.version}-{secrets.token_hex(4)}"
        tmp.mkdir()
        for item in doc.files:
            dest = tmp.joinpath(*item.path.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = self.blobs / item.sha256
            try:
                os.link(blob, dest)
            except OSError:  # another file system, or no hard links: a copy will do
                shutil.copyfile(blob, dest)
        _make_read_only(tmp)
        final = folder / doc.version
        if final.exists():  # a damaged or different copy: replaced whole
            self._trash(final)
        atomic_write(folder / f"{doc.version}.json", body)
        os.rename(tmp, final)
        return StagedRelease(doc.name, doc.version, final, doc)

    def switch(self, name: str, slot: Slot) -> None:
        """Point ``active/<name>`` at ``slot.active``, journalled in installed.json."""
        assert slot.active is not None
        state = self._state()
        state.pending[name] = slot
        self._write_state(state)
        tmp = self.active_links / f"{TEMP_PREFIX}{name}.{secrets.token_hex(4)}"
        os.symlink(os.path.join("..", "releases", name, slot.active), tmp)
        os.replace(tmp, self.active_links / name)
        state.releases[name] = slot
        del state.pending[name]
        self._write_state(state)

    def rollback(self, name: str) -> StagedRelease:
        """Swap ``name`` back to its previous release (re-verified first) and return it."""
        slot = self.slot(name)
        staged = None if slot.previous is None else self.staged(name, slot.previous)
        if staged is None:
            raise ModelNotFound(f"release {name} has no previous release on this device")
        self.verify(staged)
        self.switch(name, Slot(active=staged.version, previous=None))
        return staged

    def prune(self, name: str) -> set[str]:
        """Remove staged releases of ``name`` other than active and previous.

        Returns the sha256 of every file the staged releases (of every name)
        still hold: the blobs to keep.
        """
        slot = self.slot(name)
        keep = {slot.active, slot.previous}
        for child in (self.releases / name).iterdir():
            if child.name.startswith("."):
                continue
            version = child.name.removesuffix(".json")
            if version not in keep:
                self._trash(child)
        used: set[str] = set()
        for doc_file in self.releases.glob("*/*.json"):
            with contextlib.suppress(OSError, ValidationError):
                doc = ReleaseDocument.model_validate_json(doc_file.read_bytes())
                used.update(item.sha256 for item in doc.files)
        return used

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Clean up after a crash and check the active releases; returns what it did.

        Removes half-built staging folders, half-deleted ones and temporary
        symlinks and files; settles a swap that was in flight; re-verifies
        every active release and rolls back to the previous one when its
        files are damaged.
        """
        notes: list[str] = []
        for leftover in self._leftovers():
            remove_tree(leftover)
            notes.append(f"removed {leftover.relative_to(self.data)}")
        state = self._state()
        for name, slot in list(state.pending.items()):
            if self.link_version(name) == slot.active:
                state.releases[name] = slot
            del state.pending[name]
        for link in sorted(self.active_links.iterdir()):
            version = self.link_version(link.name)
            slot = state.releases.get(link.name, Slot())
            if version is not None and version != slot.active:
                state.releases[link.name] = Slot(active=version, previous=slot.active)
        self._write_state(state)
        for name in sorted(state.releases):
            notes.extend(self._check_active(name))
        return notes

    def _check_active(self, name: str) -> list[str]:
        staged = self.active(name)
        if staged is None:
            return [f"{name}: no active release"]
        try:
            self.verify(staged)
            return []
        except ReleaseRefused as exc:
            note = f"{name} {staged.version} is damaged ({exc})"
            try:
                back = self.rollback(name)
            except FoglineError as again:
                return [f"{note}; cannot roll back: {again}"]
            return [f"{note}; rolled back to {back.version}"]

    def _trash(self, path: Path) -> None:
        """Remove a staged folder: renamed away first, so no half-deleted one keeps its name."""
        if path.is_dir() and not path.is_symlink():
            trash = path.with_name(f"{_TRASH}{path.name}-{secrets.token_hex(4)}")
            os.rename(path, trash)
            remove_tree(trash)
        else:
            path.unlink(missing_ok=True)

    def _leftovers(self) -> list[Path]:
        found = [p for p in self.data.iterdir() if p.name.startswith(TEMP_PREFIX)]
        found += [p for p in self.active_links.iterdir() if p.name.startswith(TEMP_PREFIX)]
        for folder in self.releases.iterdir():
            if folder.is_dir():
                found += [
                    p
                    for p in folder.iterdir()
                    if p.name.startswith((_STAGING, _TRASH, TEMP_PREFIX))
                ]
        return found

    # -- installed.json -----------------------------------------------------------------------

    def _state(self) -> _Installed:
        try:
            return _Installed.model_validate_json(self._state_file.read_bytes())
        except FileNotFoundError:
            return _Installed()
        except (OSError, ValidationError):
            return _Installed()  # rebuilt from the active links by recover()

    def _write_state(self, state: _Installed) -> None:
        atomic_write(self._state_file, state.model_dump_json(indent=2).encode())


def _check_plain(file: Path, item: ReleaseFile) -> str | None:
    """A file kept as downloaded: its size, then its sha256."""
    if file.stat().st_size != item.length:
        return f"has {file.stat().st_size} bytes, not {item.length}"
    if sha256_file(file) != item.sha256:
        return "does not match its sha256"
    return None


def _make_read_only(tree: Path) -> None:
    for root, dirs, files in os.walk(tree, topdown=False):
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(tree, 0o555)
