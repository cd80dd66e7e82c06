"""Bring any network: load it (:func:`load_model`), cut it into blocks (:func:`cut_model`), give each
block a head that fits its features (:func:`make_head`, :func:`make_decoder`) and train it block by
block under a local learner (:func:`localize`).

``localize("torchvision:resnet18", "dgl", input_shape=(3, 32, 32), num_classes=10, blocks=4)`` is a
DGL learner over the four blocks of a ResNet-18, whose last block keeps the model's own head; the
same model is described by the spec ``model:torchvision:resnet18 blocks=4 balance=activations``
(:mod:`localearn.models.spec`), which ``localearn train --model`` and studies write.
"""

from localearn.models.cut import BlockCost, Cut, cut_model
from localearn.models.heads import KINDS as HEAD_KINDS
from localearn.models.heads import feature_kind, make_decoder, make_head
from localearn.models.localize import localize, model_learners
from localearn.models.sources import adapt_stem, load_model
from localearn.models.spec import ModelSpec, model_arch, parse_model_spec
from localearn.models.trunk import Trunk, learner_trunk

__all__ = ["HEAD_KINDS", "BlockCost", "Cut", "ModelSpec", "Trunk", "adapt_stem", "cut_model", "feature_kind",
           "learner_trunk", "load_model", "localize", "make_decoder", "make_head", "model_arch", "model_learners",
           "parse_model_spec"]
