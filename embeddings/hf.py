"""Hugging Face models from local directories: ``st:DIR``, ``hf:DIR`` and ``clip:DIR`` (``--model``).

- ``st:DIR``: a sentence-transformers model directory (``SentenceTransformer(NAME).save(DIR)``), run through its
  own modules (tokenizer, transformer, pooling, normalisation): the vectors of ``SentenceTransformer.encode``.
  Text input.
- ``hf:DIR``: a transformers encoder (``AutoModel`` + ``AutoTokenizer``, ``save_pretrained``); the token
  embeddings (``last_hidden_state``) pooled by their attention-masked mean (``--pooling mean``, the default) or
  the first token (``--pooling cls``). Text input, truncated at the tokenizer's ``model_max_length`` capped at
  the model's position embeddings.
- ``clip:DIR``: a transformers CLIP checkpoint (``CLIPModel`` + ``CLIPProcessor``, ``save_pretrained``): images
  through ``get_image_features`` and texts through ``get_text_features``, into one space. Images are prepared by
  the checkpoint's own image processor, the PIL one (no torchvision here): resize of the shortest edge (bicubic),
  centre crop, mean/std, each overridable with ``--preprocess``.

Every form reads a local directory only (``local_files_only=True``, HF_HUB_OFFLINE=1): a hub name that is not a
directory is refused in one line saying how to save one. The provenance names the form, the directory, a sha256
over its files, and how the vectors were pooled or the images prepared.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.errors import InputError
from embeddings.base import ModelOptions, TorchEmbedder, sha256_file
from embeddings.minilm import _offline

SAVE_HINTS = {
    "st": "SentenceTransformer(NAME).save(DIR)",
    "hf": "AutoModel.from_pretrained(NAME).save_pretrained(DIR) and AutoTokenizer.from_pretrained(NAME)"
          ".save_pretrained(DIR)",
    "clip": "CLIPModel.from_pretrained(NAME).save_pretrained(DIR) and CLIPProcessor.from_pretrained(NAME)"
            ".save_pretrained(DIR)",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
POOLINGS = ("mean", "cls")
# Models whose position ids start after the padding index: usable positions = max_position_embeddings - 2.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2, "longformer": 2}


def load(prefix: str, rest: str, device: str = "cpu", options: ModelOptions | None = None) -> TorchEmbedder:
    """The embedder ``PREFIX:REST`` names (prefix ``st``, ``hf`` or ``clip``); InputError in one line otherwise."""
    options = options or ModelOptions()
    form = f"{prefix}:{rest}"
    if prefix == "st":
        if options.pooling is not None:
            raise InputError(f"--pooling does not apply to --model {form}: a sentence-transformers directory pools "
                             "as its own modules say (1_Pooling/config.json); use --model hf:DIR to choose the "
                             "pooling of a plain transformers encoder")
        options.refuse_unused(form, used=())
        return SentenceTransformerEmbedder(local_dir(prefix, rest), device=device, spec=form)
    if prefix == "hf":
        options.refuse_unused(form, used=("pooling",))
        return HFEncoder(local_dir(prefix, rest), pooling=options.pooling or "mean", device=device, spec=form)
    if prefix == "clip":
        options.refuse_unused(form, used=("preprocess",))
        return CLIPEmbedder(local_dir(prefix, rest), preprocess=options.preprocess, device=device, spec=form)
    raise InputError(f"unknown model form {prefix!r}; this module loads st:, hf: and clip:")


def local_dir(prefix: str, rest: str) -> Path:
    """``rest`` as an existing local model directory; InputError (one line) for anything else: nothing is
    downloaded, so a hub name is refused with how to save that model as a directory."""
    if not rest.strip():
        raise InputError(f"--model {prefix}: needs a local directory: --model {prefix}:DIR")
    path = Path(rest).expanduser()
    if path.is_file():
        raise InputError(f"--model {prefix}:{rest}: {rest!r} is a file; {prefix}: takes a model directory "
                         f"(saved with {SAVE_HINTS[prefix]})")
    if not path.is_dir():
        raise InputError(f"--model {prefix}:{rest}: no such local directory; only local directories are read, "
                         f"nothing is downloaded — save the model once on a machine with internet: "
                         f"{SAVE_HINTS[prefix]}, and pass --model {prefix}:DIR")
    config = "modules.json or config.json" if prefix == "st" else "config.json"
    if not any((path / name).is_file() for name in config.split(" or ")):
        raise InputError(f"--model {prefix}:{rest}: the directory holds no model ({config} is missing); save one "
                         f"with {SAVE_HINTS[prefix]}")
    return path


def sha256_dir(path: Path) -> tuple[str, int]:
    """(sha256 over the sorted (relative path, file sha256) list of every file in ``path``, file count); hidden
    files and folders (.git, .cache) are left out. Any change to weights, tokenizer or config changes it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest(), len(files)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _check_weights(path: Path, form: str) -> None:
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise InputError(f"--model {form}: the directory holds no weights (none of {', '.join(WEIGHT_FILES[:2])}); "
                         f"save the model with {SAVE_HINTS[form.partition(':')[0]]}")


