"""The release document: what one signed release holds and how a device should run it.

A release is a TUF target ``releases/<name>/<version>.json`` holding this
document, plus one content-addressed target ``blobs/<sha256>`` per file. The
document names every file of the release with its length and sha256, so a
device that trusts the document (its hash is in signed ``targets.json``)
trusts each file it downloads by hash, before it is parsed.

>>> doc = ReleaseDocument(
...     name="digits", version="1.0.0", kind="model", entry="model.onnx",
...     files=[ReleaseFile(path="model.onnx", length=3, sha256="0" * 64)],
...     expires=datetime(2100, 1, 1, tzinfo=timezone.utc),
... )
>>> doc.target_path, doc.total_length, doc.is_expired()
('releases/digits/1.0.0.json', 3, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from fogline._names import NAME_PATTERN, check_name

#: What a release name may be; the same rule as a device id in :mod:`fogline.fleet`
#: (a topic level and a path component).
RELEASE_NAME_PATTERN = NAME_PATTERN  # the rule device ids follow too (fogline._names)
#: How long a release document is valid by default.
DEFAULT_RELEASE_EXPIRY = timedelta(days=365)

Kind = Literal["model", "pipeline", "serve", "learner"]
#: The kinds of release an agent knows how to run (its ``kinds/`` has one module per name).
KINDS: tuple[Kind, ...] = get_args(Kind)
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

PIPELINE_FILE = "pipeline.yaml"
LEARNER_FILE = "learner.yaml"  # what a device trains in federated rounds (fleet.agent.kinds)
MANIFEST_FILE = "fogline.yaml"  # the model manifest (fogline.model), read by the agent
MODEL_SUFFIXES = (".onnx", ".tflite")


@dataclass(frozen=True)
class KindContents:
    """What the files of a release of one kind look like, so its kind and entry can be told.

    ``top_entry``: a file at the top of the release that is its entry;
    ``repository``: Triton's layout (``<model>/<numeric version>/<files>``), entry ``.``;
    ``manifest``: a file at the top that makes the whole folder the entry (``.``);
    ``suffixes``: an entry file named so is of this kind, and with ``single`` a release
    holding exactly one such file is of this kind with that file as its entry.

    >>> CONTENTS["model"].suffixes
    ('.onnx', '.tflite')
    """

    top_entry: str | None = None
    repository: bool = False
    manifest: str | None = None
    suffixes: tuple[str, ...] = ()
    single: bool = False


#: What a release of each kind contains, in the order a folder is recognised (the first
#: that fits wins): a pipeline file, then a model repository, then a model.
CONTENTS: Mapping[Kind, KindContents] = {
    "pipeline": KindContents(top_entry=PIPELINE_FILE, suffixes=(".yaml", ".yml")),
    "learner": KindContents(top_entry=LEARNER_FILE, suffixes=(".yaml", ".yml")),
    "serve": KindContents(repository=True),
    "model": KindContents(manifest=MANIFEST_FILE, suffixes=MODEL_SUFFIXES, single=True),
}
#: The kind of a release whose entry is a folder that fits no other (its manifest may be deeper).
FOLDER_KIND: Kind = "model"


def check_release_name(name: str) -> str:
    """Return ``name`` or raise ``ValueError`` saying what a release name may be.

    >>> check_release_name("digits/2")
    Traceback (most recent call last):
    ...
    ValueError: release name 'digits/2' must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit
    """
    return check_name(name, "release name")


def parse_version(text: str) -> Version:
    """A PEP 440 version, or ``ValueError`` naming the bad text.

    >>> str(parse_version("v1.2")), parse_version("1.10") > parse_version("1.9")
    ('1.2', True)
    """
    try:
        return Version(text)
    except InvalidVersion:
        raise ValueError(f"version {text!r} is not a PEP 440 version (e.g. 1.2.0)") from None


def check_relative_path(path: str, what: str = "path") -> str:
    """Return a relative POSIX path that stays inside its folder, or raise ``ValueError``.

    >>> check_relative_path("models/a.onnx")
    'models/a.onnx'
    >>> check_relative_path("../etc/passwd")
    Traceback (most recent call last):
    ...
    ValueError: path '../etc/passwd' must be relative, use '/', and contain no '..' or empty parts
    """
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(
            f"{what} {path!r} must be relative, use '/', and contain no '..' or empty parts"
        )
    return path


class _Model(BaseModel):
    # Documents come from a newer controller too: unknown keys are ignored, not fatal.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReleaseFile(_Model):
    """One file of a release: where it goes in the release folder, its size and hash."""

    path: str
    length: int = Field(ge=0)
    sha256: Sha256
    #: In an encrypted release, ``length`` and ``sha256`` are the ciphertext's (what is stored
    #: and downloaded) and this is the plain file's, checked after decryption and at rest.
    plain_sha256: Sha256 | None = None

    @property
    def content_sha256(self) -> str:
        """The sha256 of the file as it runs: the plain one (encrypted release) or ``sha256``."""
        return self.plain_sha256 or self.sha256

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return check_relative_path(value, "file path")

    @property
    def blob_path(self) -> str:
        """The content-addressed target that holds this file."""
        return f"blobs/{self.sha256}"


class Health(_Model):
    """How an agent checks a staged release before it swaps to it."""

    latency_budget_ms: float | None = Field(default=None, gt=0)
    sample: str | None = None  # relative .npz with sample inputs

    @field_validator("sample")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value, "health sample")


class Canary(_Model):
    """Labelled data a rollout may use to measure accuracy on the canary devices."""

    data: str | None = None  # relative .npz with inputs ``x`` and labels ``y``

    @field_validator("data")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value, "canary data")


class Encryption(_Model):
    """How an encrypted release's files are sealed: the cipher and where its wrapped keys are."""

    cipher: Literal["AES-256-GCM"] = "AES-256-GCM"
    keys: str  # the target holding the wrapped data keys (keys/<name>/<version>.json)

    @field_validator("keys")
    @classmethod
    def _relative(cls, value: str) -> str:
        return check_relative_path(value, "keys document")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class ReleaseDocument(_Model):
    """The signed description of one release (see the module docstring)."""

    name: str
    version: str
    created: datetime = Field(default_factory=_now)
    expires: datetime = Field(default_factory=lambda: _now() + DEFAULT_RELEASE_EXPIRY)
    kind: Kind
    entry: str
    files: list[ReleaseFile] = Field(min_length=1)
    health: Health = Field(default_factory=Health)
    canary: Canary = Field(default_factory=Canary)
    description: str = ""
    #: Where the release came from, signed with it: for a federated model the strategy,
    #: rounds, participants per round, secure aggregation and privacy (ε, δ).
    provenance: dict[str, Any] | None = None
    #: Set when the files are encrypted for the enrolled devices (envelope encryption).
    encryption: Encryption | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_release_name(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return str(parse_version(value))

    @field_validator("created", "expires")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    @field_validator("entry")
    @classmethod
    def _entry(cls, value: str) -> str:
        return value if value == "." else check_relative_path(value, "entry")

    @field_validator("files")
    @classmethod
    def _unique(cls, files: list[ReleaseFile]) -> list[ReleaseFile]:
        seen: set[str] = set()
        for item in files:
            if item.path in seen:
                raise ValueError(f"file {item.path!r} is listed twice")
            seen.add(item.path)
        paths = seen
        for item in files:  # 'a' cannot be a file and a folder ('a/b') at once
            for parent in PurePosixPath(item.path).parents:
                if str(parent) in paths:
                    raise ValueError(f"{str(parent)!r} is both a file and a folder")
        return files

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)

    @property
    def target_path(self) -> str:
        """Where this document is in the TUF repository's targets."""
        return release_target_path(self.name, self.version)

    @property
    def total_length(self) -> int:
        return sum(item.length for item in self.files)

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(timezone.utc)) >= self.expires


def release_target_path(name: str, version: str) -> str:
    """``releases/<name>/<version>.json``, the target that holds a release document."""
    return f"releases/{check_release_name(name)}/{parse_version(version)}.json"
