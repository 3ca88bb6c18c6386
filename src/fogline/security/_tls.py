"""TLS settings of a client: which CA to trust and which certificate to present.

:class:`ClientTls` is what an MQTT or HTTPS client of the fleet needs for
mutual TLS: a CA file (None: the system's trust store) and a client
certificate with its key (None: present none). It builds an
:class:`ssl.SSLContext` with host name checks on; only :mod:`ssl` is
needed, so a device can connect without ``cryptography`` loaded.
:meth:`ClientTls.from_env` reads ``FOGLINE_TLS_CA``, ``FOGLINE_TLS_CERT``
and ``FOGLINE_TLS_KEY``, for a pipeline's MQTT sink or a CLI command that
has no options of its own for them.

>>> ClientTls().context().verify_mode == ssl.CERT_REQUIRED
True
>>> ClientTls(cert=Path("device.pem"))
Traceback (most recent call last):
...
fogline.errors.ConfigError: a client certificate needs its key and a key its certificate (got cert device.pem, key None)
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fogline.errors import ConfigError, KeyUnavailable

CA_ENV, CERT_ENV, KEY_ENV = "FOGLINE_TLS_CA", "FOGLINE_TLS_CERT", "FOGLINE_TLS_KEY"


@dataclass(frozen=True)
class ClientTls:
    """A CA to trust (None: the system's) and a certificate to present (None: none)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError(
                "a client certificate needs its key and a key its certificate "
                f"(got cert {self.cert}, key {self.key})"
            )

    @property
    def presents_certificate(self) -> bool:
        return self.cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTls | None:
        """The settings in ``FOGLINE_TLS_CA/CERT/KEY``, or None when none is set."""
        env = os.environ if environ is None else environ
        values = [env.get(name) or None for name in (CA_ENV, CERT_ENV, KEY_ENV)]
        if not any(values):
            return None
        ca, cert, key = (Path(v) if v else None for v in values)
        return cls(ca, cert, key)

    def context(self) -> ssl.SSLContext:
        """A client context: verify the server (host name too), present the certificate if any."""
        try:
            context = ssl.create_default_context(cafile=None if self.ca is None else str(self.ca))
        except FileNotFoundError:
            raise ConfigError(f"TLS CA file {self.ca} does not exist") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS CA file {self.ca}: not a PEM certificate ({exc})") from exc
        if self.cert is not None and self.key is not None:
            try:
                context.load_cert_chain(str(self.cert), str(self.key))
            except FileNotFoundError as exc:
                raise KeyUnavailable(
                    f"TLS client certificate or key missing ({exc.filename}): "
                    "enrol the device again or issue one with 'fogline ca issue'"
                ) from None
            except (OSError, ssl.SSLError) as exc:
                raise KeyUnavailable(
                    f"TLS client certificate {self.cert} with key {self.key}: {exc}"
                ) from exc
        return context
