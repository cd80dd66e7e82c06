"""The backprop baseline beside Mono-Forward, on the same blocks, seed and stopping rule.

Every local learner is compared against backprop on the twin network (same blocks, same
initialisation, one loss at the top, one backward through all layers). ``localearn.fit`` runs
both; compare the accuracy and the peak bytes saved for backward. Run: python examples/backprop.py
"""

import os
import tempfile

import localearn

EPOCHS = int(os.environ.get("LOCALEARN_EXAMPLE_EPOCHS", "10"))

for algo in ("backprop", "mono_forward"):
    with tempfile.TemporaryDirectory() as out:
        m = localearn.fit(algo, "digits", arch="mlp:3x256", epochs=EPOCHS, seed=0, out=out)["metrics"]
    print(f"{algo:<13} test accuracy {m['test_accuracy']:.3f}, "
          f"saved for backward {m['peak_saved_activation_bytes'] / 2**10:.0f} KiB")
