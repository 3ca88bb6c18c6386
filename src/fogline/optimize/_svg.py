"""A matplotlib figure as inline SVG, for the HTML reports (variants, architecture search)."""

from __future__ import annotations

import io
from typing import Any


def svg_of(fig: Any) -> str:
    """A matplotlib figure as inline ``<svg>`` (laid out tight, then closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]
