"""Forward-Forward (FF) and Collaborative FF.

Hinton, *The Forward-Forward Algorithm: Some Preliminary Investigations*, arXiv 2212.13345;
recipe of loeweX/Forward-Forward (MIT) as summarised in docs/learners/forward_forward.md. Collaborative FF:
Lorberbom, Gat, Adi, Schwing & Hazan, *Layer Collaboration in the Forward-Forward Algorithm*,
AAAI 2024, arXiv 2305.12393 (docs/learners/forward_forward.md#collaborative-ff).

Layer l (``FFLayer``)::

    x̂ = rms(sg(h_{l-1}))   (x / (sqrt(mean x²) + 1e-8); the input image is normalised too)
    h_l = ReLU(W_l x̂ + b_l),   W ~ N(0, 1/D_out), b = 0
    G_l = Σ_j h_j²  (goodness="sum", θ_l = D_l)  or  mean_j h_j²  (goodness="mean", θ = 1)
    L_l = BCE-with-logits(G_l + γ_l − θ_l; 1 positive rows, 0 negative rows)
          + peer_norm · mean_j (mean(r) − r_j)²

with r the EMA (momentum ``peer_momentum`` 0.9, initial 0.5) of each unit's mean activity over
the positive rows (the gradient flows through the current batch mean only). An explicit
``threshold`` replaces θ for the chosen goodness; the two conventions are never mixed.
``straight_through=True`` (default, as in the reference) back-propagates through the ReLU with
derivative 1 inside the layer.

Labels (supervised): the first C values of the flattened input are overwritten with
``label_value · one_hot(y)`` (default 3.25 on the *normalised* pixels; for image data this is the
first C pixels of the top row of channel 0). 3.25 ≈ 1/0.3081 is loeweX's 1.0 on raw [0, 1] MNIST
pixels expressed in MNIST-normalised units: Beyond-BP's 1.0 on normalised pixels is a 3× weaker
signal (docs/learners/forward_forward.md#pitfall-label-scale) and learnt visibly slower here (MNIST 3×1000,
seed 0, 100 SGD steps at lr 1e-3: 0.43 against 0.68 validation accuracy on 1-2k validation images). The
neutral label is ``label_value / C`` everywhere in those C places. A training step uses 2B rows: B positives
(true
label) and B negatives whose label is never the true one: ``negatives="random"`` draws
``(y + U{1..C−1}) mod C``; ``"hard"`` takes the model's most likely wrong label (argmax of the
per-label goodness of layers 2..L, one no-grad C·B-row pass per step); ``"hybrid"`` (unsupervised)
uses no label at all, and the negative is ``mask·x₁ + (1−mask)·x₂`` for a partner image of
another class in the batch, the mask a random bit image blurred ``hybrid_blur_steps`` (10) times
by [¼, ½, ¼] both ways (replicate padding) and thresholded at 0.5.

Prediction: ``per_label`` (default) = argmax_c Σ_{l=2..L} G_l(x with label c), from one C·B-row
pass; ``linear`` = a zero-initialised linear softmax classifier (no bias, loeweX) on the detached
RMS-normalised activities of layers 2..L for the neutral-label input, with its own SGD
(momentum 0.9, ``classifier_lr`` 1e-2, ``classifier_weight_decay`` 3e-3), checkpointed with the
rest. With a single layer, layer 1 is read instead. ``layer_scores`` gives every layer's own
per-label goodness, so each layer's accuracy lands in run.json.

Schedules: ``joint`` (default; every layer steps on every batch on the previous layer's detached
output) and ``greedy`` (one unit per layer over the no-grad frozen prefix; with
``prediction="linear"`` a last ``classifier`` unit). A greedy layer unit is selected on the
per-label goodness of the layers trained so far. The stop metric is validation accuracy: the FF
loss is no model-selection signal (docs/learners/forward_forward.md#pitfall-selection).

Collaborative FF (``collab``): layer l's logit becomes ``G_l + γ_l − θ_l`` with
``γ_l = Σ_{t∈S_l} sg(G_t − θ_t)``, S_l = all other layers (``"all"``) or the preceding ones
(``"preceding"``), all on the same input with the current weights; the gradient reaches layer l
only. *Threshold bookkeeping:* the paper writes p_l = σ(G_l + γ_l − θ) with one θ. With sum
goodness θ_l = D_l, summing raw goodness of k layers against one θ_l would make every row look
positive by ≈ (k−1)·D, so here the threshold of a sum of goodness is the sum of the thresholds:
θ = θ_l + Σ_{t∈S_l} θ_t. Every layer still measures its goodness against its own θ_t. ``"all"``
costs one extra no-grad forward pass per step (the G of later layers must come from the weights
before this step); ``"preceding"`` reuses the chain's own pass. ``"all"`` needs the joint
schedule. CFF here uses the joint schedule (every layer every batch) for "network" training.

Learning-rate cool-down (``cooldown=True``): lr_e = lr·2(1+E−e)/E for the 1-based epoch
e > E/2, E the epochs cap per unit, applied to every optimizer, classifier included, and capped
at lr (for odd E the first cooled epoch would otherwise get (E+1)/E × lr). The learner declares
it (``update_defaults = {"lr_schedule": "cooldown"}``) and the Trainer's update policy
(:mod:`localearn.update`) sets the lr before every epoch of a unit, also after a resume (the base
lr is kept in each param group as ``initial_lr``); ``--lr-schedule`` overrides it.

Collaborative FF runs on the base chain: each layer reads its γ_l from the step's context
(``FFLayer.gamma``) and, for ``preceding``, adds its own vote to it (``FFLayer.vote``).

Deviations from the reference: the classifier uses its own SGD whatever optimizer the layers use;
``hybrid`` masks use 10 blur steps (the paper says "repeatedly"); ``hybrid`` needs the joint
schedule; only ``mlp:`` architectures are supported.
"""

from __future__ import annotations

from .learner import FFClassifier, FFLayer, ForwardForward

__all__ = ["FFClassifier", "FFLayer", "ForwardForward"]
