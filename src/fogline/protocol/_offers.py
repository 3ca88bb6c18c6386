"""A device offers a fine-tuned model to the controller: chunks up, a retained answer down.

Two more topics under each device's ``{prefix}/devices/{device_id}/``, so the
pattern ACL lets a device write only its own offers and read only its own
answers:

=============  ==========  =====  ========  ==============================================
topic          direction   QoS    retained  body
=============  ==========  =====  ========  ==============================================
``offer``      device      1      no        frame: :class:`OfferChunk` + a piece of the tar
``offer-ack``  controller  1      yes       :class:`OfferAck`: stored chunks, or the outcome
=============  ==========  =====  ========  ==============================================

The body of an offer is a ``.tar`` of the candidate's model folder
(``model.onnx``, ``fogline.yaml``, ``report.json``); its whole ``size`` and
``sha256`` ride on every chunk (frames as :func:`~fogline.protocol.encode_frame`
makes them), and the device's gate report on the first. The controller
stores a chunk before it acknowledges it; an offer is whole when every chunk
is stored and the whole matches its hash.

>>> chunk = OfferChunk(device_id="cam-1", offer="a1b2", release="digits", base_version="1.0.0",
...                    size=3, sha256="0" * 64)
>>> from fogline.protocol import decode_frame, encode_frame
>>> decode_frame(encode_frame(chunk, b"tar"), OfferChunk)[0].release
'digits'
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fogline.protocol._fleet import DEVICE_ID_PATTERN, DeviceId

__all__ = ["OFFER_TOPIC_KINDS", "OfferAck", "OfferChunk"]

#: The device topics of an offer (see the module docstring).
OFFER_TOPIC_KINDS = ("offer", "offer-ack")


class OfferChunk(BaseModel):
    """One piece of a device's offer of a fine-tuned candidate of release ``release``.

    ``base_version`` is the release version it was fine-tuned from;
    ``model_path`` the model folder inside that release (``.`` for a model
    release); ``report`` the device's ``report.json`` (on chunk 0);
    ``canary`` the rollout criteria the device's ``finetune:`` section asks for.

    Every chunk but the last carries :attr:`chunk_bytes` of the tar, so
    ``total`` is the size divided by it, rounded up (at least 1); a
    ``model_path`` is ``.`` or a relative path without ``..``:

    >>> from pydantic import ValidationError
    >>> try:
    ...     OfferChunk(device_id="cam-1", offer="a1b2", release="digits", base_version="1.0.0",
    ...                size=3, sha256="0" * 64, model_path="../etc")
    ... except ValidationError as exc:
    ...     print(exc.errors()[0]["msg"])
    Value error, model_path '../etc' must be '.' or a relative path using '/' with no '..', '.' or empty parts
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: The bytes of the tar each chunk carries (the last one the rest).
    chunk_bytes: ClassVar[int] = 64 * 1024

    device_id: DeviceId
    offer: str = Field(pattern=r"^[0-9a-f]{4,32}$")
    release: str = Field(pattern=DEVICE_ID_PATTERN)
    base_version: str = Field(min_length=1, max_length=64)
    model_path: str = Field(default=".", max_length=200)
    index: int = Field(default=0, ge=0)
    total: int = Field(default=1, ge=1, le=10_000)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    report: dict[str, Any] | None = None
    canary_min_accuracy: float | None = Field(default=None, ge=0, le=1)
    canary_bake: float = Field(default=30.0, ge=0)
    max_forgetting: float = Field(default=0.01, ge=-1, le=1)

    @field_validator("model_path")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = value.split("/")
        if value != "." and (
            "\\" in value or "\x00" in value or any(part in ("", ".", "..") for part in parts)
        ):
            raise ValueError(
                f"model_path {value!r} must be '.' or a relative path using '/' with no '..', "
                "'.' or empty parts"
            )
        return value

    @model_validator(mode="after")
    def _fits(self) -> OfferChunk:
        chunks = max(1, -(-self.size // self.chunk_bytes))
        if self.total != chunks:
            raise ValueError(
                f"an offer of {self.size} bytes comes in {chunks} chunks of at most "
                f"{self.chunk_bytes} bytes, not {self.total}"
            )
        if self.index >= self.total:
            raise ValueError(f"chunk {self.index} of an offer of {self.total} chunks")
        return self

    def chunk_length(self) -> int:
        """The bytes chunk ``index`` must carry.

        >>> OfferChunk(device_id="cam-1", offer="a1b2", release="digits", base_version="1",
        ...            size=70000, total=2, index=1, sha256="0" * 64).chunk_length()
        4464
        """
        return min(self.chunk_bytes, self.size - self.index * self.chunk_bytes)


class OfferAck(BaseModel):
    """The controller's answer to an offer, retained on the device's ``offer-ack``.

    ``status``: ``partial`` (``received`` lists the stored chunks), ``checking``
    (whole; being re-checked), ``accepted`` (signed as ``version``, deployed as
    ``deployment``), ``refused`` (``reason`` says why; do not resend).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    offer: str
    status: Literal["partial", "checking", "accepted", "refused"]
    received: list[int] = Field(default_factory=list)
    reason: str | None = None
    version: str | None = None
    deployment: str | None = None
