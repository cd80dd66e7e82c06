"""ForwardGNN (Park et al., ICLR 2024, arXiv 2403.11004): graph data, layers, variants, link
prediction and the backprop GNN baselines, on KarateClub (fast) and Cora (real Planetoid files)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from localearn.algorithms.forward_gnn import ForwardGNN
from localearn.algorithms.forward_gnn.layers import ff_loss, row_normalise, sf_loss
from localearn.algorithms.forward_gnn.variants import augment, ffvn_negative_edges

import localearn
from localearn.data import load_dataset
from localearn.data.graphs import GraphData, karate_club_data, kfold_masks, node_mask
from localearn.errors import ConfigError, DataNotFoundError
from localearn.layer import Context
from localearn.registry import create_learner


@pytest.fixture()
def cora_dir(shared_data: Path, tmp_path: Path) -> Path:
    """A private copy of the Planetoid Cora raw files (Planetoid writes next to them)."""
    src = shared_data / "planetoid" / "Cora" / "raw"
    dst = tmp_path / "planetoid" / "Cora" / "raw"
    shutil.copytree(src, dst)
    return tmp_path


# ----------------------------------------------------------------------------------- data
def test_karate_masks_are_seeded_disjoint_and_cover_every_class() -> None:
    a, b = karate_club_data(0), karate_club_data(0)
    assert torch.equal(a.train_mask, b.train_mask) and torch.equal(a.test_mask, b.test_mask)
    masks = torch.stack([a.train_mask, a.val_mask, a.test_mask]).long()
    assert torch.equal(masks.sum(0), torch.ones(34, dtype=torch.long))  # a partition
    for m in (a.train_mask, a.val_mask, a.test_mask):
        assert set(a.y[m].tolist()) == {0, 1, 2, 3}
    assert not torch.equal(karate_club_data(1).train_mask, a.train_mask)


def test_kfold_split_is_64_16_20_and_disjoint() -> None:
    train, val, test = kfold_masks(1000, 2)
    assert (int(train.sum()), int(val.sum()), int(test.sum())) == (640, 160, 200)
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    tests = torch.stack([kfold_masks(1000, i)[2] for i in range(5)])
    assert torch.equal(tests.sum(0), torch.ones(1000, dtype=torch.long))  # folds cover all nodes


def test_graph_bundle_serves_the_split_mask() -> None:
    data = load_dataset("karate")
    assert isinstance(data, GraphData) and data.kind == "graph" and data.num_batches(64) == 1
    assert data.num_train == int(data.graph.train_mask.sum())
    (view,) = data.eval_batches("val", 64)
    assert torch.equal(node_mask(view), data.graph.val_mask)
    (train,) = data.train_batches(64, torch.Generator())
    assert torch.equal(node_mask(train), data.graph.train_mask)
    assert getattr(data.graph, "eval_mask", None) is None  # the view is a copy
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        next(iter(data.eval_batches("dev", 64)))


def test_missing_graph_data_names_files_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"ind\.citeseer\.x.*planetoid/CiteSeer/raw"):
        load_dataset("citeseer", tmp_path)
    with pytest.raises(DataNotFoundError, match=r"amazon_electronics_photo\.npz"):
        load_dataset("photo", tmp_path)
    with pytest.raises(ConfigError, match="split must be one of 0, 1, 2, 3, 4"):
        load_dataset("github", tmp_path, split=5)
    with pytest.raises(ConfigError, match="dataset cora has no option 'split'"):
        load_dataset("cora", tmp_path, split=1)


def test_cora_loads_from_both_layouts_without_writing_there(cora_dir: Path) -> None:
    for root in (cora_dir, cora_dir / "planetoid"):
        data = load_dataset("cora", root)
        assert isinstance(data, GraphData)
        assert data.info["split_sizes"] == [140, 500, 1000]
        assert data.input_shape == (1433,) and data.num_classes == 7
        assert torch.allclose(data.graph.x.sum(1)[data.graph.x.sum(1) > 0], torch.ones(1))  # NormalizeFeatures
    assert not (cora_dir / "planetoid" / "Cora" / "processed").exists()  # built in the cache


# --------------------------------------------------------------------------------- layers
def test_virtual_nodes_link_only_training_nodes_both_ways() -> None:
    g = karate_club_data(0)
    aug = augment(g, torch.randn(4, 34))
    n = g.num_nodes
    extra = aug.edge_index[:, g.edge_index.shape[1] :]
    assert extra.shape[1] == 2 * int(g.train_mask.sum())
    real = torch.where(extra[0] < n, extra[0], extra[1])
    virt = torch.where(extra[0] < n, extra[1], extra[0])
    assert g.train_mask[real].all(), "a validation or test node was linked to a virtual node"
    assert torch.equal(virt, n + g.y[real])
    pairs = {tuple(e) for e in extra.T.tolist()}
    assert all((v, u) in pairs for u, v in pairs)  # both directions
    assert not (g.val_mask | g.test_mask)[real].any()
    for edges in ffvn_negative_edges(g, aug, 4):  # FF-VN negatives: training nodes, wrong class
        neg = edges[:, g.edge_index.shape[1] :]
        src = neg[0][neg[0] < n]
        assert g.train_mask[src].all()
        assert not torch.equal(neg[1][neg[0] < n], n + g.y[src])


def test_sf_loss_matches_hand_computed_reference() -> None:
    # Two real training nodes (labels 0, 1) then two virtual rows c_0 = (1, 1), c_1 = (0, 1).
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 1.0]])
    ctx = Context(None, 2, {"train_idx": torch.tensor([0, 1]), "train_y": torch.tensor([0, 1]), "num_real": 2})
    # node 0: logits (1, 0) -> CE log(1 + e^-1); node 1: logits (2, 2) -> CE log 2
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert sf_loss(h, ctx).item() == pytest.approx(expected, rel=1e-6)


def test_ff_loss_and_normalisation_references() -> None:
    got = ff_loss(torch.tensor([3.0]), torch.tensor([[1.0]]), theta=2.0).item()
    assert got == pytest.approx(2 * math.log(1 + math.exp(-1)), rel=1e-6)
    assert torch.allclose(row_normalise(torch.tensor([[3.0, 4.0], [0.0, 0.0]])),
                          torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_bad_options_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown ForwardGNN variant 'ff'; valid: sf, ff_la"):
        create_learner("forward_gnn", input_shape=(34,), num_classes=4, variant="ff")
    with pytest.raises(ConfigError, match="unknown eval_aggregation 'max'"):
        create_learner("fgnn", input_shape=(34,), num_classes=4, eval_aggregation="max")
    with pytest.raises(ConfigError, match="use schedule joint"):
        create_learner("fgnn", input_shape=(34,), num_classes=4, variant="top2input", schedule="greedy")
    with pytest.raises(ConfigError, match="needs a graph architecture"):
        create_learner("fgnn", arch="mlp:2x32", input_shape=(34,), num_classes=4)
    with pytest.raises(ConfigError, match="not divisible by its 4 heads"):
        create_learner("bp_gnn", arch="gat:30x2", input_shape=(34,), num_classes=4)
    with pytest.raises(ConfigError, match=r"forward_gnn takes node features \(F,\)"):
        create_learner("fgnn", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match="forward_gnn takes graph data, but dataset 'digits'"):
        localearn.fit("forward_gnn", "digits", epochs=1, progress=False)


# ------------------------------------------------------------------------ training (karate)
def _karate(algo: str, arch: str, epochs: int = 40, lr: float | None = None, **options: Any) -> dict[str, Any]:
    return localearn.fit(algo, "karate", arch=arch, learner_options=options, epochs=epochs, patience=epochs,
                         lr=lr, seed=0, progress=False, device="cpu")


def _losses_fall(run: dict[str, Any]) -> None:
    for unit in run["units"]:
        hist = [h["train_loss"] for h in run["history"] if h["unit"] == unit["unit"]]
        assert hist[-1] < hist[0], f"{unit['unit']}: loss {hist[0]:.4f} -> {hist[-1]:.4f}"


@pytest.mark.parametrize("variant,lr,bar", [("sf", None, 0.7), ("ff_la", 0.01, 0.6), ("ff_vn", None, 0.6),
                                            ("top2loss", None, 0.7), ("top2input", None, 0.7)])
def test_each_variant_learns_karate(variant: str, lr: float | None, bar: float) -> None:
    run = _karate("forward_gnn", "gcn:32x2", lr=lr, variant=variant)
    _losses_fall(run)
    m = run["metrics"]
    assert m["test_accuracy"] >= bar, f"{variant}: test accuracy {m['test_accuracy']:.2f} < {bar}"
    assert set(m["per_layer"]) == {"layer0", "layer1"}
    assert all("test_accuracy" in v for v in m["per_layer"].values())
    expected_units = ["network"] if variant.startswith("top2") else ["layer0", "layer1"]
    assert [u["unit"] for u in run["units"]] == expected_units


@pytest.mark.parametrize("kind", ["gcn", "sage", "gat"])
def test_each_backbone_learns_karate_and_backprop_too(kind: str) -> None:
    for algo in ("forward_gnn", "backprop_gnn"):
        run = _karate(algo, f"{kind}:32x2")
        _losses_fall(run)
        assert run["metrics"]["test_accuracy"] >= 0.6, f"{algo} {kind}: {run['metrics']['test_accuracy']:.2f}"
        per_layer = run["metrics"]["per_layer"]
        assert all(v["peak_saved_activation_bytes"] > 0 for v in per_layer.values())


def test_eval_aggregation_last_uses_the_last_layer_only() -> None:
    torch.manual_seed(0)
    g = karate_club_data(0)
    learner = create_learner("fgnn", arch="gcn:16x2", input_shape=(34,), num_classes=4, eval_aggregation="last")
    assert isinstance(learner, ForwardGNN)
    learner.eval()
    with torch.no_grad():
        per_layer = learner.layer_scores(g)  # each layer's softmax of its virtual-node logits
        assert torch.allclose(learner.predict(g), per_layer["layer1"].log(), atol=1e-6)
        learner.eval_aggregation = "sum_layers"
        probs = torch.stack(list(per_layer.values())).mean(0)
        assert torch.allclose(learner.predict(g).exp(), probs, atol=1e-5)


# --------------------------------------------------------------------------------- Cora
def test_cora_sf_and_backprop_short_run(cora_dir: Path) -> None:
    """A short run of both arms on Cora's public split (the slow test runs the full budget)."""
    for algo, arch, lr, bar in (("forward_gnn", "gcn:64x1", 0.01, 0.70), ("backprop_gnn", "gcn:64x2", 0.01, 0.75)):
        run = localearn.fit(algo, "cora", arch=arch, data_dir=cora_dir, epochs=30, patience=30, lr=lr,
                            seed=0, progress=False, device="cpu")
        assert run["metrics"]["test_accuracy"] >= bar, f"{algo}: {run['metrics']['test_accuracy']:.3f}"


