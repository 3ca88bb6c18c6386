"""``fogline keys device seal MODEL``: seal a model file with a device key, as the agent keeps them.

The file is replaced by its sealed form (AES-256-GCM under the device key's
``model`` sub-key), atomically; ``fogline run`` / ``fogline serve`` open it
in memory with ``--device-key`` or ``$FOGLINE_DEVICE_KEY_FILE``. There is no
``unseal``: writing the plain model back to disk is what sealing prevents
(keep the original where it was made).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fogline.cli._app import console
from fogline.cli._keys_device import device
from fogline.cli._options import device_key_option, load_device_key
from fogline.errors import ConfigError


@device.command("seal")
def seal(
    models: list[Path] = typer.Argument(..., help="Model files (.onnx, .tflite, .xml, .bin)."),
    device_key: Path | None = device_key_option(
        "The device key file (default: $FOGLINE_DEVICE_KEY_FILE)."
    ),
) -> None:
    """Replace each MODEL with its sealed form: it then runs only where the device key is."""
    from fogline._files import atomic_write
    from fogline.security import is_model_file, is_sealed, seal_model

    key = load_device_key(device_key)
    for model in models:
        if not is_model_file(model):
            raise ConfigError(f"{model}: not a model file (.onnx, .tflite, .xml or .bin)")
        try:
            data = model.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{model}: cannot read it: {exc.strerror or exc}") from exc
        if is_sealed(data):
            raise ConfigError(f"{model} is already sealed")
        atomic_write(model, seal_model(data, key), mode=0o600)
        console.print(
            f"{escape(str(model))}: sealed with device key {key.fingerprint()} "
            f"({len(data):,} bytes)",
            highlight=False,
        )
