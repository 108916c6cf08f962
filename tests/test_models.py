import pytest
import torch

from gap_study.nets.architecture import HEAD_NAMES, ModelConfig, feature_map_shape
from gap_study.nets.heads import DenseHead
from gap_study.nets.models import (
    build_model,
    dense_head_param_count,
    fold_batch_norm,
    head_param_count,
    param_count,
    pooled_head_param_count,
)


def test_dense_head_reproduces_the_writeups_7x7x64_to_500_example():
    head = DenseHead(in_features=7 * 7 * 64, hidden=500, num_classes=10)
    assert head.classifier.hidden.weight.numel() == 1_568_000
    assert head.classifier.hidden.bias.numel() == 500
    assert dense_head_param_count(64, 7, 7, 500, 10) == param_count(head)
    assert dense_head_param_count(64, 7, 7, 500, 10) == 1_568_000 + 500 + 500 * 10 + 10


def study_head_param_count(head: str, channels: int, height: int, width: int, hidden: int,
                           num_classes: int) -> int:
    """Trainable head parameters by the table of ``docs/study.md`` ("Heads"), for any head:
    the oracle the built models are checked against."""
    formulas = {
        "dense": lambda: dense_head_param_count(channels, height, width, hidden, num_classes),
        "linear": lambda: pooled_head_param_count(channels * height * width, num_classes),
        "avg2x2_dense": lambda: dense_head_param_count(channels, height // 2, width // 2,
                                                       hidden, num_classes),
        "gap_hidden": lambda: dense_head_param_count(channels, 1, 1, hidden, num_classes),
        "avgmax": lambda: pooled_head_param_count(2 * channels, num_classes),
        "gem": lambda: pooled_head_param_count(channels, num_classes) + 1,  # the learnable p
    }
    formulas["dense_dropout"] = formulas["dense"]  # dropout has no parameters
    if head not in HEAD_NAMES:
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEAD_NAMES)}")
    return formulas.get(head, lambda: pooled_head_param_count(channels, num_classes))()


def test_resnet50_sized_gap_head_has_the_published_2049000_parameters():
    assert pooled_head_param_count(2048, 1000) == 2_049_000


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_head_param_count_matches_the_study_formula(head):
    config = ModelConfig(head=head, in_channels=1, image_size=32, num_classes=10,
                         widths=(16, 32, 64), dense_hidden=500)
    model = build_model(config)
    c, h, w = feature_map_shape(32, (16, 32, 64))
    expected = study_head_param_count(head, c, h, w, 500, 10)
    assert head_param_count(model) == expected
    dense = 64 * 8 * 8 * 500 + 500 + 500 * 10 + 10
    assert expected == {"dense": dense, "dense_dropout": dense, "linear": 64 * 8 * 8 * 10 + 10,
                        "avg2x2_dense": 64 * 4 * 4 * 500 + 500 + 500 * 10 + 10,
                        "gap_hidden": 64 * 500 + 500 + 500 * 10 + 10, "avgmax": 128 * 10 + 10,
                        "gem": 64 * 10 + 10 + 1}.get(head, 64 * 10 + 10)
    assert param_count(model) == param_count(model.features) + expected


@pytest.mark.parametrize("head", HEAD_NAMES)
@pytest.mark.parametrize("in_channels, size", [(1, 32), (3, 32), (1, 28)])
def test_every_head_maps_images_to_class_logits(head, in_channels, size):
    config = ModelConfig(head=head, in_channels=in_channels, image_size=size, num_classes=7,
                         widths=(4, 8), dense_hidden=16)
    logits = build_model(config)(torch.randn(5, in_channels, size, size))
    assert logits.shape == (5, 7)


def test_pooling_heads_share_the_backbone_and_differ_only_in_the_op():
    shapes = {head: [tuple(p.shape) for p in build_model(ModelConfig(
        head=head, in_channels=1, image_size=32, num_classes=10)).parameters()]
        for head in ("gap", "gmp", "gsp", "lse")}
    assert shapes["gap"] == shapes["gmp"] == shapes["gsp"] == shapes["lse"]


def test_nin_logits_are_the_mean_of_one_map_per_class():
    model = build_model(ModelConfig(head="nin", in_channels=1, image_size=16, num_classes=4,
                                    widths=(4, 8)))
    x = torch.randn(3, 1, 16, 16)
    maps = model.head.class_maps(model.features(x))
    assert maps.shape == (3, 4, 8, 8)
    torch.testing.assert_close(model(x), maps.mean(dim=(2, 3)))


