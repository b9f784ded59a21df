"""The model-only checkpoint: what is saved loads back identical, and every broken directory is named."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ai_system.data.tokenizer import ByteTokenizer, train_bpe
from ai_system.models.config import get_config
from ai_system.models.pretrained import inspect_pretrained, load_pretrained, save_pretrained
from ai_system.models.transformer import Transformer


def random_model(**overrides: object) -> Transformer:
    model = Transformer(get_config("debug", **overrides))
    model.init_weights(seed=0)
    return model.eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Transformer]:
    model = random_model()
    return save_pretrained(tmp_path / "ckpt", model.config, model.state_dict(), ByteTokenizer()), model


def test_a_saved_model_loads_back_with_the_same_weights_and_outputs(saved):
    directory, model = saved
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", "model.safetensors"]
    loaded, tokenizer = load_pretrained(directory)
    assert isinstance(tokenizer, ByteTokenizer) and loaded.config == model.config and not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    tokens = torch.tensor([list(b"same output")])
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))


def test_the_stored_dtype_is_the_default_and_load_can_pick_another(tmp_path):
    model = random_model()
    directory = save_pretrained(tmp_path, model.config, model.state_dict(), ByteTokenizer(), dtype=torch.bfloat16)
    assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"
    in_bf16, _ = load_pretrained(directory)
    assert {p.dtype for p in in_bf16.parameters()} == {torch.bfloat16}
    upcast, _ = load_pretrained(directory, dtype=torch.float32)
    expected = model.state_dict()["layers.0.attention.wq.weight"].to(torch.bfloat16).float()
    assert torch.equal(upcast.state_dict()["layers.0.attention.wq.weight"], expected)


def test_a_bpe_tokenizer_travels_as_tokenizer_json(tmp_path):
    tokenizer = train_bpe(["def f(x):\n    return x\n" * 50, "héllo 🎉"], 320)
    model = random_model(vocab_size=320)
    directory = save_pretrained(tmp_path, model.config, model.state_dict(), tokenizer)
    assert (directory / "tokenizer.json").is_file()
    assert json.loads((directory / "config.json").read_text())["tokenizer"] == "bpe"
    _, loaded = load_pretrained(directory)
    assert loaded.kind == "bpe" and loaded.encode("héllo 🎉 def") == tokenizer.encode("héllo 🎉 def")


def test_tied_embeddings_are_stored_once_and_tied_after_loading(tmp_path):
    model = random_model(tie_embeddings=True)
    directory = save_pretrained(tmp_path, model.config, model.state_dict(), ByteTokenizer())
    loaded, _ = load_pretrained(directory)
    assert loaded.output.weight is loaded.tok_embeddings.weight
    assert torch.equal(loaded.output.weight, model.output.weight)


def test_inspect_reads_config_tokenizer_and_header_without_the_weights(saved):
    directory, model = saved
    info = inspect_pretrained(directory)
    assert info.config == model.config and info.dtype == torch.float32 and info.tokenizer.kind == "byte"
    assert info.shapes["tok_embeddings.weight"] == (256, 64) and len(info.shapes) == len(model.state_dict())


def rewrite_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(("damage", "error", "message"), [
    (lambda d: (d / "config.json").unlink(), FileNotFoundError, "config.json does not exist"),
    (lambda d: (d / "model.safetensors").unlink(), FileNotFoundError, "model.safetensors does not exist"),
    (lambda d: (d / "config.json").write_text("{not json"), ValueError, "is not valid JSON"),
    (lambda d: rewrite_config(d, format_version=2), ValueError, "format_version 2; this version of ai-system reads "
                                                                "format_version 1"),
    (lambda d: rewrite_config(d, format="pytorch"), ValueError, "'format' field is 'pytorch'"),
    (lambda d: rewrite_config(d, dtype="int8"), ValueError, "dtype must be one of"),
    (lambda d: rewrite_config(d, tokenizer="sentencepiece"), ValueError, "tokenizer must be 'byte' or 'bpe'"),
    (lambda d: rewrite_config(d, tokenizer="bpe"), FileNotFoundError, "tokenizer.json does not exist"),
    (lambda d: rewrite_config(d, model={**asdict(get_config("debug")), "dim": 128}), ValueError,
     r"layers.0.attention.wq.weight has shape \(64, 64\), expected \(128, 128\)"),
    (lambda d: rewrite_config(d, model={**asdict(get_config("debug")), "n_layers": 3}), ValueError,
     "missing layers.2"),
    (lambda d: rewrite_config(d, model={"dim": 64, "depth": 2}), ValueError, "'model' is not a valid ModelConfig"),
    (lambda d: rewrite_config(d, dtype="bfloat16"), ValueError, r"holds \['F32'\] tensors but .* says bfloat16"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage" * 100), ValueError,
     "is not a readable safetensors file"),
    (lambda d: torch.save({"w": torch.zeros(2)}, d / "model.safetensors"), ValueError,
     "is not a readable safetensors file"),
])
def test_a_broken_checkpoint_is_refused_with_the_reason(saved, damage, error, message):
    directory, _ = saved
    damage(directory)
    with pytest.raises(error, match=message) as raised:
        load_pretrained(directory)
    assert "weights_only" not in str(raised.value)


def test_a_missing_directory_or_a_file_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory .*nowhere does not exist"):
        load_pretrained(tmp_path / "nowhere")
    legacy = tmp_path / "model.pt"
    torch.save(random_model().state_dict(), legacy)
    with pytest.raises(FileNotFoundError, match="model.pt is a file; expected a directory written by save_pretrained"):
        load_pretrained(legacy)


def test_save_refuses_what_would_not_load(tmp_path):
    model = random_model()
    state = model.state_dict()
    with pytest.raises(ValueError, match="missing norm.weight"):
        save_pretrained(tmp_path, model.config, {k: v for k, v in state.items() if k != "norm.weight"},
                        ByteTokenizer())
    with pytest.raises(ValueError, match=r"tokenizer's vocabulary \(256\) must equal the model's vocab_size \(512\)"):
        save_pretrained(tmp_path, get_config("debug", vocab_size=512), state, ByteTokenizer())
    with pytest.raises(ValueError, match="dtype must be one of"):
        save_pretrained(tmp_path, model.config, state, ByteTokenizer(), dtype=torch.int8)
    assert not (tmp_path / "config.json").exists()
