"""CaFo in one call: random (untrained) conv blocks, each read by its own trained predictor.

Zhao et al., *The Cascaded Forward Algorithm for Neural Network Training*, arXiv 2303.09728.
``localearn.fit`` builds the learner from an architecture spec, loads the bundled digits, trains
each predictor as its own unit and writes ``run.json``. Run: python examples/cafo.py
"""

import os
import tempfile

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "10"))

with tempfile.TemporaryDirectory() as out:
    result = localearn.fit("cafo", "digits", arch="cnn:16-32", epochs=EPOCHS, patience=3, seed=0, out=out)
m = result["metrics"]
per_block = ", ".join(f"{k} {v['test_accuracy']:.3f}" for k, v in m["per_layer"].items() if "test_accuracy" in v)
print(f"cafo: test accuracy {m['test_accuracy']:.3f} (per predictor: {per_block})")
print("units:", [u["unit"] for u in result["units"]])
