"""Fine-tuning a model on captured hard examples, behind a gate (``fogline learn finetune``).

:func:`finetune` takes a model folder (``model.onnx`` and its ``fogline.yaml``),
labelled data the device captured, a held-out labelled set of the new data
and the original evaluation data. It makes a candidate:

* ``layers="last"`` (no PyTorch needed): the last linear layer is re-fitted
  as a softmax head on the model's own features (:mod:`._head`);
* ``layers="all"``: the whole network is trained from its PyTorch source
  (``torch_source``, a ``module:function``) and exported to ONNX
  (:mod:`._finetune_torch`).

Then :func:`~fogline.monitor.run_gate` runs both models in ONNX Runtime. The
output folder appears whole or not at all (it is built beside ``out`` and
renamed): when the candidate passes it is a model folder (``model.onnx``,
``fogline.yaml`` with the next version and the provenance) with
``report.json`` and ``report.md``; when it fails, the folder holds the
reports only, so nothing in it can be released or run by mistake.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from fogline.data import Arrays, Dataset, load_dataset
from fogline.errors import ConfigError, DataError, ManifestError
from fogline.model import MANIFEST_NAME, Manifest, ModelReader, open_model, sha256_file
from fogline.monitor._finetune_report import write_reports
from fogline.monitor._finetune_torch import finetune_torch
from fogline.monitor._gate import GateOptions, GateVerdict, run_gate
from fogline.monitor._head import find_head, fit_head, head_features, with_head

__all__ = ["LAYERS", "FinetuneOptions", "FinetuneResult", "finetune", "next_version"]

#: Which layers :func:`finetune` trains.
LAYERS = ("last", "all")

#: ``progress(epoch, epochs, mean loss, training accuracy)`` after each epoch.
Progress = Callable[[int, int, float, float], None]

Labelled = tuple[Dataset, npt.NDArray[np.int64]]


@dataclass(frozen=True)
class FinetuneOptions:
    """How to train the candidate (``learning_rate`` None: 0.01 for the head, 0.001 for all).

    >>> FinetuneOptions(layers="all", torch_source="my.nets:trained").learning_rate_for()
    0.001
    >>> FinetuneOptions(layers="some")
    Traceback (most recent call last):
    fogline.errors.ConfigError: layers: 'some' is not one of last, all
    """

    layers: str = "last"
    epochs: int = 20
    learning_rate: float | None = None
    l2: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    torch_source: str | None = None
    #: CPU threads for training and for running the models (None: the libraries' default,
    #: every core); on a device the pipeline keeps running beside it.
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.layers not in LAYERS:
            raise ConfigError(f"layers: {self.layers!r} is not one of {', '.join(LAYERS)}")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}: a positive integer, not {value!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigError(f"threads: a positive integer, not {self.threads!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"learning_rate: a positive number, not {self.learning_rate!r}")
        if not self.l2 >= 0:
            raise ConfigError(f"l2: zero or a positive number, not {self.l2!r}")
        if self.layers == "all" and not self.torch_source:
            raise ConfigError(
                "layers 'all' trains the whole network from its PyTorch source: give "
                "--from-torch module:function (the module the ONNX model was exported from), "
                "or re-fit the last layer only with --layers last"
            )

    def learning_rate_for(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.01 if self.layers == "last" else 0.001


@dataclass(frozen=True)
class FinetuneResult:
    """The output folder, the gate's verdict and the report written as ``report.json``."""

    folder: Path
    verdict: GateVerdict
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.verdict.passed


