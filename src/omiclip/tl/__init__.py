"""Tools: embeddings, fine-tuning and the tasks built on them (imported on first use)."""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "_align": ["align", "align_stack"],
        "_annotate": ["annotate"],
        "_cohort": ["embed_cohort"],
        "_decompose": ["decompose"],
        "_embed": ["embed"],
        "_finetune": ["finetune"],
        "_predex": ["predex"],
        "_retrieve": ["retrieve"],
    },
)