def _to_device(features: dict[str, Any], device: str) -> dict[str, Any]:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def _versions() -> str:
    import transformers

    try:
        import sentence_transformers

        st = f", sentence-transformers {sentence_transformers.__version__}"
    except ImportError:
        st = ""
    return f"transformers {transformers.__version__}{st}"


class _DirectoryEmbedder(TorchEmbedder):
    """Shared by the three forms: the directory, its digest, the one-line load errors."""

    model_format = ""
    batch_size = 64
    metric = "angular"
    normalize = True

    def __init__(self, path: Path, device: str, spec: str):
        super().__init__(device)
        _offline()
        self.path = path
        self.name = spec

    def provenance(self) -> dict[str, Any]:
        digest, count = sha256_dir(self.path)
        return {"model": self.name, "model_format": self.model_format, "model_path": str(self.path.resolve()),
                "checkpoint_sha256": digest, "checkpoint_files": count, "model_source": _versions()}


class SentenceTransformerEmbedder(_DirectoryEmbedder):
    """A local sentence-transformers directory, run through its own modules (``encode``'s vectors)."""

    input_kind = "text"
    model_format = "sentence-transformers"
    description = "st:DIR — a local sentence-transformers model directory; text"

    def __init__(self, path: Path, device: str = "cpu", spec: str = ""):
        super().__init__(path, device, spec or f"st:{path}")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(path), device=self.device, local_files_only=True,
                                             trust_remote_code=False)
        except Exception as exc:  # a directory that is not a sentence-transformers model: say so in one line
            raise InputError(f"--model {self.name}: not a loadable sentence-transformers directory: "
                             f"{_first_line(exc)}") from None
        self.model.eval()
        self.module = self.model
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim()) if dim() else None
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize

    def pooling(self) -> str:
        """The pooling the model's modules do ("mean", "cls", ...; "none" when there is no Pooling module)."""
        for module in self.model:
            if type(module).__name__ == "Pooling":
                mode = getattr(module, "pooling_mode", None)
                if mode is None and hasattr(module, "get_pooling_mode_str"):
                    mode = module.get_pooling_mode_str()
                return str(mode)
        return "none"

    def prepare(self, batch: Any) -> dict[str, Any]:
        return _to_device(self._preprocess(list(batch)), self.device)

    def forward(self, features: dict[str, Any]):
        return self.model(features)["sentence_embedding"]

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "pooling": self.pooling(),
                "modules": ", ".join(type(m).__name__ for m in self.model),
                "model_max_seq_length": int(self.model.max_seq_length or 0)}