def finetune(
    model_dir: str | Path,
    data: str | Arrays,
    holdout: str | Arrays,
    out: str | Path,
    *,
    original: str | None = None,
    replay: str | Arrays | None = None,
    options: FinetuneOptions | None = None,
    gate: GateOptions | None = None,
    progress: Progress | None = None,
    read: ModelReader | None = None,
) -> FinetuneResult:
    """Fine-tune ``model_dir`` on ``data``, gate it on ``holdout`` and ``original``, write ``out``.

    ``data``, ``holdout`` and ``original`` are data specs
    (:func:`fogline.data.load_dataset`: an ``.npz``, an image folder or a
    ``module:function``) or :class:`~fogline.data.Arrays` (opened in memory),
    all with labels. Without ``original`` the data the
    model was gated on before (its manifest's provenance) or its release's
    canary set is used; with none of those, a :class:`ConfigError`.
    ``replay`` is labelled data of the kind the model was trained on, mixed
    into the training set so that the candidate keeps what it knew
    (rehearsal); the gate's forgetting check is what says whether it did.
    ``read`` opens a sealed model file in memory (a device's release).
    """
    options = options or FinetuneOptions()
    gate = gate or GateOptions()
    model_dir, out = Path(model_dir), Path(out)
    if out.exists():
        raise ConfigError(f"{out}: already exists; give a new --out folder or remove it")
    base = _read_base(model_dir, read)
    captured = _labelled(data, "--data", base)
    replayed = None if replay is None else _labelled(replay, "--replay", base)
    train = captured if replayed is None else _joined(captured, replayed)
    held = _labelled(holdout, "--eval", base)
    if len(held[1]) < gate.min_items:
        raise ConfigError(
            f"--eval {holdout}: {len(held[1])} held-out item(s); the gate's gain needs at least "
            f"{gate.min_items} to mean anything (one item in {gate.min_items} is "
            f"{100 / gate.min_items:.0f} points): label more captures"
        )
    original_spec, old = _original(original, model_dir, base)
    started = time.monotonic()
    history: list[dict[str, float]] = []

    def record(epoch: int, epochs: int, loss: float, acc: float) -> None:
        history.append({"epoch": epoch, "loss": loss, "accuracy": acc})
        if progress is not None:
            progress(epoch, epochs, loss, acc)

    with _building(out) as build:
        model_file = build / base.model.path
        method = _train(model_dir, base, train, model_file, options, record, read)
        version = next_version(base.version)
        verdict = run_gate(
            model_dir, model_file, held, old, gate, threads=options.threads, read=read
        )
        report: dict[str, Any] = {
            "passed": verdict.passed,
            "gate": verdict.to_dict(),
            "current": {
                "name": base.name,
                "version": base.version,
                "sha256": base.model.sha256,
                "folder": str(model_dir),
            },
            "candidate": {"name": base.name, "version": version} if verdict.passed else None,
            "training": {
                "method": method,
                **asdict(options),
                "learning_rate": options.learning_rate_for(),
                "history": history,
                "seconds": round(time.monotonic() - started, 3),
            },
            "data": _describe(data, captured),
            "replay": None if replay is None or replayed is None else _describe(replay, replayed),
            "holdout": _describe(holdout, held),
            "original": _describe(original_spec, old),
        }
        if verdict.passed:
            manifest = _candidate_manifest(base, model_file, version, report)
            manifest.write(build)
            report["candidate"]["sha256"] = manifest.model.sha256
        else:
            model_file.unlink()
        write_reports(build, report)
    return FinetuneResult(out, verdict, report)


def next_version(version: str) -> str:
    """The candidate's version: the second number of ``version`` raised by one.

    >>> next_version("1"), next_version("1.0.0"), next_version("2.3.1"), next_version("beta")
    ('1.1', '1.1.0', '2.4.0', 'beta-finetuned')
    """
    from packaging.version import InvalidVersion, Version

    try:
        parts = list(Version(version).release)
    except InvalidVersion:
        return f"{version}-finetuned"
    parts += [0] * (2 - len(parts))
    parts[1] += 1
    parts[2:] = [0] * (len(parts) - 2)
    return ".".join(str(p) for p in parts)


# -- steps ---------------------------------------------------------------------------------


def _read_base(model_dir: Path, read: ModelReader | None = None) -> Manifest:
    if not (model_dir / MANIFEST_NAME).is_file():
        raise ConfigError(
            f"{model_dir}: not a model folder (no {MANIFEST_NAME}); fine-tuning takes the folder "
            "of a model with its manifest, as `fogline optimize` or a release writes it"
        )
    base = Manifest.read(model_dir)
    base.verify(model_dir, data=_plain(model_dir / base.model.path, read))
    if Path(base.model.path).suffix.lower() != ".onnx":
        raise ManifestError(f"{model_dir}: fine-tuning needs an ONNX model, not {base.model.path}")
    return base


