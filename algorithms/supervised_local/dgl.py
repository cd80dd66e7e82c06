"""DGL: Decoupled Greedy Learning.

Belilovsky, Eickenberg & Oyallon, *Decoupled Greedy Learning of CNNs*, ICML 2020 (code:
eugenium/DGL, eugenium/layerCNN). Block j minimises ``CE(aux_j(f_j(x_j)), y)`` on its detached
input and nothing else; the last block trains the network's own classifier. ``joint`` is decoupled
(synchronous) DGL, ``greedy`` the sequential variant (see :mod:`.learner`).

Auxiliary heads: DGL's MLP-SR-aux (``mlp_sr``, the released code's default) on feature maps, its
MLP-aux (``mlp``) on token sequences and vectors; ``--opt head=pool_linear`` is the plain pooling +
linear baseline. Simplified: no asynchronous variant (the replay buffers of ``buffer_experiments``),
and the reference's recipe (SGD, momentum 0.9, weight decay 5e-4, lr 0.1 ×0.2 every 15 epochs
over 50 epochs) is the recipe on full CIFAR only, with a cosine schedule for the steps; other image
data take the shared Adam at 1e-3 (:class:`~.learner.SupervisedLocal` says why).
"""

from __future__ import annotations

from typing import Any, ClassVar

from localearn.recipes import Recipe
from localearn.registry import register_algorithm

from .learner import SupervisedLocal, paper_recipes


@register_algorithm
class DGL(SupervisedLocal):
    """Decoupled Greedy Learning (see the module docstring)."""

    name = "dgl"
    aliases = ("decoupled_greedy",)
    paper = "Belilovsky, Eickenberg & Oyallon, Decoupled Greedy Learning of CNNs, ICML 2020"
    heads: ClassVar[dict[str, str]] = {"map": "mlp_sr", "tokens": "mlp", "vector": "mlp"}
    recipes: ClassVar[dict[str, Recipe]] = paper_recipes(
        "DGL auxiliary_nets_study, CIFAR: SGD momentum 0.9, wd 5e-4, lr 0.1 (docs/learners/dgl.md#reference)", 5e-4)

    def __init__(self, *args: Any, **base: Any) -> None:
        super().__init__(*args, **base)
        self.build()
