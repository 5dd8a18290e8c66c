"""The grid of published variants: every registered MobileNet at 224 with its published top-1 (as
`mobilenets models` lists it), and at each smaller input size the papers report a top-1 for: V1's
resolution multiplier (TF-Slim mobilenet_v1.md's width x resolution grid), V2's (TF-Slim's 6 x 5
grid) and V3 Table 9's 96-192 rows. The V2 paper's performance figure plots this grid against latency
measured on one phone; :mod:`.latency` measures it here."""

from __future__ import annotations

from dataclasses import dataclass

from ..nn.registry import VARIANTS
from ..numbers.published import PUBLISHED

MIN_RESOLUTION, MAX_RESOLUTION = 96, 224


@dataclass(frozen=True)
class GridPoint:
    model: str  # registry name
    resolution: int
    top1: float  # published ImageNet top-1 (%)
    source: str  # the table it comes from

    @property
    def family(self) -> str:
        return VARIANTS[self.model].family

    @property
    def label(self) -> str:
        return f"{self.model}@{self.resolution}"


def published_grid(
    families: list[str] | None = None,
    models: list[str] | None = None,
    resolutions: list[int] | None = None,
) -> list[GridPoint]:
    """The grid's points (model, input size, published top-1), filtered by family, model and input
    size; sorted by family, width and size. Unknown names are refused with the choices."""
    known_families = sorted({v.family for v in VARIANTS.values()})
    for family in families or []:
        if family not in known_families:
            raise ValueError(f"unknown family {family!r}; choose from {', '.join(known_families)}")
    for model in models or []:
        if model not in VARIANTS:
            raise ValueError(
                f"unknown model {model!r}; `mobilenets models` lists them ({', '.join(VARIANTS)})"
            )
    points = {(name, 224): GridPoint(name, 224, v.top1, v.top1_source) for name, v in VARIANTS.items()}
    for cell in PUBLISHED:  # smaller inputs: the first table that reports the cell
        key = (cell.model, cell.resolution)
        inside = MIN_RESOLUTION <= cell.resolution < MAX_RESOLUTION
        if cell.model in VARIANTS and cell.top1 is not None and key not in points and inside:
            points[key] = GridPoint(cell.model, cell.resolution, cell.top1, cell.source)
    chosen = [
        p
        for p in points.values()
        if (not families or p.family in families)
        and (not models or p.model in models)
        and (not resolutions or p.resolution in resolutions)
    ]
    if not chosen:
        raise ValueError(
            "no published variant matches the filters (families, models, resolutions "
            f"{MIN_RESOLUTION}-{MAX_RESOLUTION}); `mobilenets profile --published` lists the tables"
        )
    return sorted(chosen, key=lambda p: (p.family, VARIANTS[p.model].width, p.resolution))
