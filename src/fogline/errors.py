"""The one error tree of fogline.

Every failure that a user can cause or fix is raised as a subclass of
:class:`FoglineError`. Errors from ONNX, ONNX Runtime, OpenVINO, LiteRT,
SQLite, MQTT, HTTP and the file system are caught at the boundary where they
happen and re-raised ``from`` the original as the most specific class below,
so a caller needs only ``except FoglineError`` and the CLI can print one line
and exit 2::

    FoglineError
    ├── ModelError                 a model file cannot be used
    │   ├── ModelFormatError       not a model, truncated, corrupt, unsafe
    │   └── BackendUnavailable     the engine asked for is not installed
    ├── SignatureMismatch          data does not fit the model's inputs
    ├── BatcherError               the micro-batcher did not compute an item
    │   ├── Overloaded             the queue is full and the policy is reject
    │   ├── Dropped                evicted from a full queue by a newer item
    │   ├── DeadlineExceeded       its deadline passed before its batch ran
    │   └── NotRunning             the batcher is not started, or is closed
    ├── DataError                  calibration / eval data cannot be read
    ├── ManifestError              a manifest is malformed or disagrees with its model
    ├── ConfigError                an option value is unknown or out of range
    │   ├── Conflict               valid, but not now: it conflicts with the current state
    │   └── PolicyError            the egress policy forbids it (a leak, a loosened fleet default)
    ├── Unauthorized               missing or wrong credentials (an operator or bearer token)
    ├── ModelNotFound              no such model or version (in the repository or loaded)
    ├── ModelNotReady              the model exists but is not loaded, or failed to load
    ├── ItemError                  one stream item cannot be used (corrupt frame, bad row)
    ├── TransportError             a message could not be sent (broker or endpoint down)
    │   ├── Unreachable            no connection: name, route or port; retrying may help
    │   ├── Refused                the other end said no (credentials, ACL); retrying will not
    │   ├── TimedOut               no answer in time (connect, PUBACK); retrying may help
    │   └── BadAnswer              an answer came, but not one the protocol allows
    ├── ReleaseRefused             a release failed verification (signature, hash, size, age, expiry)
    ├── KeyUnavailable             no key was given, or the one named cannot be read
    ├── WrongKey                   sealed or encrypted data did not open with this key (or was altered)
    ├── OptimizeError              no variant could be built or measured
    └── StoreError                 the results store cannot be opened, read or written
        ├── StoreFormatError       the file is not SQLite, or not a store this version reads
        └── OutboxFull             the outbox is at its limit and its policy is "reject"

An HTTP server answers an error with :func:`http_status`, the one mapping
from this tree to status codes (the inference server and the fleet API both
use it).
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BadAnswer",
    "BatcherError",
    "ConfigError",
    "Conflict",
    "DataError",
    "DeadlineExceeded",
    "Dropped",
    "FoglineError",
    "ItemError",
    "KeyUnavailable",
    "ManifestError",
    "ModelError",
    "ModelFormatError",
    "ModelNotFound",
    "ModelNotReady",
    "NotRunning",
    "OptimizeError",
    "OutboxFull",
    "Overloaded",
    "PolicyError",
    "Refused",
    "ReleaseRefused",
    "SignatureMismatch",
    "StoreError",
    "StoreFormatError",
    "TimedOut",
    "TransportError",
    "Unauthorized",
    "Unreachable",
    "WrongKey",
    "http_status",
]


class FoglineError(Exception):
    """Base of every error fogline raises on purpose."""


class ModelError(FoglineError):
    """A model file cannot be loaded or run."""


class ModelFormatError(ModelError):
    """The file is not a model, or is truncated, corrupt or unsafe to load."""


class BackendUnavailable(ModelError):
    """The engine that was asked for is not installed on this machine."""


class SignatureMismatch(FoglineError):
    """Inputs do not match the model's signature (names, dtypes, shapes)."""


class BatcherError(FoglineError):
    """The micro-batcher did not compute an item (it was refused, evicted or expired)."""


class Overloaded(BatcherError):
    """The batcher's queue is full and its overflow policy is ``reject``."""


class Dropped(BatcherError):
    """The item waited in a full queue and was evicted by a newer one (``drop-oldest``)."""


class DeadlineExceeded(BatcherError):
    """The item's deadline passed before its batch ran, so it was not computed."""


class NotRunning(BatcherError):
    """The batcher is not started yet, or was closed before the item ran."""


class DataError(FoglineError):
    """Calibration or evaluation data cannot be read or is inconsistent."""


class ManifestError(FoglineError):
    """A model manifest is malformed or does not match its model file."""


class ConfigError(FoglineError):
    """An option has a value that fogline does not accept."""


class Conflict(ConfigError):
    """The request is well formed but conflicts with the current state; HTTP 409.

    Starting a rollout of a release to a group where a deployment of it is
    still running, or rolling back a deployment that is already rolled back.
    Waiting (or acting on what is in the way) makes the same request succeed.
    A :class:`ConfigError`, so code that catches those catches this too.
    """


