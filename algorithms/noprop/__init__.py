"""NoProp: training without full back- or forward-propagation, as denoising of label embeddings.

Li, Teh & Pascanu, *NoProp: Training Neural Networks without Back-propagation or
Forward-propagation*, arXiv 2503.24322 (docs/learners/noprop.md). There is no official code.

* :mod:`.schedule`: the fixed cosine noise schedule, SNR, its weights and a_t, b_t, c_t.
* :mod:`.dt`: ``noprop`` (NoProp-DT), T block-local denoising blocks.
* :mod:`.continuous`: ``noprop_ct`` and ``noprop_fm``, one time-conditioned network each
  (local in time only, ``block_local = False``).
"""

from localearn.algorithms.noprop import continuous, dt, schedule

__all__ = ["continuous", "dt", "schedule"]
