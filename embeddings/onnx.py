"""User models exported to ONNX, run by onnxruntime: ``--model onnx:PATH.onnx``.

What the model takes is read from its graph, never guessed from the input:

- one float input (batch, C, H, W): an **image** model. Pixels are scaled to [0, 1], grey repeated to RGB or RGB
  reduced to grey by luma when C says so (as :func:`embeddings.base.images_to_tensor` does), resized, centre-cropped
  and normalised. Defaults: fixed H, W in the graph -> resize to them; mean 0, std 1. ``--preprocess`` overrides:
  ``resize=N`` (shorter side to N, aspect kept) or ``resize=HxW``, ``crop=N|HxW`` (centre crop; the final size
  must be the graph's when it fixes one; with only ``resize``, the graph's size is cropped from the centre),
  ``mean``/``std`` (one value or one per channel);
- one float input (batch, d): an **array** model, given the (b, d) features of a ``.npy`` input;
- int inputs named ``input_ids`` [+ ``attention_mask``] [+ ``token_type_ids``]: a **text** model, tokenised by
  ``--tokenizer DIR`` (a local Hugging Face tokenizer directory; nothing is downloaded). An output
  (batch, seq, hidden) is pooled: attention-masked mean (default) or the first token (``--pooling cls``); an
  output (batch, dim) is taken as it is.

The embedding is the first output, or the one ``--layer NAME`` names; it must be (batch, dim) (after pooling).
Vectors are L2-normalised by default and meant for ``angular``, like the other embedders. A graph whose batch
dimension is fixed (say to 1) is run that many items at a time, the last chunk padded with copies of its last
item whose outputs are dropped. onnxruntime runs on the CPU execution provider (``--device cuda`` takes its CUDA
provider where this onnxruntime has one) with its default thread settings, which the set records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ann_bench.errors import InputError, missing_extra
from embeddings.base import Embedder, ImageSpec, ModelOptions, sha256_file

FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# files of a tokenizer directory left out of its hashes: model weights that often share the directory
WEIGHT_SUFFIXES = (".onnx", ".onnx_data", ".data", ".bin", ".safetensors", ".pt", ".pth", ".h5", ".msgpack", ".ot")
MAX_TEXT_LENGTH = 512  # tokens, when neither the graph nor the tokenizer fixes a smaller one
SIGNATURES = ("one float input (batch, C, H, W) for images, one float input (batch, d) for arrays, or int inputs "
              "input_ids[, attention_mask][, token_type_ids] for text")


def load(prefix: str, rest: str, device: str = "cpu", options: ModelOptions | None = None) -> OnnxEmbedder:
    """``--model onnx:PATH.onnx`` (``prefix`` is ``onnx``, ``rest`` the path)."""
    return OnnxEmbedder(rest, device=device, options=options or ModelOptions())


def _fixed(d: Any) -> int | None:
    """A dimension of an onnxruntime shape: its size when fixed, None when symbolic or unknown."""
    return int(d) if isinstance(d, int) and d > 0 else None


def _shape_str(shape: Any) -> str:
    if not isinstance(shape, (list, tuple)):
        return "?"
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _arg_str(arg: Any) -> str:
    """``x float [batch, 3, 32, 32]``: an input or output of the graph, as messages and provenance name it."""
    kind = arg.type.removeprefix("tensor(").removesuffix(")") if arg.type.startswith("tensor(") else arg.type
    return f"{arg.name} {kind} {_shape_str(arg.shape)}"


def _size_str(size: tuple[int, int] | int | None) -> str:
    return "native" if size is None else str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]


class OnnxEmbedder(Embedder):
    """An ONNX graph taking images, arrays or tokenised text (read from its inputs), returning (b, dim)."""

    input_kind = None
    metric = "angular"
    normalize = True
    description = "an ONNX model run by onnxruntime"
    extra = "onnx"

    def __init__(self, rest: str, device: str = "cpu", options: ModelOptions | None = None):
        super().__init__(device)
        options = options or ModelOptions()
        import onnxruntime as ort

        self.ort_version = ort.__version__
        self.name = f"onnx:{rest}"
        if not rest:
            raise InputError("--model onnx: needs the model file: --model onnx:PATH.onnx")
        self.path = Path(rest).expanduser()
        if self.path.is_dir():
            raise InputError(f"--model {self.name}: {rest!r} is a directory; give the .onnx file")
        if not self.path.is_file():
            raise InputError(f"model file {rest!r} (in --model {self.name}) does not exist")
        self.session = self._open(ort, device)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.kind = self._classify(inputs)
        self.input_kind = self.bound_kind = "text" if self.kind == "text" else self.kind
        used = {"image": ("preprocess", "layer"), "array": ("layer",), "text": ("tokenizer", "pooling", "layer")}
        options.refuse_unused(self.name, used[self.kind])
        self.output = self._choose_output(outputs, options.layer)
        self.batch = _fixed(inputs[0].shape[0]) if isinstance(inputs[0].shape, list) and inputs[0].shape else None
        if self.kind == "image":
            self._setup_image(options.preprocess or {})
            self.batch_size = 256
        elif self.kind == "array":
            self.feature_dim = _fixed(self.inputs[0].shape[1])
            self.batch_size = 1024
        else:
            self._setup_text(options)
            self.batch_size = 64
        rank = len(self.output.shape) if isinstance(self.output.shape, list) else None
        if rank:  # 0 or None: not known before the model runs
            want = (2, 3) if self.kind == "text" else (2,)
            if rank not in want:
                raise InputError(f"--model {self.name}: output {_arg_str(self.output)} is {rank}-d; the embedding "
                                 f"must be (batch, dim){' or (batch, seq, hidden) to pool' if self.kind == 'text' else ''}"
                                 f"{self._other_outputs(outputs)}")
            if self.kind == "text":
                self._check_pooling(rank, options.pooling)
            if _fixed(self.output.shape[-1]) and rank == 2 or self.kind == "text":
                self.dim = _fixed(self.output.shape[-1])

    # ---- loading ------------------------------------------------------------------------------------------
    def _open(self, ort, device: str):
        if device == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif device == "cuda" or device.startswith("cuda:"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InputError(f"--device {device}: this onnxruntime ({ort.__version__}) has no CUDA execution "
                                 "provider (install onnxruntime-gpu), use --device cpu")
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            raise InputError(f"unknown --device {device!r}; use cpu or cuda")
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's concern
        self.session_options = so
        try:
            return ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as exc:  # not ONNX, truncated, an operator this onnxruntime lacks, ...
            raise InputError(f"cannot load ONNX model {str(self.path)!r}: {_first_line(exc)} (export it with "
                             "torch.onnx.export)") from None

    def _classify(self, inputs) -> str:
        listed = ", ".join(_arg_str(a) for a in inputs) or "none"
        refuse = f"--model {self.name}: unsupported inputs ({listed}); ann-bench runs {SIGNATURES}"
        self.inputs = list(inputs)
        floats = [a for a in inputs if a.type in FLOAT_TYPES]
        if len(floats) == 1 and len(inputs) == 1:
            rank = len(floats[0].shape) if isinstance(floats[0].shape, list) else 0
            if rank == 4:
                return "image"
            if rank == 2:
                return "array"
            raise InputError(refuse)
        if floats or not inputs:
            raise InputError(refuse)
        roles: dict[str, Any] = {}
        for a in inputs:
            role = a.name.lower()
            if role not in TEXT_INPUTS or a.type not in INT_TYPES or role in roles:
                raise InputError(refuse)
            if not isinstance(a.shape, list) or len(a.shape) != 2:
                raise InputError(refuse)
            roles[role] = a
        if "input_ids" not in roles:
            raise InputError(refuse)
        self.text_inputs = roles
        return "text"

    def _other_outputs(self, outputs) -> str:
        others = [o.name for o in outputs if o.name != self.output.name]
        return f"; choose another output with --layer ({', '.join(others)})" if others else ""

    def _choose_output(self, outputs, layer: str | None):
        if not outputs:
            raise InputError(f"--model {self.name}: the graph has no outputs")
        if layer is None:
            return outputs[0]
        for o in outputs:
            if o.name == layer:
                return o
        raise InputError(f"--layer {layer!r}: model {self.name} has no output of that name; its outputs: "
                         f"{', '.join(_arg_str(o) for o in outputs)}")

    def _setup_image(self, pre: dict[str, Any]) -> None:
        try:  # images are resized in torch (images_to_tensor): imported now, before any work and not timed
            import torch  # noqa: F401
        except ModuleNotFoundError:
            raise missing_extra("torch", f"--model {self.name} (an image model: resizing its images)") from None
        shape = self.inputs[0].shape
        channels, h, w = (_fixed(d) for d in shape[1:4])
        if channels not in (None, 1, 3):
            raise InputError(f"--model {self.name}: input {_arg_str(self.inputs[0])} takes {channels} channels; "
                             "images are given with 1 (grey) or 3 (RGB)")
        graph = (h, w) if h and w else None
        resize, crop = pre.get("resize"), pre.get("crop")
        crop = (crop, crop) if isinstance(crop, int) else crop
        if graph and crop and tuple(crop) != graph:
            raise InputError(f"--preprocess crop={_size_str(crop)} does not fit model {self.name}: its input "
                             f"{_arg_str(self.inputs[0])} fixes {graph[0]}x{graph[1]}")
        final = graph or (tuple(crop) if crop else None) or (tuple(resize) if isinstance(resize, tuple) else None)
        if final is None and isinstance(resize, int):
            raise InputError(f"--preprocess resize={resize} keeps each image's aspect, and model {self.name} fixes "
                             "no input size: add crop=N (or give resize=HxW)")
        if final and resize is not None:
            small = min(final) > resize if isinstance(resize, int) else (resize[0] < final[0] or resize[1] < final[1])
            if small:
                raise InputError(f"--preprocess resize={_size_str(resize)} is smaller than the crop "
                                 f"{final[0]}x{final[1]}; resize to at least the crop")
        mean, std = tuple(pre.get("mean", (0.0,))), tuple(pre.get("std", (1.0,)))
        for name, v in (("mean", mean), ("std", std)):
            if channels == 1 and len(v) == 3:
                raise InputError(f"--preprocess {name}= has 3 values but model {self.name} takes 1-channel images")
        self.final = final
        self.resize = resize
        self.image = ImageSpec(size=None, channels=channels or 0, mean=mean, std=std)

    def _setup_text(self, options: ModelOptions) -> None:
        ids = ", ".join(_arg_str(a) for a in self.inputs)
        if options.tokenizer is None:
            raise InputError(f"--model {self.name} is a text model (inputs {ids}): give its tokenizer, --tokenizer "
                             "DIR (a local Hugging Face tokenizer directory, from tokenizer.save_pretrained)")
        tok_dir = Path(options.tokenizer).expanduser()
        if not tok_dir.is_dir():
            raise InputError(f"--tokenizer {options.tokenizer!r} is not a directory; give a local Hugging Face "
                             "tokenizer directory (tokenizer.save_pretrained(DIR))")
        try:
            import transformers  # noqa: F401
        except ModuleNotFoundError:
            raise missing_extra("transformers", f"--model {self.name} (a text model's tokenizer)") from None
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except Exception as exc:
            raise InputError(f"cannot load the tokenizer in {str(tok_dir)!r}: {_first_line(exc)}") from None
        self.tokenizer_dir = tok_dir
        seq = _fixed(self.text_inputs["input_ids"].shape[1])
        limit = getattr(self.tokenizer, "model_max_length", None)
        limit = int(limit) if isinstance(limit, int) and 0 < limit < 100_000 else MAX_TEXT_LENGTH
        self.seq_fixed = seq is not None
        self.max_length = seq or min(limit, MAX_TEXT_LENGTH)
        self.pooling = options.pooling

    def _check_pooling(self, rank: int, pooling: str | None) -> None:
        if rank == 2 and pooling is not None:
            raise InputError(f"--pooling {pooling} does not apply: output {_arg_str(self.output)} of model "
                             f"{self.name} is already (batch, dim)")
        self.pooling = None if rank == 2 else pooling or "mean"

    # ---- running ------------------------------------------------------------------------------------------
    def bind(self, kind: str) -> None:
        if kind != self.kind:
            raise InputError(f"--model {self.name} takes {self.kind} input (its inputs: "
                             f"{', '.join(_arg_str(a) for a in self.inputs)}), but the input holds {kind} items")
        self.bound_kind = kind

    def embed(self, batch: Any) -> np.ndarray:
        if self.kind == "image":
            feeds = {self.inputs[0].name: self._images(batch)}
            mask = None
        elif self.kind == "array":
            feeds, mask = {self.inputs[0].name: self._arrays(batch)}, None
        else:
            feeds, mask = self._tokens(batch)
        y = self._run(feeds)
        if self.kind == "text" and y.ndim == 3:
            if self.pooling is None:
                self.pooling = "mean"
            if self.pooling == "cls":
                y = y[:, 0]
            else:
                m = mask.astype(np.float32)[:, :, None]
                y = (y.astype(np.float32) * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        if y.ndim != 2:
            raise InputError(f"model {self.name} returned output {self.output.name!r} of shape {tuple(y.shape)} for "
                             f"a batch of {len(y)}; the embedding must be (batch, dim)"
                             + (" or (batch, seq, hidden) to pool" if self.kind == "text" else ""))
        if self.dim is None:
            self.dim = int(y.shape[1])
        return np.ascontiguousarray(y, dtype=np.float32)

    def _images(self, batch: Any) -> np.ndarray:
        import torch

        from embeddings.base import images_to_tensor

        if isinstance(batch, np.ndarray) and batch.ndim in (3, 4):
            groups = [batch]
        else:
            shapes = {np.shape(im) for im in batch}
            groups = [np.stack(batch)] if len(shapes) == 1 else [np.asarray(im)[None] for im in batch]
        if self.final is None and self.resize is None:  # a graph of any size: every image at the first one's
            return images_to_tensor(batch, self.image).numpy().astype(self.input_dtype, copy=False)
        out = []
        for g in groups:
            h, w = g.shape[1:3]
            size = self._resized(h, w)
            x = images_to_tensor(g, ImageSpec(size=size, channels=self.image.channels, mean=self.image.mean,
                                              std=self.image.std))
            out.append(self._crop(x, (h, w)))
        x = out[0] if len(out) == 1 else torch.cat(out)
        return x.numpy().astype(self.input_dtype, copy=False)

    def _resized(self, h: int, w: int) -> tuple[int, int]:
        if self.resize is None:
            return self.final
        if isinstance(self.resize, tuple):
            return self.resize
        n = self.resize  # shorter side to n, as torchvision's Resize(n)
        return (n, max(1, int(n * w / h))) if h <= w else (max(1, int(n * h / w)), n)

    def _crop(self, x, original: tuple[int, int]):
        H, W = x.shape[2:]
        ch, cw = self.final
        if (H, W) == (ch, cw):
            return x
        if H < ch or W < cw:
            raise InputError(f"an image of {original[0]}x{original[1]} resizes to {H}x{W}, smaller than the crop "
                             f"{ch}x{cw} of model {self.name}; raise --preprocess resize=")
        top, left = int(round((H - ch) / 2.0)), int(round((W - cw) / 2.0))
        return x[:, :, top : top + ch, left : left + cw]

    @property
    def input_dtype(self):
        return FLOAT_TYPES.get(self.inputs[0].type, np.float32)

    def _arrays(self, batch: Any) -> np.ndarray:
        X = np.asarray(batch)
        if X.ndim != 2:
            raise InputError(f"model {self.name} takes (batch, d) arrays; the items are {X.ndim - 1}-d arrays")
        if self.feature_dim is not None and X.shape[1] != self.feature_dim:
            raise InputError(f"model {self.name} takes {self.feature_dim}-d features (input "
                             f"{_arg_str(self.inputs[0])}), but the input's items are {X.shape[1]}-d")
        return np.ascontiguousarray(X, dtype=self.input_dtype)

    def _tokens(self, batch: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        enc = self.tokenizer([str(t) for t in batch], padding="max_length" if self.seq_fixed else True,
                             truncation=True, max_length=self.max_length, return_tensors="np")
        ids = np.asarray(enc["input_ids"])
        mask = np.asarray(enc["attention_mask"]) if "attention_mask" in enc else np.ones_like(ids)
        given = {"input_ids": ids, "attention_mask": mask,
                 "token_type_ids": np.asarray(enc["token_type_ids"]) if "token_type_ids" in enc else np.zeros_like(ids)}
        feeds = {a.name: given[role].astype(INT_TYPES[a.type], copy=False) for role, a in self.text_inputs.items()}
        return feeds, mask

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The chosen output for ``feeds``, ``self.batch`` rows at a time when the graph fixes its batch size."""
        n = len(next(iter(feeds.values())))
        if self.batch is None or self.batch == n:
            return self._call(feeds, n)
        parts = []
        for start in range(0, n, self.batch):
            chunk = {k: v[start : start + self.batch] for k, v in feeds.items()}
            b = len(next(iter(chunk.values())))
            if b < self.batch:  # pad with copies of the last item; their outputs are dropped
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], self.batch - b, axis=0)]) for k, v in chunk.items()}
            parts.append(self._call(chunk, b)[:b])
        return np.concatenate(parts)

    def _call(self, feeds: dict[str, np.ndarray], n: int) -> np.ndarray:
        try:
            y = self.session.run([self.output.name], feeds)[0]
        except Exception as exc:  # the user's graph failed on our batch: say whose and on what
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
            raise InputError(f"model {self.name} failed on a batch of {shapes}: {_first_line(exc)}") from None
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != len(next(iter(feeds.values()))):
            raise InputError(f"model {self.name} returned output {self.output.name!r} of shape {tuple(y.shape)} for "
                             f"a batch of {len(next(iter(feeds.values())))}; expected the batch first")
        return y

    def provenance(self) -> dict[str, Any]:
        so = self.session_options
        threads = {"intra_op": so.intra_op_num_threads, "inter_op": so.inter_op_num_threads,
                   "execution_mode": str(so.execution_mode).rpartition(".")[2]}
        out: dict[str, Any] = {
            "model": self.name, "model_format": "onnx", "model_path": str(self.path.resolve()),
            "checkpoint_sha256": sha256_file(self.path), "onnx_kind": self.kind,
            "onnx_inputs": [_arg_str(a) for a in self.inputs], "onnx_output": _arg_str(self.output),
            "onnx_batch": self.batch or "dynamic", "onnxruntime": self.ort_version,
            "onnx_providers": self.session.get_providers(),
            "onnx_threads": {**threads, "note": "0: onnxruntime's default (one intra-op thread per physical core)",
                             "cpu_count": os.cpu_count()},
        }
        if self.kind == "image":
            pre: dict[str, Any] = {"size": list(self.final) if self.final else "native"}
            if self.resize is not None:  # resized, then the size cropped from the centre
                pre.update(resize=_size_str(self.resize), crop=list(self.final) if self.final else None)
            out["preprocessing"] = {**pre, "channels": self.image.channels or "as decoded", "scale": "uint8 / 255",
                                    "mean": list(self.image.mean), "std": list(self.image.std)}
        if self.kind == "text":
            out.update(pooling=self.pooling or "none", tokenizer=str(self.tokenizer_dir.resolve()),
                       tokenizer_max_length=self.max_length,
                       tokenizer_files={p.name: sha256_file(p) for p in sorted(self.tokenizer_dir.iterdir())
                                        if p.is_file() and p.suffix.lower() not in WEIGHT_SUFFIXES
                                        and p.resolve() != self.path.resolve()})
        return out
