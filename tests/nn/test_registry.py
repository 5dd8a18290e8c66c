"""One suite over the registry: shapes, gradients, recorded costs; and the errors users meet first."""

import pytest
import torch

import mobilenets
from mobilenets import create_model, list_models
from mobilenets.numbers.profile import profile_module

MODELS = list_models()


def test_registry_has_every_variant_the_issue_names():
    expected = (
        [f"mobilenet_v1_{w}" for w in ("025", "050", "075", "100")]
        + [f"mobilenet_v2_{w}" for w in ("035", "050", "075", "100", "130", "140")]
        + [f"mobilenet_v3_{s}_{w}" for s in ("large", "small") for w in ("035", "050", "075", "100", "125")]
        + ["mobilenet_v3_large_minimal_100", "mobilenet_v3_small_minimal_100"]
    )
    assert sorted(MODELS) == sorted(expected)
    assert list_models("mobilenet_v3_small_*") == [m for m in MODELS if m.startswith("mobilenet_v3_small_")]


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_backward(name):
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, 64, 80, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert x.grad is not None and model.stem.conv.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_params_and_madds_equal_the_recorded_numbers(name):
    variant = mobilenets.get_variant(name)
    profile = profile_module(create_model(name), 224)
    assert (profile.params, profile.madds) == (variant.params, variant.madds)


@pytest.mark.parametrize(
    ("name", "params", "madds_m"),
    [
        ("mobilenet_v1_100", 4_231_976, 568.7),
        ("mobilenet_v2_100", 3_504_872, 300.8),
        ("mobilenet_v3_large_100", 5_483_032, 216.6),
        ("mobilenet_v3_small_100", 2_542_856, 56.5),
        ("mobilenet_v3_large_075", 3_993_528, 154.6),
    ],
)
def test_the_issues_anchor_numbers(name, params, madds_m):
    profile = profile_module(create_model(name), 224)
    assert profile.params == params
    assert round(profile.madds / 1e6, 1) == madds_m


def test_num_classes_zero_returns_pooled_features_and_options_apply():
    model = create_model("mobilenet_v3_small_100", num_classes=0, in_chans=1, dropout=0.0, bn_eps=1e-5).eval()
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, 1024)
    assert model.stem.conv.in_channels == 1
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}
    model.reset_classifier(3)
    assert model(torch.randn(1, 1, 96, 96)).shape == (1, 3)


def test_any_resolution_works():
    model = create_model("mobilenet_v2_035").eval()
    for size in (32, 97, 131, 224):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 1000)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(
        ValueError, match=r"unknown model 'mobilenet_v3_smal'; did you mean mobilenet_v3_small_"
    ):
        create_model("mobilenet_v3_smal")
    with pytest.raises(
        ValueError, match=r"unknown model 'resnet50' \(mobilenets.list_models\(\) lists all 22\)"
    ):
        create_model("resnet50")


def test_width_without_a_variant_lists_the_widths():
    with pytest.raises(
        ValueError, match=r"mobilenet_v2 has no variant at width 0.6; widths: 0.35, 0.5, 0.75, 1, 1.3, 1.4"
    ):
        create_model("mobilenet_v2_060")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_chans": 0}, r"in_chans must be an integer >= 1, got 0"),
        ({"output_stride": 4}, r"output_stride must be one of \(8, 16, 32\), got 4"),
        ({"padding": "valid"}, r"padding must be one of \('symmetric', 'same'\), got 'valid'"),
        ({"num_classes": -1}, r"num_classes must be an integer >= 0"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_options_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("mobilenet_v2_100", **kwargs)


def test_bad_inputs_are_named():
    model = create_model("mobilenet_v3_small_100").eval()
    with pytest.raises(ValueError, match=r"input resolution \(16, 16\) is too small: .* at least 32"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="input has 1 channels but the model was built with in_chans=3"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(
        ValueError, match=r"expected an input of shape \(N, C, H, W\), got shape \(3, 64, 64\)"
    ):
        model(torch.randn(3, 64, 64))


def test_channels_last_storage_is_invisible_to_users():
    fast = create_model("mobilenet_v3_small_100").eval()
    plain = create_model("mobilenet_v3_small_100", memory_format="contiguous").eval()
    assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.stem.conv.weight.is_contiguous()
    state = fast.state_dict()
    assert all(v.is_contiguous() for v in state.values())
    plain.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    fast.load_state_dict(plain.state_dict())
    assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"memory_format must be one of \('channels_last', 'contiguous'\)"):
        create_model("mobilenet_v3_small_100", memory_format="nhwc")
