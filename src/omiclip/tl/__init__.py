"""Tools: embeddings, fine-tuning and the tasks built on them."""

from ._align import align, align_stack
from ._annotate import annotate
from ._cohort import embed_cohort
from ._decompose import decompose
from ._embed import embed
from ._finetune import finetune
from ._predex import predex
from ._retrieve import retrieve

__all__ = ["align", "align_stack", "annotate", "decompose", "embed", "embed_cohort", "finetune", "predex", "retrieve"]