def test_cora_link_prediction_single_layer(cora_dir: Path) -> None:
    """Link prediction is an ordinary Trainer run (``--task link``), scored by ROC-AUC."""
    res = localearn.fit("forward_gnn", "cora", arch="gcn:64x1", data_dir=cora_dir, task="link", epochs=15,
                        patience=15, seed=0, progress=False, device="cpu")
    assert res["status"] == "complete" and res["task"] == "link"
    assert res["metrics"]["test_roc_auc"] >= 0.70, res["metrics"]["test_roc_auc"]  # measured 0.732
    assert set(res["metrics"]["per_layer"]) == {"layer0"}
    assert res["metrics"]["per_layer"]["layer0"]["peak_saved_activation_bytes"] > 0
    with pytest.raises(ConfigError, match="unknown link objective 'cos'"):
        localearn.fit("forward_gnn", "cora", arch="gcn:64x1", data_dir=cora_dir, task="link",
                      learner_options={"link_objective": "cos"})


@pytest.mark.slow
def test_cora_acceptance_accuracy_and_link_auc(cora_dir: Path) -> None:
    sf = localearn.fit("forward_gnn", "cora", arch="gcn:128x2", data_dir=cora_dir, epochs=200, patience=100,
                       seed=0, progress=False, device="cpu")
    bp = localearn.fit("backprop_gnn", "cora", arch="gcn:128x2", data_dir=cora_dir, epochs=200, patience=100,
                       seed=0, progress=False, device="cpu")
    assert sf["metrics"]["test_accuracy"] >= 0.75
    assert bp["metrics"]["test_accuracy"] >= 0.79
    res = localearn.fit("forward_gnn", "cora", arch="gcn:128x2", data_dir=cora_dir, task="link", epochs=300,
                        patience=100, seed=0, progress=False, device="cpu")
    assert res["metrics"]["test_roc_auc"] >= 0.85


@pytest.mark.slow
def test_cora_saved_bytes_flat_in_depth_for_forward_gnn(cora_dir: Path) -> None:
    peaks: dict[str, list[int]] = {"forward_gnn": [], "backprop_gnn": []}
    for depth in (1, 4):
        for algo in peaks:
            run = localearn.fit(algo, "cora", arch=f"gcn:128x{depth}", data_dir=cora_dir, epochs=2,
                                patience=2, seed=0, progress=False, device="cpu")
            peaks[algo].append(run["metrics"]["peak_saved_activation_bytes"])
    assert peaks["forward_gnn"][1] <= 1.3 * peaks["forward_gnn"][0]
    assert peaks["backprop_gnn"][1] > peaks["backprop_gnn"][0]
