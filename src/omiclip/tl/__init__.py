"""Tools: embeddings and the tasks built on them."""

from ._embed import embed

__all__ = ["embed"]
