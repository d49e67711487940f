"""Ready-made style networks by name: nst's catalogue, the model cache, and ``nst-models``.

::

    nst-models list                          # the catalogue, and what is cached here
    nst-models pull mosaic                   # download (pinned sha256), import, gate, cache
    nst-stylize mosaic photo.jpg -o out/     # a name works wherever a model file does

    from nst_runtime import Stylizer
    with Stylizer.open("mosaic") as s: ...

Standard library only (``urllib`` for downloads); pulling imports the network with the export stage
(``nst[export]``). See docs/models.md.
"""

from .catalog import Catalog, CatalogEntry, CatalogFile, load_catalog
from .download import download_pinned
from .store import (
    CachedModel,
    ModelStatus,
    add_model,
    cached_model,
    cached_models,
    list_models,
    model_argument,
    models_root,
    nst_home,
    pull_model,
    remove_model,
    resolve_model,
)

__all__ = [
    "CachedModel",
    "Catalog",
    "CatalogEntry",
    "CatalogFile",
    "ModelStatus",
    "add_model",
    "cached_model",
    "cached_models",
    "download_pinned",
    "list_models",
    "load_catalog",
    "model_argument",
    "models_root",
    "nst_home",
    "pull_model",
    "remove_model",
    "resolve_model",
]
