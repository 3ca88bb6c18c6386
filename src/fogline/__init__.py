"""fogline: edge AI in one system.

Optimize a model for the device (:mod:`fogline.optimize`), run it through
the one engine interface (:mod:`fogline.model`), and — in later parts —
run it in a pipeline, serve it, and manage a fleet that runs it.
"""

from fogline.errors import FoglineError

__version__ = "0.1.0"
__all__ = ["FoglineError", "__version__"]
