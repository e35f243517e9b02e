"""Class embeddings from a text encoder, so zero-shot classes need no hand-made attributes.

Each class name, put in a prompt template, goes through a local Hugging Face text model
(transformers' ``AutoTokenizer`` + ``AutoModel``, e.g. a sentence-transformers checkpoint);
the last hidden state is averaged over the real tokens (the attention mask) and scaled to
unit length, as sentence-embedding models are used. Weights are read only from a local
folder, never downloaded. A run builds its domains more than once (source, target,
pairing), so the embeddings of a (model folder content, texts) key are kept in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tlframe.errors import ConfigError

CLASS_TEXTS = ("names",)
EXAMPLE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

_cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}


def class_phrase(name: str) -> str:
    """A class name as words: ``001.Black_footed_Albatross`` -> ``Black footed Albatross``,
    ``grizzly+bear`` -> ``grizzly bear`` (xlsa17's spellings)."""
    return re.sub(r"[_+]+", " ", re.sub(r"^\d+\.", "", name)).strip()


def class_text_embeddings(
    class_text: str | None, text_encoder: Mapping[str, str | None] | None, names: Sequence[str]
) -> np.ndarray | None:
    """``[classes, width]`` embeddings of the class names when ``class_text`` asks for
    them; None leaves the attribute table in place."""
    if class_text is None:
        return None
    if class_text not in CLASS_TEXTS:
        raise ConfigError(
            f"class_text={class_text!r}; choose {', '.join(CLASS_TEXTS)} or null (attributes)"
        )
    options = dict(text_encoder or {})
    if not options.get("path"):
        raise ConfigError(
            "class_text=names needs text_encoder.path=<local folder of a Hugging Face text "
            f"model>, e.g. huggingface-cli download {EXAMPLE_MODEL} --local-dir <folder>"
        )
    return text_embeddings(names, str(options["path"]), str(options.get("template") or "{}"))


def text_embeddings(names: Sequence[str], path: str, template: str = "{}") -> np.ndarray:
    """``[classes, width]`` unit-length, mean-pooled embeddings of ``template`` filled with
    each class's phrase, from the model in the local folder ``path``."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"text_encoder.path: no model folder at {folder}; get one with: "
            f"huggingface-cli download {EXAMPLE_MODEL} --local-dir {folder}"
        )
    if template.count("{}") != 1:
        raise ConfigError(f"text_encoder.template={template!r} needs one {{}} for the class name")
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:
        raise ConfigError(
            "class_text=names needs the transformers package: pip install 'tlframe[text]'"
        ) from err
    texts = tuple(template.replace("{}", class_phrase(name)) for name in names)
    key = (_folder_digest(folder), texts)
    if key not in _cache:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"cannot load a text model from {folder}: {reason}") from err
        with torch.no_grad():
            batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        _cache[key] = F.normalize(pooled.float(), dim=1).numpy()
    return _cache[key].copy()


def _folder_digest(folder: Path) -> str:
    """The model folder's content, so a replaced model is never served stale embeddings."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
