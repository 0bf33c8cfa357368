#!/usr/bin/env python3
"""Collects the test accuracies of several runs of the reference implementation
(`shared/reference/seed_pytorch.py --seed N OUT_N`) into the JSON file that the report shows
beside our own seed sweep (`[report] reference = "FILE"` in pipeline.toml).

usage: reference_seeds.py OUT_1 OUT_2 ... > reference.json
Each OUT is a folder with the `result.json` that seed_pytorch.py writes.
"""
import json
import sys

models = {"head-nn": [], "logreg": [], "scratch-cnn": []}
seeds = []
for out in sys.argv[1:]:
    res = json.load(open(f"{out}/result.json"))["res"]
    seeds.append(out)
    models["head-nn"].append(res["head_test_acc"])
    models["logreg"].append(res["logreg_test_acc"])
    if "scratch_test_acc" in res:
        models["scratch-cnn"].append(res["scratch_test_acc"])
json.dump(
    {
        "source": f"the PyTorch + scikit-learn reference (seed_pytorch.py, {len(seeds)} seeds)",
        "runs": seeds,
        "models": models,
    },
    sys.stdout,
    indent=1,
)
print()
