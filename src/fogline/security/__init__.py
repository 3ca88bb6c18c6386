"""Signing and verification: the controller's keys and its signed release repository.

Releases are a real TUF repository (python-tuf's Metadata API, Ed25519 keys
through securesystemslib); devices verify them with python-tuf's ``ngclient``
(:class:`fogline.fleet.ReleaseInstaller`). This package depends on
cryptography, securesystemslib and tuf only — never on the fleet, pipeline or
server that use it.
"""

from fogline.security._document import (
    DEFAULT_RELEASE_EXPIRY,
    KINDS,
    RELEASE_NAME_PATTERN,
    Canary,
    Health,
    ReleaseDocument,
    ReleaseFile,
    check_relative_path,
    check_release_name,
    parse_version,
    release_target_path,
)
from fogline.security._integrity import DOCUMENT, Damage, IntegrityCheck, ReleaseCheck
from fogline.security._keys import KeysInfo, RoleInfo, init_keys, rotate_key, show_keys
from fogline.security._metadata import EXPIRY, KEY_ROLES, RepositoryLayout
from fogline.security._repository import PublishedRelease, ReleaseRepository

__all__ = [
    "DEFAULT_RELEASE_EXPIRY",
    "DOCUMENT",
    "EXPIRY",
    "KEY_ROLES",
    "KINDS",
    "RELEASE_NAME_PATTERN",
    "Canary",
    "Damage",
    "Health",
    "IntegrityCheck",
    "KeysInfo",
    "PublishedRelease",
    "ReleaseCheck",
    "ReleaseDocument",
    "ReleaseFile",
    "ReleaseRepository",
    "RepositoryLayout",
    "RoleInfo",
    "check_relative_path",
    "check_release_name",
    "init_keys",
    "parse_version",
    "release_target_path",
    "rotate_key",
    "show_keys",
]
