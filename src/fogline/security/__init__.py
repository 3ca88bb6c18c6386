"""Signing and verification, device keys and sealing: the controller's keys, its signed releases.

Releases are a real TUF repository (python-tuf's Metadata API, Ed25519 keys
through securesystemslib); devices verify them with python-tuf's ``ngclient``
(:class:`fogline.fleet.ReleaseInstaller`). A device's own key and the data
sealed with it (:mod:`._sealing`) need only ``cryptography``. This package
depends on cryptography, securesystemslib and tuf only — never on the fleet,
pipeline or server that use it — and loads each of them when a name that
needs it is first used, so the store can import it on a device without tuf.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fogline.security._audit import CHECKPOINT_EVENT, GENESIS, AuditLog, line_hash
    from fogline.security._audit_signing import (
        SENT_CHECKPOINT,
        AuditSigner,
        Checkpoint,
        keep_sent_checkpoint,
        key_fingerprint,
        load_public_key,
        read_checkpoint,
    )
    from fogline.security._audit_verify import AuditDamage, AuditReport, verify_log
    from fogline.security._ca import (
        CA_CERT,
        CONTROLLER_CERT,
        CONTROLLER_KEY,
        CONTROLLER_NAME,
        SERVER_CERT,
        SERVER_KEY,
        CertificateAuthority,
        IssuedCertificate,
        certificate_info,
        certificate_request,
        check_certificate_request,
        import_ca,
        init_ca,
        issue_certificate,
        issue_fleet_certificates,
        issue_server_certificate,
    )
    from fogline.security._document import (
        DEFAULT_RELEASE_EXPIRY,
        KINDS,
        RELEASE_NAME_PATTERN,
        Canary,
        Encryption,
        Health,
        ReleaseDocument,
        ReleaseFile,
        check_relative_path,
        check_release_name,
        parse_version,
        release_target_path,
    )
    from fogline.security._envelope import (
        KeysDocument,
        decrypt_file,
        encrypt_file,
        keys_target_path,
        new_data_key,
        parse_public_key,
        public_bytes,
    )
    from fogline.security._integrity import DOCUMENT, Damage, IntegrityCheck, ReleaseCheck
    from fogline.security._keys import KeysInfo, RoleInfo, init_keys, rotate_key, show_keys
    from fogline.security._metadata import EXPIRY, KEY_ROLES, RepositoryLayout
    from fogline.security._model_files import (
        MODEL_FILE_SUFFIXES,
        SealedFiles,
        is_model_file,
        seal_model,
        unseal_model,
    )
    from fogline.security._policy import (
        DESTINATIONS,
        FLEET_POLICY_ENV,
        NO_RESULT_FIELDS,
        RAW_LEVELS,
        FieldHasher,
        FieldRules,
        PrivacyPolicy,
        device_hasher,
        fleet_policy_from_env,
        loosenings,
        merge_fleet,
        parse_policy,
        policy_json,
        read_policy,
        stricter,
    )
    from fogline.security._repository import Envelope, PublishedRelease, ReleaseRepository
    from fogline.security._sealing import (
        CAPTURES_PURPOSE,
        KEY_COMMAND_ENV,
        KEY_ENV,
        KEY_FILE_ENV,
        SEAL_MAGIC,
        DeviceKey,
        KeySource,
        init_device_key,
        is_sealed,
        read_key_file,
        seal,
        unseal,
    )
    from fogline.security._tls import ClientTls

#: Which private module defines each public name (imported on first use: PEP 562).
_WHERE = {
    "_audit": ("CHECKPOINT_EVENT", "GENESIS", "AuditLog", "line_hash"),
    "_audit_signing": (
        "SENT_CHECKPOINT",
        "AuditSigner",
        "SENT_CHECKPOINT",
        "Checkpoint",
        "keep_sent_checkpoint",
        "key_fingerprint",
        "keep_sent_checkpoint",
        "load_public_key",
        "read_checkpoint",
        "read_checkpoint",
    ),
    "_audit_verify": ("AuditDamage", "AuditReport", "verify_log"),
    "_ca": (
        "CA_CERT",
        "CONTROLLER_CERT",
        "CONTROLLER_KEY",
        "CONTROLLER_NAME",
        "SERVER_CERT",
        "SERVER_KEY",
        "CertificateAuthority",
        "IssuedCertificate",
        "certificate_info",
        "certificate_request",
        "check_certificate_request",
        "import_ca",
        "init_ca",
        "issue_certificate",
        "issue_fleet_certificates",
        "issue_server_certificate",
    ),
    "_document": (
        "DEFAULT_RELEASE_EXPIRY",
        "KINDS",
        "RELEASE_NAME_PATTERN",
        "Canary",
        "Encryption",
        "Health",
        "ReleaseDocument",
        "ReleaseFile",
        "check_relative_path",
        "check_release_name",
        "parse_version",
        "release_target_path",
    ),
    "_envelope": (
        "KeysDocument",
        "decrypt_file",
        "encrypt_file",
        "keys_target_path",
        "new_data_key",
        "parse_public_key",
        "public_bytes",
    ),
    "_integrity": ("DOCUMENT", "Damage", "IntegrityCheck", "ReleaseCheck"),
    "_keys": ("KeysInfo", "RoleInfo", "init_keys", "rotate_key", "show_keys"),
    "_metadata": ("EXPIRY", "KEY_ROLES", "RepositoryLayout"),
    "_policy": (
        "DESTINATIONS",
        "FLEET_POLICY_ENV",
        "NO_RESULT_FIELDS",
        "RAW_LEVELS",
        "FieldHasher",
        "FieldRules",
        "PrivacyPolicy",
        "device_hasher",
        "fleet_policy_from_env",
        "loosenings",
        "merge_fleet",
        "parse_policy",
        "policy_json",
        "read_policy",
        "stricter",
    ),
    "_model_files": (
        "MODEL_FILE_SUFFIXES",
        "SealedFiles",
        "is_model_file",
        "seal_model",
        "unseal_model",
    ),
    "_repository": ("Envelope", "PublishedRelease", "ReleaseRepository"),
    "_sealing": (
        "CAPTURES_PURPOSE",
        "KEY_COMMAND_ENV",
        "KEY_ENV",
        "KEY_FILE_ENV",
        "SEAL_MAGIC",
        "DeviceKey",
        "KeySource",
        "init_device_key",
        "is_sealed",
        "read_key_file",
        "seal",
        "unseal",
    ),
    "_tls": ("ClientTls",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "CAPTURES_PURPOSE",
    "CA_CERT",
    "CHECKPOINT_EVENT",
    "CONTROLLER_CERT",
    "CONTROLLER_KEY",
    "CONTROLLER_NAME",
    "DEFAULT_RELEASE_EXPIRY",
    "DESTINATIONS",
    "DOCUMENT",
    "EXPIRY",
    "FLEET_POLICY_ENV",
    "GENESIS",
    "KEY_COMMAND_ENV",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "KEY_ROLES",
    "KINDS",
    "MODEL_FILE_SUFFIXES",
    "NO_RESULT_FIELDS",
    "RAW_LEVELS",
    "RELEASE_NAME_PATTERN",
    "SEAL_MAGIC",
    "SENT_CHECKPOINT",
    "SERVER_CERT",
    "SERVER_KEY",
    "AuditDamage",
    "AuditLog",
    "AuditReport",
    "AuditSigner",
    "Canary",
    "CertificateAuthority",
    "Checkpoint",
    "ClientTls",
    "Damage",
    "DeviceKey",
    "Encryption",
    "Envelope",
    "FieldHasher",
    "FieldRules",
    "Health",
    "IntegrityCheck",
    "IssuedCertificate",
    "KeySource",
    "KeysDocument",
    "KeysInfo",
    "PrivacyPolicy",
    "PublishedRelease",
    "ReleaseCheck",
    "ReleaseDocument",
    "ReleaseFile",
    "ReleaseRepository",
    "RepositoryLayout",
    "RoleInfo",
    "SealedFiles",
    "certificate_info",
    "certificate_request",
    "check_certificate_request",
    "check_relative_path",
    "check_release_name",
    "decrypt_file",
    "device_hasher",
    "encrypt_file",
    "fleet_policy_from_env",
    "import_ca",
    "init_ca",
    "init_device_key",
    "init_keys",
    "is_model_file",
    "is_sealed",
    "issue_certificate",
    "issue_fleet_certificates",
    "issue_server_certificate",
    "keep_sent_checkpoint",
    "key_fingerprint",
    "keys_target_path",
    "line_hash",
    "load_public_key",
    "loosenings",
    "merge_fleet",
    "new_data_key",
    "parse_policy",
    "parse_public_key",
    "parse_version",
    "policy_json",
    "public_bytes",
    "read_checkpoint",
    "read_key_file",
    "read_policy",
    "release_target_path",
    "rotate_key",
    "seal",
    "seal_model",
    "show_keys",
    "stricter",
    "unseal",
    "unseal_model",
    "verify_log",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fogline.security' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fogline.security.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
