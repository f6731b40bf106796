"""The model registry's storage: each registered name's builder and the head it defaults to.

Builder modules (``backbones``, ``baseline``, ``lesion_aware``) register here; ``registry``
(``create_model``) reads from here. This module imports no builder module, so neither side imports
the other's importer: no cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mammocad.models.heads import HEADS, list_heads
from mammocad.models.net import MammoNet

ModelBuilder = Callable[..., MammoNet]

#: The head of a timm model that is not registered (the plain transfer-learning top).
TIMM_DEFAULT_HEAD = "gap"


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model: its builder and the head it uses when the caller names none."""

    builder: ModelBuilder
    default_head: str | None


_MODELS: dict[str, RegisteredModel] = {}


def register_model(name: str, *, default_head: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder`` under ``name`` with its ``default_head`` (a registered head).

    ``create_model`` passes the resolved head to the builder (``default_head`` when the caller gave
    none), so the registry is the one place a model's default head is declared. A builder registered
    without one receives ``head=None`` and picks its own (``default_head(name)`` then has to build the
    model, on the meta device, to learn it). A duplicate name or an unknown head raises ValueError.
    """
    if default_head is not None and default_head not in HEADS:
        raise ValueError(f"model {name!r}: unknown default head {default_head!r}; heads: {', '.join(list_heads())}")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = RegisteredModel(builder, default_head)
        return builder

    return decorator


def registered_model(name: str) -> RegisteredModel | None:
    """The registration of ``name``, or None when it is not registered (it may still be a timm name)."""
    return _MODELS.get(name)


def list_models() -> list[str]:
    """Names of the registered models, sorted (any timm model name works too)."""
    return sorted(_MODELS)


__all__ = ["TIMM_DEFAULT_HEAD", "ModelBuilder", "RegisteredModel", "list_models", "register_model", "registered_model"]
