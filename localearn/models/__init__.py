"""Bring any network: load it (:func:`load_model`), cut it into blocks (:func:`cut_model`) and give
each block a head that fits its features (:func:`make_head`, :func:`make_decoder`).

``cut_model(load_model("torchvision:resnet18", 10, (3, 32, 32)), 4, (3, 32, 32))`` gives four
blocks over the model's own layers that ``<Learner>.from_modules(cut.blocks, ...)`` trains.
"""

from localearn.models.cut import BlockCost, Cut, cut_model
from localearn.models.heads import KINDS as HEAD_KINDS
from localearn.models.heads import feature_kind, make_decoder, make_head
from localearn.models.sources import adapt_stem, load_model

__all__ = ["HEAD_KINDS", "BlockCost", "Cut", "adapt_stem", "cut_model", "feature_kind", "load_model", "make_decoder",
           "make_head"]
