"""The model registry: architectures chosen by name from the config.

`build_model(name, n_classes, in_channels)` builds any registered architecture from scratch.
A new architecture is one new module in this package whose factory carries `@register_model`;
every module here is imported when the registry is first used, so nothing else changes.

Every model maps (batch, in_channels, n_mels, frames) to logits (batch, n_classes) for any crop
length, and names two of its layers for the report: `first_conv()` (the filters picture) and
`cam_layer()` (the feature maps Grad-CAM weighs).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from torch import nn

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a factory (n_classes, *, in_channels, **options) buildable by name."""

    def register(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return register


def available_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    _load_all()
    return sorted(_FACTORIES)


def build_model(name: str, n_classes: int, in_channels: int = 1, **options) -> nn.Module:
    """The named architecture with a fresh (from-scratch) initialisation."""
    _load_all()
    if name not in _FACTORIES:
        raise ValueError(f"unknown architecture {name!r}; choose from {available_models()}")
    return _FACTORIES[name](n_classes, in_channels=in_channels, **options)


def _load_all() -> None:
    """Import every module of this package once, so their @register_model lines run."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
