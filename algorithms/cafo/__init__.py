"""CaFo: the Cascaded Forward algorithm.

Zhao, Wang, Li, Jin, Lang & Ling, *The Cascaded Forward Algorithm for Neural Network Training*,
arXiv 2303.09728 (official code: Graph-ZKY/CaFo). DFA block training as in Beyond-BP
(Przemyslaw11/BeyondBackpropagation); Direct Feedback Alignment: Nøkland, arXiv 1609.01596.
Equations and settings: docs/learners/cafo.md.

Model. Blocks ``h_k = BN(MaxPool2(ReLU(Conv3×3(h_{k-1}))))`` (``cnn:32-128-512`` by default,
built by :func:`localearn.arch.build_trunk`; ``mlp:`` specs work too) feed one linear predictor
each, ``s_k = flatten(h_k) W_k`` (no bias, as official). Block features are computed under
no-grad, so every predictor trains on its own loss only.

Blocks (``blocks=``):

* ``rand`` (default, CaFo-Rand): the random initialisation, frozen (``requires_grad=False``) and
  in eval mode, so BatchNorm applies its initial running statistics (mean 0, var 1), as
  Beyond-BP's eval-mode blocks do.
* ``dfa`` (CaFo-DFA): a first training unit ``dfa`` trains all blocks with Direct Feedback
  Alignment. An auxiliary head Linear(d_K, C) on block K gives ``e = softmax(o) − Y``; block K
  and the head take their true local gradient; block k < K gets ``δh_k = e B_k`` with
  ``B_k ∈ R^{C×d_k}`` a fixed Gaussian buffer with unit-norm rows (seeded by ``feedback_seed + k``,
  or drawn from the run's seeded global RNG when ``feedback_seed`` is None). The unit runs on the
  learner's base chain, so every block steps through ``LocalLayer.train_step`` on a detached
  input: ``e`` comes through the context (``make_context`` computes it in one no-grad pass at the
  current weights, undoing that pass's BN statistics updates), and block k's local loss is the
  surrogate ``Σ h_k ⊙ (e B_k)``, whose gradient with respect to ``h_k`` is exactly ``δh_k``. No
  backward pass crosses a block (unlike Beyond-BP, which ran a full ``loss.backward()`` and
  overwrote the gradients), and BN running statistics move once per step. Each block has its own
  optimizer (the trainer's kind, at ``block_lr``, weight decay ``block_weight_decay`` or the
  trainer's). The unit's validation loss is the CE of the auxiliary head. ``dfa_epochs`` is the
  unit's own epoch budget (``Stage.max_epochs``), so the trainer ends it there.

Predictors (``predictor_loss=``), one training unit ``predictor<k>`` each, validated on
``CE(s_k)`` with best-epoch restore by the trainer:

* ``ce`` (default): mini-batch cross-entropy with the trainer's optimizer (Adam), the official
  "BP" mode and Beyond-BP's variant.
* ``ce_fullbatch``: the official rule ``W ← W − η[(1/N)Hᵀ(softmax(HW) − Y) + λW]`` from
  W_0 = all ones, η = ``fullbatch_lr`` (0.01), λ = ``lam``; one step per epoch, taken from sums
  accumulated over the epoch's mini-batches.
* ``mse``: closed form ``W = (HᵀH + λI)⁻¹HᵀY`` (λ = ``lam``, 0 as official, pseudo-inverse
  fallback). How it fits the epoch loop: the first epoch of the unit accumulates HᵀH and HᵀY
  (float64) over the training batches, the solve happens once before that epoch's validation,
  and the unit's budget is that one epoch (``Stage.max_epochs = 1``). ``drop_last`` leaves at most B − 1 training
  rows out of the solve.
* ``sparsemax``: the sparsemax loss (gradient ``sparsemax(s) − onehot(y)``) with the trainer's
  optimizer; the official code trains SL by full-batch GD, localearn by mini-batch Adam.

Prediction (``aggregate=``): ``prob`` (default, the paper) sums ``q_k = softmax(s_k)``
(``sparsemax(s_k)`` for the sparsemax loss); ``predict`` returns ``log(mean_k q_k)``, whose argmax
is that of ``Σ_k q_k`` and whose CE (the run's test loss) is the NLL of the averaged prediction.
``logits`` sums the raw ``s_k`` (Beyond-BP). ``layer_scores`` reports s_k under block k's layer
name (``layer<k>``), so ``run.json`` holds each block's own test accuracy; layers
``layer<K+k>`` are the predictors themselves.

Feature cache (``cache_features=True``, ``cache_max_gb``): during a predictor unit the frozen
blocks' features h_k are memoised by a digest of each input row's bytes (see
:mod:`localearn.feature_cache` for why the cache lives in the learner, not the data), shared by training and
validation batches. Without augmentation (``ImageData.augment is None``, e.g. MNIST, digits,
``cifar10_subset`` with ``dataset_options={"augment": False}``) each unit computes its
block features once, in its first epoch; with augmentation rows never repeat, the learner detects
it after two epochs (training hit rate < ½) and stops caching training rows (validation rows
stay cached). The DFA unit never caches (its blocks change every step).

Predictor heads (``head=``): ``linear`` (the paper's ``flatten(h_k) W_k``, the default on ``mlp:``
and ``cnn:`` specs) or any head by feature shape (:func:`localearn.models.make_head`; ``auto``, the
default over a model's blocks, pools a feature map before its linear map). Over a model's blocks
(``--model``) the last block is the model's trunk without its head, and the model's own head
(pool + classifier) is that block's predictor; the closed-form losses need ``linear`` predictors.

Deviations: mini-batch Adam instead of full-batch GD for ``ce``/``sparsemax`` (as Beyond-BP); a
validation split with early stopping and best-epoch restore per predictor (official: none);
W_0 for ``ce``/``sparsemax`` is nn.Linear's default U(±1/√d_k) (official GD: all ones, kept in
``ce_fullbatch``); the DFA error is divided by B (the per-sample gradient of the batch-mean CE),
a constant factor Adam ignores.
"""

from __future__ import annotations

from localearn.feature_cache import FeatureCache, fingerprints

from .layers import CafoBlock, CafoPredictor, solve_ridge
from .learner import CaFo, unit_norm_gaussian
from .sparsemax import sparsemax, sparsemax_loss

__all__ = [
    "CaFo",
    "CafoBlock",
    "CafoPredictor",
    "FeatureCache",
    "fingerprints",
    "solve_ridge",
    "sparsemax",
    "sparsemax_loss",
    "unit_norm_gaussian",
]