class PolicyError(ConfigError):
    """The egress policy (``privacy:``) forbids what a pipeline would do, or it is malformed.

    A sink or step that would send a field or a raw input the policy keeps on
    the device, or a device policy that loosens the fleet default; the message
    names the key. A :class:`ConfigError`: the CLI exits 2, an API answers 400.
    """


class Unauthorized(FoglineError):
    """The request carries no credentials, or the wrong ones (an operator or bearer token); 401."""


class ModelNotFound(FoglineError):
    """A request or command names a model or version that does not exist."""


class ModelNotReady(FoglineError):
    """The model exists but is not loaded (yet), or its last load failed."""


class ItemError(FoglineError):
    """One item of a stream cannot be used: a corrupt frame, a malformed row.

    The pipeline counts it, logs it with its ``position`` and goes on.
    """

    def __init__(self, message: str, position: str = "") -> None:
        super().__init__(f"{position}: {message}" if position else message)
        self.position = position


class TransportError(FoglineError):
    """A message could not be delivered: the broker or endpoint is down or refused it.

    Raised as one of the subclasses below where the cause is known, so a
    caller can tell the failures worth retrying from the one that is not.
    """


class Unreachable(TransportError):
    """No connection could be made: the host name does not resolve, or nothing answers.

    Raised when connecting to a broker or endpoint fails before it could say
    anything (DNS failure, connection refused at the TCP level, network
    down, TLS handshake cut off). Worth retrying: it may be back later.
    """


class Refused(TransportError):
    """The broker or endpoint answered and said no: retrying the same request cannot fix it.

    Raised for an MQTT CONNACK, PUBACK or SUBACK with a failure reason code
    (bad user name or password, not authorised by the ACL, topic name
    invalid, quota exceeded), or an endpoint that answers a request with a
    refusal. The credentials, the ACL or the request must change first.
    """


class TimedOut(TransportError):
    """A connect, a publish or a request got no answer in time.

    Raised when a CONNACK, a PUBACK or a reply outlives its timeout. Worth
    retrying: the message may or may not have arrived, so receivers dedupe.
    """


class BadAnswer(TransportError):
    """The other end answered, but not as the protocol says: malformed, or not what was asked.

    Raised by the Open Inference Protocol client for a body that is not the
    protocol's (not JSON, no ``outputs``), and for outputs whose names, dtypes
    or shapes differ from the remote model's own metadata. Not worth retrying
    as is: the remote end is misbehaving or is not what it claims to be.
    """


class ReleaseRefused(FoglineError):
    """A device refused a release: its metadata or files failed verification.

    A bad signature, a file whose hash or size differs from the signed
    metadata, a release older than the active one (a rollback attack), expired
    metadata (a freeze attack) or more bytes than the metadata allows (endless
    data). Not worth retrying as is; the active release stays untouched and the
    message says which check failed.
    """


class KeyUnavailable(FoglineError):
    """No key was given where one is needed, or the key named cannot be read.

    A device key file that is missing, not private (readable by others), not
    64 hex digits; a key command that failed; an encrypted store or sealed
    file opened with no key at all. The message names where the key was
    looked for and how to make one (``fogline keys device init``).
    """


class WrongKey(FoglineError):
    """Encrypted or sealed data did not open with the key given: another key, or altered bytes.

    Authenticated encryption cannot tell the two apart, and neither does this
    error; it never yields a half-read or empty replacement.
    """


class OptimizeError(FoglineError):
    """The optimizer could not build or measure any usable variant."""


class StoreError(FoglineError):
    """The results store cannot be opened, read or written (SQLite failed or it is closed)."""


class StoreFormatError(StoreError):
    """The file is not a SQLite database, or not a fogline store this version can read."""


class OutboxFull(StoreError):
    """The outbox holds its limit of pending messages and its policy is ``"reject"``."""


# Most specific first: the first class the error is an instance of decides. Unlisted errors
# are the server's own failure (500); a 4xx says the request can be changed to succeed.
_HTTP_STATUS: tuple[tuple[type[FoglineError], int], ...] = (
    (Conflict, 409),
    (ConfigError, 400),
    (SignatureMismatch, 400),
    (Unauthorized, 401),
    (ModelNotFound, 404),
    (ModelNotReady, 503),
    (Overloaded, 503),
    (DeadlineExceeded, 504),
)


def http_status(exc: BaseException) -> int:
    """The HTTP status code an HTTP server answers ``exc`` with: 4xx for the request, 5xx for us.

    The one mapping from the error tree to status codes: a subclass gets its
    own code where it has one, else its nearest listed ancestor's; anything
    else (a failed model, a broken store, an error that is not fogline's)
    is the server's failure, 500.

    >>> http_status(Conflict("deployment d-1 is still running"))
    409
    >>> http_status(ConfigError("max_batch_size must be >= 0"))
    400
    >>> http_status(ModelNotFound("no model named 'digits'")), http_status(Overloaded("full"))
    (404, 503)
    >>> http_status(StoreError("disk full")), http_status(KeyError("x"))
    (500, 500)
    """
    for kind, status in _HTTP_STATUS:
        if isinstance(exc, kind):
            return status
    return 500
