"""`torch.library` operators of dash_flex (namespace ``dash_flex::``).

Importing this package registers every operator, its fake (meta) kernel and its autograd
formula, in one place. Each sub-folder holds one operator family: its plain-torch
implementation beside its Triton kernels.
"""

from . import (
    block_summary,  # noqa: F401,E402  (registers dash_flex::block_summaries*)
    coarse_selection,  # noqa: F401  (registers dash_flex::coarse_selection*)
    entmax,  # noqa: F401  (registers dash_flex::entmax_*)
    kv_cache,  # noqa: F401  (registers dash_flex::cache_write)
    selection,  # noqa: F401,E402  (registers dash_flex::log_prior*, dash_flex::selection_tables)
    sparse_attention,  # noqa: F401  (registers dash_flex::sparse_attention_forward)
    sparse_decode,  # noqa: F401  (registers dash_flex::sparse_decode)
)
