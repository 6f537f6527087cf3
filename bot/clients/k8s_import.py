"""Import kubernetes-asyncio's ApiClient without its ~800 generated model classes.

The packages' ``__init__`` import every API and model class, which costs about 60 MB of RSS; the bot uses only ApiClient/Configuration and works on raw JSON. The
package modules are created with their real specs but their ``__init__`` runs only when a name
that is not loaded yet is asked for (e.g. ``from kubernetes_asyncio.client import CoreV1Api``),
so code that wants the full client still gets it, unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_LAZY = ("kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


def _deferred_package(name: str) -> None:
    if name in sys.modules:
        return  # already imported for real
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    state = {"loaded": False}

    def __getattr__(attr: str) -> object:
        if state["loaded"]:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            # "from package import submodule" asks the package first: load just that module.
            return importlib.import_module(f"{name}.{attr}")
        state["loaded"] = True
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def load() -> types.ModuleType:
    """The ``kubernetes_asyncio.client`` package with ApiClient and Configuration loaded."""
    if "kubernetes_asyncio" not in sys.modules:
        # The top package's __init__ imports client (and dynamic, utils, watch... in an order
        # that avoids their import cycle): defer client first, then run that __init__ as is.
        spec = importlib.util.find_spec("kubernetes_asyncio")
        assert spec is not None and spec.loader is not None
        top = importlib.util.module_from_spec(spec)
        sys.modules["kubernetes_asyncio"] = top
        try:
            for name in _LAZY:
                _deferred_package(name)
            _light_names()
            spec.loader.exec_module(top)
        except BaseException:
            for name in ("kubernetes_asyncio", *_LAZY):
                sys.modules.pop(name, None)
            raise
    return _light_names()


def _light_names() -> types.ModuleType:
    client = sys.modules["kubernetes_asyncio.client"]
    api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
    configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
    # What kubernetes_asyncio.config imports from the package:
    client.__dict__.setdefault("ApiClient", api_client.ApiClient)
    client.__dict__.setdefault("Configuration", configuration.Configuration)
    return client
