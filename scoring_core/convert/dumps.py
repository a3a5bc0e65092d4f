"""What the readers of the libraries' model dumps (``xgboost_json``, ``lightgbm_text``) share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from milepost.core.errors import InvalidArgument


@contextmanager
def reading_model(what: str) -> Iterator[None]:
    """While a reader walks a model document, a KeyError, TypeError, ValueError or
    IndexError means the document is malformed: InvalidArgument naming ``what``."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise InvalidArgument(f"{what}: malformed ({type(err).__name__}: {err})") from err


def wrapper_classes(wrapper: Any) -> list[Any] | None:
    """The class labels of a library's scikit-learn wrapper (``classes_``), None without them."""
    labels = getattr(wrapper, "classes_", None)
    return None if labels is None else np.asarray(labels).tolist()
