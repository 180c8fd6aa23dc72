"""Train the iris revisions the compat-probe's real-server tests and demo serve (run with a model-server
venv's python: scikit-learn lives there, not in the operator's environment).

    python train_iris.py OUT_DIR

writes OUT_DIR/REVISION/model.joblib for

- ``v1``: logistic regression on iris (labels 0, 1, 2);
- ``v2``: the same retrained with slightly stronger regularisation: probabilities drift by well under 0.01
  and the top-1 class stays the same (a compatible, drifting revision);
- ``v3-labels``: trained on the class *names*: ``predict`` answers strings (a BYTES tensor, not INT64);
- ``v3-binary``: trained on "setosa or not": ``predict_proba`` has 2 columns, not 3 (a changed shape).

Deterministic (no randomness in lbfgs on this data); iris ships with scikit-learn, nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(out: Path) -> None:
    iris = load_iris()
    x, y = iris.data, iris.target
    models = {
        "v1": LogisticRegression(C=1.0, max_iter=2000).fit(x, y),
        "v2": LogisticRegression(C=0.97, max_iter=2000).fit(x, y),
        "v3-labels": LogisticRegression(C=1.0, max_iter=2000).fit(x, np.asarray(iris.target_names)[y]),
        "v3-binary": LogisticRegression(C=1.0, max_iter=2000).fit(x, (y == 0).astype(np.int64)),
    }
    drift = float(np.abs(models["v1"].predict_proba(x) - models["v2"].predict_proba(x)).max())
    flips = int((models["v1"].predict(x) != models["v2"].predict(x)).sum())
    for name, model in models.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        joblib.dump(model, out / name / "model.joblib")
    print(json.dumps({"revisions": sorted(models), "v1_v2_max_proba_diff": drift, "v1_v2_label_flips": flips}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