def test_gem_head_learns_its_exponent():
    model = build_model(ModelConfig(head="gem", in_channels=1, image_size=16, num_classes=3,
                                    widths=(4,), gem_p=2.5))
    assert model.head.pool.p.item() == 2.5 and model.head.pool.p.requires_grad
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    assert model.head.pool.p.grad is not None and model.head.pool.p.grad != 0


def test_model_config_rejects_an_unknown_head_and_round_trips_through_a_dict():
    with pytest.raises(ValueError, match="unknown head 'dense2'"):
        ModelConfig(head="dense2", in_channels=1, image_size=32, num_classes=10)
    config = ModelConfig(head="gap", in_channels=3, image_size=32, num_classes=10,
                         widths=[8, 16])
    assert config.widths == (8, 16)
    assert ModelConfig(**config.to_dict()) == config


def _model_with_trained_batch_norm(head: str) -> torch.nn.Module:
    """A model whose BatchNorm layers hold non-trivial running statistics and affine weights."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(head=head, in_channels=1, image_size=16, num_classes=10))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 1, 16, 16) * 3 + 0.5)
        for layer in model.features:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 2.0)
                layer.bias.uniform_(-1.0, 1.0)
    return model.eval()


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_folding_batch_norm_keeps_every_heads_logits_and_leaves_the_model_alone(head):
    model = _model_with_trained_batch_norm(head)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(20, 1, 16, 16).contiguous(memory_format=torch.channels_last)

    folded = fold_batch_norm(model)

    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in folded.features) == 3
    assert not folded.training
    with torch.inference_mode():
        expected, got = model(images), folded(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.features)


def test_folded_batch_norm_gives_the_same_feature_maps_in_float64():
    model = _model_with_trained_batch_norm("gap").double()
    images = torch.rand(8, 1, 16, 16, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(fold_batch_norm(model).features(images),
                                   model.features(images), rtol=1e-12, atol=1e-12)


def test_dropout_is_off_in_eval_mode_and_draws_nothing_when_not_asked_for():
    torch.manual_seed(0)
    dropout = build_model(ModelConfig("dense_dropout", 1, 16, 3, widths=(4, 8), dense_hidden=6))
    x = torch.rand(5, 1, 16, 16)
    dropout.eval()
    torch.testing.assert_close(dropout(x), dropout(x))  # deterministic in eval mode
    dropout.train()
    assert not torch.equal(dropout(x), dropout(x))  # masks differ in training
    dense = build_model(ModelConfig("dense", 1, 16, 3, widths=(4, 8), dense_hidden=6)).train()
    state = torch.get_rng_state()
    dense(x)
    assert torch.equal(torch.get_rng_state(), state)  # plain dense draws no random numbers


def test_avg2x2_dense_averages_2x2_cells_before_the_dense_layers():
    config = ModelConfig("avg2x2_dense", 1, 16, 3, widths=(4, 8), dense_hidden=6)
    head = build_model(config).head
    f = torch.rand(2, 8, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(f, 2).flatten(1)
    torch.testing.assert_close(head(f), head.classifier(pooled))
    assert head.classifier.hidden.in_features == 8 * 4 * 4


def test_gsp_scaled_trains_exactly_like_gap(small):
    """gsp_scaled's classifier starts at gap's weights over H*W and Adam's scaled learning
    rate and eps keep it there: the same logits after every step, up to rounding."""
    from builders import tiny_config

    logits = {}
    for head in ("gap", "gsp_scaled"):
        torch.manual_seed(0)
        model = build_model(tiny_config(head)).train()
        optimizer = torch.optim.Adam(model.parameter_groups(lr=0.01, weight_decay=0.0),
                                     lr=0.01, fused=True)
        x = torch.as_tensor(small.x_train[:64]).float() / 255
        y = torch.as_tensor(small.y_train[:64])
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        logits[head] = model.eval()(x).detach()
    torch.testing.assert_close(logits["gsp_scaled"], logits["gap"], rtol=1e-4, atol=1e-5)
    plain_gsp = build_model(tiny_config("gsp"))
    assert plain_gsp.parameter_groups(lr=0.01, weight_decay=0.0)[0]["params"] == list(
        plain_gsp.parameters())
