"""Tools: embeddings, fine-tuning and the tasks built on them."""

from ._embed import embed
from ._finetune import finetune

__all__ = ["embed", "finetune"]
