"""Numerical parity of the architecture with torchvision and timm, live against the real libraries.

The reference model gets random BN affine parameters and recalibrated running statistics, its weights are
copied into ours tensor by tensor, and the logits must vary across inputs before they are compared.
"""

import pytest
import torch

from mobilenets import create_model

from parity import assert_varies, copy_by_order, randomize_batchnorm, relative_max_diff, structured_inputs

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

CASES = [
    # (our name, reference factory, our options, tolerance relative to the largest logit)
    ("mobilenet_v2_100", lambda: torchvision.models.mobilenet_v2(), {}, 1e-5),
    ("mobilenet_v3_large_100", lambda: torchvision.models.mobilenet_v3_large(), {}, 1e-5),
    ("mobilenet_v3_small_100", lambda: torchvision.models.mobilenet_v3_small(), {}, 1e-5),
    ("mobilenet_v1_100", lambda: timm.create_model("mobilenetv1_100"), {}, 1e-5),
    ("mobilenet_v2_035", lambda: timm.create_model("mobilenetv2_035"), {}, 1e-5),
    ("mobilenet_v3_small_075", lambda: timm.create_model("mobilenetv3_small_075"), {}, 1e-5),
    # timm's ports of the TF checkpoints: TF 'same' padding and BN eps 1e-3.
    (
        "mobilenet_v3_large_075",
        lambda: timm.create_model("tf_mobilenetv3_large_075"),
        {"padding": "same"},
        1e-5,
    ),
    (
        "mobilenet_v3_large_minimal_100",
        lambda: timm.create_model("tf_mobilenetv3_large_minimal_100"),
        {"padding": "same"},
        1e-5,
    ),
    (
        "mobilenet_v3_small_minimal_100",
        lambda: timm.create_model("tf_mobilenetv3_small_minimal_100"),
        {"padding": "same"},
        1e-5,
    ),
]


@pytest.mark.parametrize(
    ("name", "reference", "options", "tol"), CASES, ids=[c[0] + "-" + str(i) for i, c in enumerate(CASES)]
)
def test_logits_match_the_reference_implementation(name, reference, options, tol):
    ref = randomize_batchnorm(reference().eval(), seed=1, resolution=96)
    eps = next(m.eps for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d))
    ours = create_model(name, bn_eps=eps, **options).eval()
    copy_by_order(ref.state_dict(), ours)
    x = structured_inputs(4, 128, seed=7)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert_varies(expected)
    assert relative_max_diff(got, expected) < tol


def test_symmetric_padding_does_not_match_tf_weights():
    """The padding switch matters: without it a TF port gives different logits (anchors 3.3)."""
    ref = randomize_batchnorm(timm.create_model("tf_mobilenetv3_large_075").eval(), seed=1, resolution=96)
    ours = create_model("mobilenet_v3_large_075", bn_eps=1e-3).eval()
    copy_by_order(ref.state_dict(), ours)
    x = structured_inputs(2, 128, seed=7)
    with torch.no_grad():
        assert relative_max_diff(ours(x), ref(x)) > 1e-3
