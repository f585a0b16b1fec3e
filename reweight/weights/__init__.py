"""Pure weight math: static log weights → sampling factors (no project imports)."""

from reweight.weights.static import static_factor

__all__ = ["static_factor"]
