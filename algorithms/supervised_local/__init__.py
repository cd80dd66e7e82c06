"""Supervised local learning: DGL, InfoPro and AugLocal over any network's blocks.

One implementation (:mod:`.learner`: blocks with auxiliary networks, each trained from its own
loss on its detached input), three registered learners:

* ``dgl``: Belilovsky, Eickenberg & Oyallon, ICML 2020: cross-entropy of an auxiliary head
  (:mod:`.dgl`);
* ``infopro``: Wang et al., ICLR 2021: task cross-entropy plus a reconstruction term through a
  decoder, weights interpolated over the modules (:mod:`.infopro`);
* ``auglocal``: Ma et al., ICLR 2024: auxiliary networks made of fresh copies of later blocks
  (:mod:`.auglocal`).

Each trains ``mlp:``/``cnn:`` specs, ``from_modules`` blocks, or a model cut into blocks
(``localearn train --model torchvision:resnet18 --blocks 4``, :func:`localearn.localize`), whose
last block keeps the model's own head.
"""

from .auglocal import AugLocal, aux_depths, aux_picks, fresh_copy
from .dgl import DGL
from .infopro import InfoPro, interpolated, reconstruction_target
from .layers import SupervisedBlock
from .learner import SupervisedLocal

__all__ = ["DGL", "AugLocal", "InfoPro", "SupervisedBlock", "SupervisedLocal", "aux_depths", "aux_picks",
           "fresh_copy", "interpolated", "reconstruction_target"]
