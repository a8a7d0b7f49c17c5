"""Tools: embeddings, fine-tuning and the tasks built on them."""

from ._annotate import annotate
from ._cohort import embed_cohort
from ._embed import embed
from ._finetune import finetune
from ._predex import predex
from ._retrieve import retrieve

__all__ = ["annotate", "embed", "embed_cohort", "finetune", "predex", "retrieve"]
