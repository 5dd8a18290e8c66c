"""Let the machine search: the registered variants' latency measured on this device and backend
(:mod:`.grid`, :mod:`.latency`), their accuracy-latency front and the best one within a budget
(:mod:`.front`). Issue 17; NetAdapt (V3 paper Section 4.2) builds on these."""

from .front import pareto_front, within_budget
from .grid import GridPoint, published_grid
from .latency import BACKENDS, Measurement, measure_grid

__all__ = [
    "BACKENDS",
    "GridPoint",
    "Measurement",
    "measure_grid",
    "pareto_front",
    "published_grid",
    "within_budget",
]
