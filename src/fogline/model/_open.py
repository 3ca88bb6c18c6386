"""Open what a user points at: a model file, or a folder (or file) with a fogline manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fogline.model._engine import Engine, EngineOptions, ModelReader, load_engine
from fogline.model._manifest import MANIFEST_NAME, Manifest
from fogline.model._providers import CPU, provider_name


@dataclass(frozen=True)
class OpenedModel:
    """An engine with the name and version results should carry, and the file it runs."""

    engine: Engine
    name: str
    version: str
    file: Path
    manifest: Manifest | None = None


def open_model(
    path: str | Path,
    *,
    backend: str = "auto",
    threads: int | None = None,
    precision: str | None = None,
    graph_optimization: str | None = None,
    providers: tuple[str, ...] | None = None,
    spin: bool | None = None,
    read: ModelReader | None = None,
) -> OpenedModel:
    """Load a model file, or the model a manifest folder describes (its hash checked).

    Options given here win over what the manifest says. The manifest's
    ``engine.providers`` are a preference, not a demand: those this build
    offers are used and the first one it lacks is recorded as the engine's
    fallback (see :func:`~fogline.model.engine_fallback`), while ``providers``
    given here must all be offered. Without a manifest
    the name is the file's stem and the version ``"0"``. ``read`` hands over
    the model's bytes when they are to be loaded from memory (see
    :data:`~fogline.model.ModelReader`: a sealed file, opened by the caller);
    the manifest's size and sha256 are then checked on those bytes, the
    plain model's, not on the file on disk.

    >>> from fogline.examples import digits_model_path
    >>> opened = open_model(digits_model_path().parent)
    >>> opened.name, opened.engine.signature.input_names
    ('digits', ('pixels',))
    """
    path = Path(path)
    if path.is_dir() or path.name == MANIFEST_NAME:
        folder = path if path.is_dir() else path.parent
        manifest = Manifest.read(folder)
        data = None if read is None else read(manifest.model_path(folder))
        model_file = manifest.verify(folder, data=data)
        options = EngineOptions(
            threads=threads or manifest.engine.threads,
            precision=precision or manifest.engine.precision,
            graph_optimization=graph_optimization or manifest.engine.graph_optimization,
            providers=providers,
            preferred_providers=_preference(manifest.engine.providers),
            spin=spin,
        )
        chosen = manifest.engine.backend if backend == "auto" else backend
        engine = load_engine(model_file, backend=chosen, options=options, read=_once(read, data))
        return OpenedModel(engine, manifest.name, manifest.version, model_file, manifest)
    options = EngineOptions(
        threads=threads,
        precision=precision,
        graph_optimization=graph_optimization or "all",
        providers=providers,
        spin=spin,
    )
    engine = load_engine(path, backend=backend, options=options, read=read)
    return OpenedModel(engine, path.stem, "0", path)


def _preference(values: list[str] | None) -> tuple[str, ...] | None:
    """A manifest's providers as a preference; one that is only the CPU says nothing
    (earlier optimize runs wrote it for every CPU variant), so the build's best is used."""
    if not values or all(provider_name(v) == CPU for v in values):
        return None
    return tuple(values)


def _once(read: ModelReader | None, data: bytes | None) -> ModelReader | None:
    """``read``, answering the model file from the bytes already read (and checked) for it."""
    if read is None:
        return None
    first = [data]

    def reader(path: Path) -> bytes | None:
        if first:
            return first.pop()
        return read(path)

    return reader
