"""Every cell of the papers' tables reproduces, or is a recorded erratum with its reason."""

import pytest

from mobilenets.numbers.published import CELL_ERRATA, PUBLISHED, agrees, check_all, profile_named

CHECKS = check_all()


def test_every_table_named_in_the_issue_is_present():
    sources = {cell.source for cell in PUBLISHED}
    assert {
        "V1 Table 6",
        "V1 Table 7",
        "V1 Table 8",
        "TF-Slim mobilenet_v1.md",
        "V2 Table 4",
        "TF-Slim mobilenet/README.md (V2)",
        "V3 Table 3",
        "V3 Table 9",
    } <= sources
    assert len([c for c in PUBLISHED if c.source == "TF-Slim mobilenet_v1.md"]) == 16  # the alpha x rho grid
    assert len([c for c in PUBLISHED if c.source == "V3 Table 9"]) == 19
    assert any(c.model == "mobilenet_v2_140" for c in PUBLISHED if c.source == "V2 Table 4")


@pytest.mark.parametrize(
    "check", CHECKS, ids=[f"{c.cell.source}|{c.cell.model}@{c.cell.resolution}|{c.field}" for c in CHECKS]
)
def test_cell_agrees_or_is_a_recorded_erratum(check):
    if check.agrees:
        assert check.reason is None, "an agreeing cell must not be listed as an erratum"
    else:
        assert check.reason, (
            f"printed {check.printed}, computed {check.computed:.3f}: record it in CELL_ERRATA"
        )


def test_errata_all_refer_to_real_cells():
    keys = {(c.cell.source, c.cell.model, c.cell.resolution, c.field) for c in CHECKS}
    assert set(CELL_ERRATA) <= keys
    assert 0 < len(CELL_ERRATA) < len(CHECKS) / 4


def test_agreement_rule():
    assert agrees("569", 568.74) and agrees("11", 11.9) and agrees("4.2", 4.232) and agrees("59.2", 59.29)
    assert not agrees("317", 325.4) and not agrees("2.9", 2.54) and not agrees("74", 73.17)


def test_the_talks_comparison():
    mobilenet, googlenet, vgg = (profile_named(m) for m in ("mobilenet_v1_100", "googlenet", "vgg16"))
    assert (mobilenet.params, round(mobilenet.madds / 1e6)) == (4_231_976, 569)
    assert vgg.params == 138_357_544 and round(vgg.madds / 1e6) == 15_470
    assert round(googlenet.params / 1e6, 1) == 7.0 and round(googlenet.madds / 1e6) == 1583
    # MobileNet is ~27x cheaper than VGG-16 and ~32x smaller, as the paper says (Section 4.3).
    assert 26 < vgg.madds / mobilenet.madds < 28 and 32 < vgg.params / mobilenet.params < 33.5


def test_tf_slim_v1_counts_three_values_per_batchnorm_channel():
    """Its batch_norm has no gamma: beta, moving mean and moving variance, with the 1001-class head. That
    convention reproduces all four printed parameter cells; gamma + beta (torchvision's) misses 0.5's."""
    from dataclasses import replace

    from mobilenets.numbers.published import PUBLISHED, check_cell

    cells = [c for c in PUBLISHED if c.source == "TF-Slim mobilenet_v1.md" and c.resolution == 224]
    assert {c.bn_values_per_channel for c in cells} == {3} and len(cells) == 4
    for cell in cells:
        (params,) = [check for check in check_cell(cell) if check.field == "params"]
        assert params.agrees and params.reason is None, (cell.model, params.computed)
    half = next(c for c in cells if c.model == "mobilenet_v1_050")
    (params,) = [
        check for check in check_cell(replace(half, bn_values_per_channel=2)) if check.field == "params"
    ]
    assert params.printed == "1.34" and not params.agrees
