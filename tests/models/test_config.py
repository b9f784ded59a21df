import pytest
import torch

from ai_system.models.config import MODEL_CONFIGS, ModelConfig, get_config
from ai_system.models.transformer import Transformer


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_parameter_count_formula_matches_the_module(name):
    config = get_config(name)
    with torch.device("meta"):
        model = Transformer(config)
    assert sum(p.numel() for p in model.parameters()) == config.num_params()
    assert config.num_params(include_embedding=False) == config.num_params() - config.vocab_size * config.dim


def test_named_shapes_are_the_advertised_sizes():
    assert 120e6 < get_config("125M").num_params() < 140e6
    assert 1.0e9 < get_config("1B").num_params() < 1.2e9
    assert 7.9e9 < get_config("8B").num_params() < 8.1e9


def test_train_flops_counts_six_n_plus_attention():
    config = get_config("debug")
    n = config.num_params(include_embedding=False)
    assert config.train_flops_per_token(128) == 6 * n + 12 * config.n_layers * config.dim * 128


def test_overrides_and_bad_values_are_named():
    assert get_config("small", n_layers=1).n_layers == 1
    with pytest.raises(ValueError, match="unknown model config 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="dim=30 must be divisible by n_heads=4"):
        ModelConfig(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="n_layers must be positive, got 0"):
        ModelConfig(n_layers=0)
