"""A device installed with the ``fleet`` extra alone runs the agent.

``fogline.fleet.agent`` imports ``fogline.federated`` (a device takes part in
federated rounds); secure aggregation's pycryptodome belongs to the
``federated`` extra and is imported only when a secret is shared.
"""

from __future__ import annotations

import subprocess
import sys

HIDE_PYCRYPTODOME = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "Crypto" or name.startswith("Crypto."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
sys.meta_path.insert(0, Hide())
"""


def test_the_agent_imports_without_pycryptodome_and_secagg_says_what_to_install() -> None:
    code = HIDE_PYCRYPTODOME + (
        "import fogline.fleet.agent\n"
        "from fogline.errors import ConfigError\n"
        "from fogline.federated._secagg_crypto import split_secret\n"
        "try:\n"
        "    split_secret(bytes(32), 2, 3)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "pip install 'fogline[federated]'" in done.stdout
