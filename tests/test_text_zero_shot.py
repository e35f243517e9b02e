"""Zero-shot classes described in words: class-name embeddings from a tiny random BERT that
the tests write themselves (nothing is downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK
from test_zero_shot import SMALL, _write_xlsa17

from tlframe.data.benchmarks.xlsa17 import xlsa17
from tlframe.data.zero_shot.text_encoder import class_phrase, text_embeddings
from tlframe.engine.stages import build_module, domain_infos, plan_stages
from tlframe.errors import ConfigError
from tlframe.train import build_domains, train

WORDS = [*"0123456789", "a", "photo", "of", "the", "digit", ".", "class", "bear", "polar"]
WIDTH = 32


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """A one-layer BERT of width 32 with random weights and a vocabulary of the test words."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    config = transformers.BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )
    transformers.BertModel(config).save_pretrained(folder)
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)
    return folder


def _text_overrides(folder: Path) -> list[str]:
    return ["source.class_text=names", f"source.text_encoder.path={folder}"]


def test_class_names_embed_to_distinct_unit_rows(text_model):
    names = [str(d) for d in range(10)]
    rows = text_embeddings(names, str(text_model), "a photo of the digit {}.")
    assert rows.shape == (10, WIDTH) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(row, 5)) for row in rows}) == 10  # different names, rows
    again = text_embeddings(names, str(text_model), "a photo of the digit {}.")
    assert np.array_equal(rows, again)
    assert not np.allclose(rows, text_embeddings(names, str(text_model)))  # the template counts
    assert class_phrase("001.polar_bear") == class_phrase("polar+bear") == "polar bear"


def test_attribute_embedding_runs_on_class_name_embeddings(make_cfg, text_model):
    method = ["method=attribute_embedding", "dataset=zsl_digits"]
    cfg = make_cfg(*QUICK, *method, *SMALL, *_text_overrides(text_model))
    domains = build_domains(cfg)
    model = build_module(cfg, plan_stages(cfg)[0], domain_infos(domains), None).model
    assert model.semantic("target").shape == (10, WIDTH)  # not the 12 stroke attributes
    assert model.class_encoder.in_features == WIDTH
    metrics = train(cfg)["metrics"]
    assert 0.0 <= metrics["test/target/unseen_acc"] <= 1.0
    assert "test/target/gzsl_h" in metrics


def test_xlsa17_embeds_its_class_names(tmp_path, text_model):
    _write_xlsa17(tmp_path)  # classes class+0 .. class+5
    options = {"path": str(text_model), "template": "{}"}
    domain = xlsa17(str(tmp_path), val_fraction=0.25, class_text="names", text_encoder=options)
    expected = text_embeddings([f"class {i}" for i in range(6)], str(text_model))
    assert np.allclose(domain.class_attributes.numpy(), expected)


def test_missing_text_model_folder_is_one_line(make_cfg, tmp_path):
    missing = tmp_path / "no_model"
    cfg = make_cfg("dataset=zsl_digits", *SMALL, *_text_overrides(missing))
    with pytest.raises(ConfigError, match="huggingface-cli download") as err:
        build_domains(cfg)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_without_transformers_the_option_names_the_extra(monkeypatch, text_model):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r"pip install 'tlframe\[text\]'") as err:
        text_embeddings(["0", "1"], str(text_model))
    assert "\n" not in str(err.value)