def _labelled(spec: str | Arrays, option: str, base: Manifest) -> Labelled:
    """Read a data spec for the model; its labels as class indices."""
    try:
        data = load_dataset(spec, base.signature(), batch_size=256)
    except DataError as exc:
        raise DataError(f"{option} {exc}") from exc
    if data.labels is None:
        raise DataError(
            f"{option} {spec}: holds no labels; fine-tuning and the gate need the true class of "
            "each item (an .npz with a 'labels' array, as `fogline capture export` writes it)"
        )
    return data, _class_indices(data.labels, base, f"{option} {spec}")


def _class_indices(labels: np.ndarray, base: Manifest, where: str) -> npt.NDArray[np.int64]:
    """Integer class indices; string labels are looked up in the manifest's ``labels``."""
    last = base.outputs[0].shape[-1] if base.outputs[0].shape else None
    classes = len(base.labels) or (last if isinstance(last, int) else None)
    if labels.dtype.kind in "US" or labels.dtype == object:
        index = {name: i for i, name in enumerate(base.labels)}
        unknown = sorted({str(v) for v in labels if str(v) not in index})
        if unknown:
            raise DataError(
                f"{where}: labels {unknown[:5]} are not among the model's labels {base.labels[:10]}"
            )
        return np.array([index[str(v)] for v in labels], np.int64)
    whole = labels.dtype.kind in "iu" or (
        labels.dtype.kind == "f" and bool(np.all(labels == np.round(labels)))
    )
    if not whole:
        raise DataError(f"{where}: labels are class numbers or names, not {labels.dtype}")
    values = labels.astype(np.int64).reshape(-1)
    if values.min() < 0 or (classes is not None and values.max() >= classes):
        raise DataError(
            f"{where}: labels run {values.min()}..{values.max()}; the model has {classes} classes"
        )
    return values


def _joined(first: Labelled, second: Labelled) -> Labelled:
    """Two labelled sets as one (the captured items first)."""
    names = sorted(first[0].batches[0])
    arrays = {n: np.concatenate([first[0].array(n), second[0].array(n)]) for n in names}
    labels = np.concatenate([first[1], second[1]])
    size = len(labels)
    batches = tuple({n: a[i : i + 256] for n, a in arrays.items()} for i in range(0, size, 256))
    return Dataset(f"{first[0].source} + {second[0].source}", batches, labels), labels


def _original(spec: str | None, model_dir: Path, base: Manifest) -> tuple[str, Labelled]:
    """The original evaluation data: given, or what the model was gated on, or its canary set."""
    if spec is not None:
        return spec, _labelled(spec, "--original", base)
    earlier = (base.provenance or {}).get("original")
    if isinstance(earlier, str) and earlier:
        return earlier, _labelled(earlier, "--original (from the manifest's provenance)", base)
    canary = _release_canary(model_dir)
    if canary is not None:
        return str(canary), _canary_set(canary, base)
    raise ConfigError(
        f"{model_dir}: no original evaluation data to measure forgetting on (neither its "
        "manifest nor a release names one); give --original DATA, e.g. the data the model "
        "was evaluated on"
    )


def _plain(path: Path, read: ModelReader | None) -> bytes | None:
    """A sealed model file's plain bytes (opened by ``read``), None for a plain one."""
    return None if read is None else read(path)


def _release_canary(model_dir: Path) -> Path | None:
    """The canary set of the installed release ``model_dir`` is (or is inside), if any."""
    folder = model_dir.resolve()
    for root in (folder, *list(folder.parents)[:2]):
        document = root.with_name(root.name + ".json")
        if not document.is_file():
            continue
        try:
            canary = json.loads(document.read_text()).get("canary", {}).get("data")
        except (OSError, ValueError, AttributeError):
            return None
        return root / canary if isinstance(canary, str) else None
    return None


