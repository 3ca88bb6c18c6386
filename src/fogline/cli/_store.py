"""``fogline store ...``: the results store on disk — its key (rekey), erasure.

The command group lives here; its commands live in one module each
(``_store_keys.py``, ``_store_erase.py``), which add themselves to
:data:`store`.
"""

from __future__ import annotations

import typer

from fogline.cli._app import app

store = typer.Typer(
    help="A results store on disk: change its key, erase what matches.", no_args_is_help=True
)
app.add_typer(store, name="store")