class HFEncoder(_DirectoryEmbedder):
    """A local transformers encoder: ``last_hidden_state`` pooled by mean (attention-masked) or first token."""

    input_kind = "text"
    model_format = "transformers"
    description = "hf:DIR — a local Hugging Face transformers encoder (mean or CLS pooling); text"

    def __init__(self, path: Path, pooling: str = "mean", device: str = "cpu", spec: str = ""):
        super().__init__(path, device, spec or f"hf:{path}")
        if pooling not in POOLINGS:
            raise InputError(f"--pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise InputError(f"--model {self.name}: config.json does not load: {_first_line(exc)}") from None
        kind = getattr(config, "model_type", "?")
        if kind in ("clip", "siglip", "clip_text_model", "clip_vision_model"):
            raise InputError(f"--model {self.name}: the directory holds a {kind} model, whose outputs are not "
                             "token embeddings; use --model clip:DIR")
        if getattr(config, "is_encoder_decoder", False):
            raise InputError(f"--model {self.name}: the directory holds an encoder-decoder ({kind}); hf: takes an "
                             "encoder whose output is last_hidden_state (BERT, RoBERTa, MPNet, E5, BGE, ...)")
        _check_weights(path, self.name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise InputError(f"--model {self.name}: no tokenizer loads from the directory ({_first_line(exc)}); "
                             "save it beside the model: AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR)"
                             ) from None
        try:
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        except Exception as exc:
            raise InputError(f"--model {self.name}: the model does not load: {_first_line(exc)}") from None
        self.module = self.model
        self.model_type = kind
        positions = getattr(config, "max_position_embeddings", None)
        cap = positions - _POSITION_OFFSET.get(kind, 0) if positions else None
        limit = self.tokenizer.model_max_length
        self.max_length = int(min(limit, cap) if cap else limit) if limit and limit < 10**9 else int(cap or 512)
        self._probe()

    def _probe(self) -> None:
        """One short text through the model: it must return last_hidden_state (b, tokens, hidden)."""
        import torch

        with torch.inference_mode():
            try:
                out = self.model(**self.prepare(["a"]))
            except Exception as exc:
                raise InputError(f"--model {self.name}: the {self.model_type} model does not run as an encoder on "
                                 f"tokenised text: {_first_line(exc)}") from None
        hidden = getattr(out, "last_hidden_state", None)
        if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
            raise InputError(f"--model {self.name}: the {self.model_type} model returns no last_hidden_state; hf: "
                             "takes an encoder of token embeddings (BERT, RoBERTa, MPNet, E5, BGE, ...)")
        self.dim = int(hidden.shape[-1])

    def prepare(self, batch: Any) -> dict[str, Any]:
        features = self.tokenizer(list(batch), padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="pt")
        return _to_device(dict(features), self.device)

    def forward(self, features: dict[str, Any]):
        hidden = self.model(**features).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "model_type": self.model_type, "pooling": self.pooling,
                "model_max_seq_length": self.max_length}


class CLIPEmbedder(_DirectoryEmbedder):
    """A local transformers CLIP checkpoint: images and texts into one space (``get_image_features`` /
    ``get_text_features``), L2-normalised, angular. Bind it to the input's kind before embedding."""

    input_kind = "image"  # and text: see accepts
    model_format = "clip (transformers)"
    description = "clip:DIR — a local CLIP checkpoint (transformers): images and texts in one space"

    def __init__(self, path: Path, preprocess: dict[str, Any] | None = None, device: str = "cpu", spec: str = ""):
        super().__init__(path, device, spec or f"clip:{path}")
        from transformers import AutoConfig, AutoTokenizer, CLIPModel

        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise InputError(f"--model {self.name}: config.json does not load: {_first_line(exc)}") from None
        if getattr(config, "model_type", None) != "clip":
            raise InputError(f"--model {self.name}: the directory holds a {getattr(config, 'model_type', '?')} model, "
                             "not CLIP; clip: takes a transformers CLIPModel (open_clip checkpoints are not read)")
        _check_weights(path, self.name)
        try:
            self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.image_processor = _image_processor(path)
        except Exception as exc:
            raise InputError(f"--model {self.name}: the checkpoint does not load (model, tokenizer and image "
                             f"processor are needed): {_first_line(exc)}") from None
        self.module = self.model
        self.dim = int(config.projection_dim)
        positions = int(config.text_config.max_position_embeddings)
        limit = self.tokenizer.model_max_length
        self.max_length = min(int(limit), positions) if limit and limit < 10**9 else positions
        self.image_size = int(config.vision_config.image_size)
        self.overrides = preprocess or {}
        self.image_settings = self._image_settings(self.overrides)

    # --- input kinds ---------------------------------------------------------------------------------------
    def accepts(self, kind: str) -> bool:
        return kind in ("image", "text")

    def bind(self, kind: str) -> None:
        if not self.accepts(kind):
            raise InputError(f"model {self.name!r} takes image or text input, but the input holds {kind} items")
        if kind == "text" and self.overrides:
            raise InputError(f"--preprocess applies to images, but the input of --model {self.name} holds text")
        self.bound_kind = kind

    # --- images ----------------------------------------------------------------------------------------------
    def _image_settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The image processor's keyword arguments: size, crop_size, image_mean, image_std (checkpoint values,
        overridden by ``--preprocess``); InputError when the crop does not fit the vision tower."""
        ip = self.image_processor
        size, crop = _as_dict(ip.size), _as_dict(ip.crop_size)
        if "resize" in overrides:
            r = overrides["resize"]
            size = {"shortest_edge": r} if isinstance(r, int) else {"height": r[0], "width": r[1]}
        if "crop" in overrides:
            c = overrides["crop"]
            crop = {"height": c, "width": c} if isinstance(c, int) else {"height": c[0], "width": c[1]}
        out_hw = (crop["height"], crop["width"]) if ip.do_center_crop and crop else (size.get("height"),
                                                                                      size.get("width"))
        if out_hw != (self.image_size, self.image_size):
            raise InputError(f"--model {self.name}: images would reach the model at {out_hw[0]}x{out_hw[1]}, but its "
                             f"vision tower takes {self.image_size}x{self.image_size}; set --preprocess "
                             f"crop={self.image_size}")
        mean = tuple(overrides.get("mean", ip.image_mean))
        std = tuple(overrides.get("std", ip.image_std))
        mean, std = (mean * 3 if len(mean) == 1 else mean), (std * 3 if len(std) == 1 else std)
        return {"size": size, "crop_size": crop, "image_mean": list(mean), "image_std": list(std)}

    def pixel_values(self, images) -> Any:
        """Images (the input readers' uint8 arrays) -> (b, 3, H, W) float32 pixel values, as the checkpoint's
        image processor (PIL backend) makes them with :meth:`_image_settings`."""
        rgb = [_rgb(np.asarray(im)) for im in (images if not isinstance(images, np.ndarray) else list(images))]
        return self.image_processor(rgb, return_tensors="pt", **self.image_settings)["pixel_values"]

    # --- the model --------------------------------------------------------------------------------------------
    def prepare(self, batch: Any) -> dict[str, Any]:
        if self.bound_kind == "text":
            features = self.tokenizer(list(batch), padding=True, truncation=True, max_length=self.max_length,
                                      return_tensors="pt")
            return _to_device(dict(features), self.device)
        return {"pixel_values": self.pixel_values(batch).to(self.device)}

    def forward(self, features: dict[str, Any]):
        if "pixel_values" in features:
            out = self.model.get_image_features(**features)
        else:
            out = self.model.get_text_features(**features)
        return _features(out)

    def provenance(self) -> dict[str, Any]:
        info: dict[str, Any] = {**super().provenance(), "modality": self.bound_kind,
                                "clip_projection_dim": self.dim}
        if self.bound_kind == "text":
            info["model_max_seq_length"] = self.max_length
        else:
            s = self.image_settings
            info["model_input"] = {"resize": s["size"], "crop": s["crop_size"], "mean": s["image_mean"],
                                   "std": s["image_std"], "resample": _resample_name(self.image_processor),
                                   "processor": type(self.image_processor).__name__,
                                   **({"overridden": sorted(self.overrides)} if self.overrides else {})}
        return info


def _features(out):
    """transformers < 5 returns the projected features as a tensor; 5.x a model output whose pooler_output
    holds them."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _image_processor(path: Path):
    """The checkpoint's CLIP image processor on the PIL/numpy backend (the default one needs torchvision)."""
    try:
        from transformers import CLIPImageProcessorPil as cls  # transformers >= 5
    except ImportError:
        from transformers import CLIPImageProcessor as cls  # transformers 4.x: the slow one is numpy/PIL
    return cls.from_pretrained(str(path), local_files_only=True)


def _as_dict(size) -> dict[str, int]:
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size}
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {k: int(v) for k, v in items if v is not None and k in ("height", "width", "shortest_edge")}


def _resample_name(ip) -> str:
    names = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    r = getattr(ip, "resample", None)
    return names.get(int(r), str(r)) if r is not None else "?"


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) -> (H, W, 3) uint8 for the image processor."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3] if image.shape[2] == 4 else image
