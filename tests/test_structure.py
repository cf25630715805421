"""The real Wan2.1-T2V-1.3B architecture, built from the shipped config on the meta device."""

import pytest

from lora_codec.adapter import Adapter, AdapterConfig
from lora_codec.backbones import wan_reference_config, wan_transformer_on_meta


@pytest.fixture(scope="module")
def wan_adapter():
    model = wan_transformer_on_meta()
    return model, Adapter(model, AdapterConfig(rank=1, theta_length=131072, proj_seed=0))


def test_wan_config_matches_reference(wan_adapter):
    model, _ = wan_adapter
    ref = wan_reference_config()["transformer"]
    assert model.config.num_layers == ref["num_layers"] == 30
    assert model.config.num_attention_heads * model.config.attention_head_dim == 1536
    assert all(p.device.type == "meta" for p in model.parameters())


def test_adapter_injection_counts(wan_adapter):
    _, adapter = wan_adapter
    ref = wan_reference_config()["adapter_targets"]
    assert adapter.num_layers == ref["num_layers_adapted"] == 240
    assert adapter.lora_entries == ref["lora_entries_at_rank_1"] == 737280
    assert adapter.theta.shape == (ref["theta_length"],) == (131072,)
    for layer in adapter.layers:
        assert layer.in_features == 1536 and layer.out_features == 1536
        assert tuple(layer.unilora_indices_A["default"].shape) == (1, 1536)
        assert tuple(layer.unilora_indices_B["default"].shape) == (1536, 1)
    assert len(adapter.layers) == 30 * 8


def test_only_theta_is_trainable(wan_adapter):
    _, adapter = wan_adapter
    trainable = [n for n, p in adapter.model.named_parameters() if p.requires_grad]
    assert len(trainable) == 1 and "unilora_theta_d" in trainable[0]


def test_rank_scales_entries():
    model = wan_transformer_on_meta()
    adapter = Adapter(model, AdapterConfig(rank=2, theta_length=4096))
    assert adapter.lora_entries == 2 * 737280
