"""Saved models: load one with clear errors, move one to another device.

A model is the fitted :class:`~sklearn.pipeline.Pipeline` that
``skanomclust cluster`` saves as ``model.joblib`` (or ``joblib.dump`` of
:func:`skanomclust.make_blind_pipeline` after ``fit``). joblib files are
pickles: loading one runs code stored in it, so load only files you trust;
the command line says so every time it loads one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

__all__ = ["load_model", "move_model"]

# "review": the final step of a model written by apply-review (reviewed names).
_STEP_KINDS = (
    ("features",),
    ("localizer",),
    ("pooling", "refiner"),
    ("clustering", "review"),
)


def _not_a_model(path, why):
    return ValueError(
        f"{str(path)!r} is not a model written by 'skanomclust cluster' or 'apply-review' ({why})"
    )


def load_model(path):
    """Load a saved blind pipeline, with a clear error for anything else.

    Parameters
    ----------
    path : path-like
        A ``model.joblib`` file.

    Returns
    -------
    model : sklearn.pipeline.Pipeline
        The fitted pipeline.

    Raises
    ------
    ValueError
        If ``path`` is missing, a folder, empty, not a joblib file, or holds
        something other than a fitted blind pipeline.
    """
    import joblib
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"model {str(path)!r} is a folder, not a model file (pass the "
            "model.joblib inside the output folder of 'skanomclust cluster')"
        )
    if not path.exists():
        raise ValueError(f"model file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise _not_a_model(path, "the file is empty")
    try:
        # Every step of a model fitted on a missing device warns as it is
        # unpickled; the same message is said once for the whole model.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = joblib.load(path)
    except Exception as exc:  # a foreign or corrupt file raises anything at all
        detail = " ".join(str(exc).split())[:120]
        raise _not_a_model(
            path,
            f"it cannot be read as one: {type(exc).__name__}" + (f": {detail}" if detail else ""),
        ) from None
    said = set()
    for record in caught:
        if (str(record.message), record.category) not in said:
            said.add((str(record.message), record.category))
            warnings.warn(record.message, record.category, stacklevel=2)
    names = [name for name, _ in getattr(model, "steps", [])]
    if (
        not isinstance(model, Pipeline)
        or len(names) != len(_STEP_KINDS)
        or not all(name in kinds for name, kinds in zip(names, _STEP_KINDS, strict=True))
    ):
        raise _not_a_model(
            path,
            f"it holds a {type(model).__name__}"
            + (f" with steps {', '.join(names)}" if names else ""),
        )
    try:
        check_is_fitted(model.steps[-1][1])
    except NotFittedError:
        raise _not_a_model(path, "its pipeline is not fitted") from None
    return model


def move_model(model, device):
    """Run a fitted pipeline on ``device`` from now on (every step, in place).

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
    device : str or torch.device

    Returns
    -------
    model : sklearn.pipeline.Pipeline
    """
    from ._torch import resolve_device

    device = resolve_device(device)
    for _, step in model.steps:
        if hasattr(step, "device_"):
            step.set_params(device=str(device))
            step.device_ = device
            for name in getattr(step, "_torch_modules", ()):
                module = getattr(step, name, None)
                if isinstance(module, torch.nn.Module):
                    module.to(device)
    return model
