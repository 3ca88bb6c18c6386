"""The key a pipeline's store is encrypted with (``store: {encrypt: true}``), found before it runs.

The key comes from a :class:`~fogline.security.KeySource`: ``fogline run
--device-key FILE``, else the environment (``$FOGLINE_DEVICE_KEY_FILE``, which
the agent gives the pipelines it runs, ``$FOGLINE_DEVICE_KEY``, or
``$FOGLINE_DEVICE_KEY_COMMAND`` for a TPM or a secrets manager). It is looked
for, and tried on a store that is already there, by :func:`~fogline.pipeline.plan`,
so ``fogline check`` says what is wrong (no key, another key, a plain store
that must be encrypted first) naming ``store.encrypt`` before anything starts.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from fogline.errors import ConfigError, FoglineError, KeyUnavailable
from fogline.store import is_encrypted, open_connection

if TYPE_CHECKING:
    from fogline.pipeline._spec import PipelineSpec
    from fogline.security import DeviceKey, KeySource


def store_key(spec: PipelineSpec, keys: KeySource | None = None) -> DeviceKey | None:
    """The device key for ``spec``'s store, ``None`` for a plain one; checked against the file."""
    store = spec.store
    if store is False:
        return None
    if not store.encrypt:
        if is_encrypted(store.path):
            raise ConfigError(
                f"store.encrypt: {store.path} is encrypted; set `store: {{encrypt: true}}` "
                "and give the device key"
            )
        return None
    from fogline.security import KeySource

    try:
        key = (keys or KeySource()).load()
    except KeyUnavailable as exc:
        raise KeyUnavailable(f"store.encrypt: {exc}") from exc
    if store.path.exists():  # a store from an earlier run: it must open with this key
        try:
            with contextlib.closing(open_connection(store.path, key=key, what="store")):
                pass
        except FoglineError as exc:
            raise type(exc)(f"store.encrypt: {exc}") from exc
    return key