def _canary_set(path: Path, base: Manifest) -> Labelled:
    """A release's canary ``.npz`` (arrays ``x`` and ``y``) as a data set for the first input."""
    where = f"the release's canary set {path}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{where}: not an .npz with arrays x and y: {exc}") from exc
    name = base.inputs[0].name
    batches = tuple({name: x[i : i + 256]} for i in range(0, len(x), 256))
    data = Dataset(str(path), batches, y)
    return data, _class_indices(y, base, where)


def _train(
    model_dir: Path,
    base: Manifest,
    train: Labelled,
    out: Path,
    options: FinetuneOptions,
    progress: Progress,
    read: ModelReader | None = None,
) -> str:
    """Write the candidate's ONNX file at ``out``; a word on how it was made."""
    data, labels = train
    rate = options.learning_rate_for()
    if options.layers == "all":
        assert options.torch_source is not None
        opened = open_model(model_dir, backend="onnxruntime", threads=options.threads, read=read)
        feeds = {name: data.array(name) for name in base.signature().input_names}
        try:
            finetune_torch(
                options.torch_source,
                opened.engine,
                feeds,
                labels,
                out,
                epochs=options.epochs,
                learning_rate=rate,
                l2=options.l2,
                batch_size=options.batch_size,
                seed=options.seed,
                threads=options.threads,
                progress=progress,
            )
        finally:
            opened.engine.close()
        return f"whole network from {options.torch_source} (PyTorch), exported to ONNX"
    plain = _plain(model_dir / base.model.path, read)
    path = str(model_dir / base.model.path)
    model = onnx.load(path) if plain is None else onnx.load_from_string(plain)
    head = find_head(model, base.outputs[0].name)
    features = head_features(model, head, data.batches, threads=options.threads)
    weight, bias = fit_head(
        features,
        labels,
        head,
        epochs=options.epochs,
        learning_rate=rate,
        l2=options.l2,
        batch_size=options.batch_size,
        seed=options.seed,
        progress=progress,
    )
    out.write_bytes(with_head(model, head, weight, bias).SerializeToString())
    return f"last layer ({head.node_type} {head.weight_name}) re-fitted on {head.features!r}"


def _candidate_manifest(
    base: Manifest, model_file: Path, version: str, report: dict[str, Any]
) -> Manifest:
    gate = report["gate"]
    provenance = {
        "finetuned_from": {**report["current"]},
        "method": report["training"]["method"],
        "layers": report["training"]["layers"],
        "epochs": report["training"]["epochs"],
        "data": report["data"],
        "replay": report["replay"],
        "holdout": report["holdout"],
        # What a later fine-tune of this candidate checks forgetting on by default.
        "original": _lasting(report["original"]["spec"]),
        "gate": {k: gate[k] for k in ("gain", "forgetting", "min_gain", "max_forgetting")},
    }
    provenance["finetuned_from"].pop("folder", None)
    metrics = {
        **base.metrics,
        "accuracy": round(100 * gate["original"]["candidate"], 2),
        "holdout_accuracy": round(100 * gate["holdout"]["candidate"], 2),
    }
    return base.model_copy(
        update={
            "version": version,
            "model": base.model.model_copy(
                update={
                    "path": model_file.name,
                    "sha256": sha256_file(model_file),
                    "size_bytes": model_file.stat().st_size,
                    "extra_files": [],
                }
            ),
            "metrics": metrics,
            "provenance": provenance,
            "created": Manifest.model_fields["created"].get_default(call_default_factory=True),
        }
    )


def _lasting(spec: str) -> str:
    """A data spec that still names the same data from another folder (files made absolute)."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def _describe(spec: str | Arrays, labelled: Labelled) -> dict[str, Any]:
    """The data set as provenance: its spec, item count and a hash of its arrays and labels."""
    data, labels = labelled
    digest = hashlib.sha256()
    for batch in data.batches:
        for key in sorted(batch):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(batch[key]).tobytes())
    digest.update(labels.tobytes())
    return {"spec": str(spec), "items": data.size, "sha256": digest.hexdigest()}


@contextlib.contextmanager
def _building(out: Path) -> Iterator[Path]:
    """A scratch folder beside ``out``, renamed to ``out`` on success and removed on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield build
        os.chmod(build, 0o755)
        os.rename(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
