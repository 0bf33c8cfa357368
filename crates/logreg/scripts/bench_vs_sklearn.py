#!/usr/bin/env python3
"""Times `logreg` against scikit-learn on the same synthetic pool5-like features.

Both sides read one temporary safetensors file holding a seeded, VGG16-pool5-like
feature matrix (non-negative, about 60 % zeros, values about 0..50, float32) with
imbalanced classes. For every (C, solver) pair, and every repeat, the script runs, one
after the other:

* scikit-learn: ``LogisticRegression(C=C, solver=s, class_weight="balanced",
  max_iter=200)`` in a child Python process with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
  set to the thread count (and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, so OpenBLAS
  picks its best kernel for this CPU);
* ours: the `fit_timing` example of the `logreg` crate with RAYON_NUM_THREADS set to the
  same thread count.

It prints a table of the median wall-clock fit times (the data loading is not timed), the
CPU seconds, the iteration counts, the convergence flags, train / held-out accuracy, the
agreement of the two models' held-out predictions, the relative L2 difference of their
coefficients and the time ratio ours / scikit-learn.

Run from the workspace root (it builds the example in release mode first):

    /work/venv/bin/python crates/logreg/scripts/bench_vs_sklearn.py
    /work/venv/bin/python crates/logreg/scripts/bench_vs_sklearn.py --cs 1 --repeats 3

Options: ``--n 2000 --n-val 500 --d 25088 --k 11 --cs 1,0.1 --solvers lbfgs,newton-cg
--threads 2 --repeats 1 --max-iter 200 --sklearn-dtype float32 --precision f64``.
``--precision`` picks our product precision (``logreg::Precision``). ``--sklearn-dtype``
chooses the array dtype handed to scikit-learn (float32: the features as stored; float64:
an upcast copy); scikit-learn's newton-cg then iterates in that precision, its lbfgs always
in float64.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKSPACE = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def make_data(n, d, k, seed):
    """Seeded pool5-like features: ReLU of a low-rank class signal plus noise."""
    rng = np.random.default_rng(seed)
    props = rng.dirichlet(np.full(k, 3.0))
    props = 0.5 * props + 0.5 / k * rng.uniform(0.3, 1.0, k)  # keep every class present
    props /= props.sum()
    y = rng.choice(k, size=n, p=props)
    y[:k] = np.arange(k)  # every class occurs at least once
    latent = 48
    centers = rng.normal(0.0, 1.0, (k, latent)).astype(np.float32)
    z = centers[y] + rng.normal(0.0, 1.2, (n, latent)).astype(np.float32)
    proj = (rng.normal(0.0, 1.0, (latent, d)) / np.sqrt(latent)).astype(np.float32)
    h = z @ proj  # (n, d), about N(0, 2)
    h += rng.standard_normal((n, d), dtype=np.float32)
    h -= np.float32(0.8)
    np.maximum(h, 0.0, out=h)
    # heavy-tailed positive part, like pooled ReLU activations
    h *= h
    h *= np.float32(1.5)
    np.minimum(h, np.float32(60.0), out=h)
    return h, y.astype(np.int64)


def write_data(path, args):
    from safetensors.numpy import save_file

    x, y = make_data(args.n + args.n_val, args.d, args.k, args.seed)
    save_file(
        {
            "x": np.ascontiguousarray(x[: args.n]),
            "y": y[: args.n],
            "x_val": np.ascontiguousarray(x[args.n :]),
            "y_val": y[args.n :],
        },
        path,
    )
    zeros = float((x == 0).mean())
    counts = np.bincount(y[: args.n], minlength=args.k)
    print(
        f"data: {args.n} train + {args.n_val} held-out x {args.d}, {args.k} classes, "
        f"{zeros:.0%} zeros, max {x.max():.1f}, mean {x.mean():.2f}, "
        f"class counts {counts.tolist()}",
        flush=True,
    )


def sklearn_worker(args):
    """Child process: one scikit-learn fit, prints one JSON line."""
    import threadpoolctl
    from safetensors.numpy import load_file
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    import warnings

    data = load_file(args.data)
    x = data["x"].astype(args.sklearn_dtype, copy=False)
    y = data["y"]
    clf = LogisticRegression(
        C=args.c, solver=args.solver, class_weight="balanced", max_iter=args.max_iter
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0, c0 = time.perf_counter(), time.process_time()
        clf.fit(x, y)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    converged = not any(
        issubclass(w.category, ConvergenceWarning) or "Line Search failed" in str(w.message)
        for w in caught
    )
    from safetensors.numpy import save_file

    save_file(
        {
            # safetensors stores the raw buffer: the arrays must be C-contiguous
            "coef": np.ascontiguousarray(clf.coef_, dtype=np.float64),
            "intercept": np.ascontiguousarray(clf.intercept_, dtype=np.float64),
        },
        args.out,
    )
    info = threadpoolctl.threadpool_info()
    print(
        json.dumps(
            {
                "impl": "sklearn",
                "solver": args.solver,
                "c": args.c,
                "seconds": secs,
                "cpu_seconds": cpu,
                "n_iter": int(clf.n_iter_.max()),
                "converged": converged,
                "train_acc": float((clf.predict(x) == y).mean()),
                "blas": [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in info],
            }
        ),
        flush=True,
    )


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON from {cmd}: {out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def heldout_eval(data, path):
    from safetensors.numpy import load_file

    m = load_file(path)
    logits = data["x_val"].astype(np.float64) @ m["coef"].T + m["intercept"]
    pred = logits.argmax(axis=1)
    return m["coef"], pred, float((pred == data["y_val"]).mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--d", type=int, default=25088)
    p.add_argument("--k", type=int, default=11)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cs", default="1,0.1")
    p.add_argument("--solvers", default="lbfgs,newton-cg")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--sklearn-dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--precision", default="f64", choices=["f64", "f32"],
                   help="precision of our products (logreg::Precision)")
    p.add_argument("--ours-bin", help="prebuilt fit_timing binary (default: cargo build --release)")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--skip-sklearn", action="store_true")
    # child-process mode
    p.add_argument("--worker", choices=["sklearn"])
    p.add_argument("--data")
    p.add_argument("--out")
    p.add_argument("--c", type=float)
    p.add_argument("--solver")
    args = p.parse_args()
    if args.worker == "sklearn":
        sklearn_worker(args)
        return

    ours_bin = args.ours_bin
    if not args.skip_ours and ours_bin is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(WORKSPACE, "target"))
        subprocess.run(
            ["cargo", "build", "--release", "-p", "logreg", "--example", "fit_timing"],
            cwd=WORKSPACE,
            check=True,
        )
        ours_bin = os.path.join(target, "release", "examples", "fit_timing")

    threads = str(args.threads)
    sk_env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                  MKL_NUM_THREADS=threads)
    sk_env.pop("OPENBLAS_CORETYPE", None)
    sk_env.pop("OPENBLAS_L2_SIZE", None)
    our_env = dict(os.environ, RAYON_NUM_THREADS=threads)

    cs = [float(c) for c in args.cs.split(",")]
    solvers = args.solvers.split(",")
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "data.safetensors")
        write_data(data_path, args)
        data = load_file(data_path)
        results = {}
        for rep in range(args.repeats):
            for c in cs:
                for s in solvers:
                    for impl in ("sklearn", "ours"):
                        if (impl == "sklearn" and args.skip_sklearn) or (
                            impl == "ours" and args.skip_ours
                        ):
                            continue
                        out = os.path.join(tmp, f"{impl}_{s}_{c}.safetensors")
                        if impl == "sklearn":
                            cmd = [sys.executable, os.path.abspath(__file__), "--worker",
                                   "sklearn", "--data", data_path, "--out", out, "--c",
                                   str(c), "--solver", s, "--max-iter", str(args.max_iter),
                                   "--sklearn-dtype", args.sklearn_dtype]
                            r = run_json(cmd, sk_env)
                        else:
                            cmd = [ours_bin, "--data", data_path, "--out", out, "--c",
                                   str(c), "--solver", s, "--max-iter", str(args.max_iter),
                                   "--precision", args.precision]
                            r = run_json(cmd, our_env)
                        _, _, r["val_acc"] = heldout_eval(data, out)
                        print(f"rep {rep} {impl:7s} {s:9s} C={c:<4g} {r['seconds']:7.2f} s "
                              f"(cpu {r['cpu_seconds']:6.2f} s) n_iter {r['n_iter']:3d} "
                              f"converged {r['converged']!s:5s} train {r['train_acc']:.4f} "
                              f"val {r['val_acc']:.4f}", flush=True)
                        results.setdefault((impl, s, c), []).append(r)

        print()
        print(f"{'solver':9s} {'C':>5s} | {'sklearn s':>9s} {'it':>4s} {'conv':>5s} | "
              f"{'ours s':>8s} {'it':>4s} {'conv':>5s} | {'ratio':>6s} | {'val agree':>9s} "
              f"{'val acc sk/ours':>15s} | {'coef rel L2':>11s}")
        for c in cs:
            for s in solvers:
                sk = results.get(("sklearn", s, c))
                ou = results.get(("ours", s, c))
                if not sk or not ou:
                    continue
                t_sk = float(np.median([r["seconds"] for r in sk]))
                t_ou = float(np.median([r["seconds"] for r in ou]))
                coef_sk, pred_sk, _ = heldout_eval(data, os.path.join(tmp, f"sklearn_{s}_{c}.safetensors"))
                coef_ou, pred_ou, _ = heldout_eval(data, os.path.join(tmp, f"ours_{s}_{c}.safetensors"))
                agree = float((pred_sk == pred_ou).mean())
                rel = float(np.linalg.norm(coef_ou - coef_sk) / np.linalg.norm(coef_sk))
                print(f"{s:9s} {c:5g} | {t_sk:9.2f} {sk[-1]['n_iter']:4d} {sk[-1]['converged']!s:>5s} | "
                      f"{t_ou:8.2f} {ou[-1]['n_iter']:4d} {ou[-1]['converged']!s:>5s} | "
                      f"{t_ou / t_sk:6.3f} | {agree:9.4f} "
                      f"{sk[-1]['val_acc']:7.4f}/{ou[-1]['val_acc']:.4f} | {rel:11.2e}")
        if results:
            blas = next((r[0].get("blas") for k, r in results.items() if k[0] == "sklearn"), None)
            if blas:
                print(f"scikit-learn BLAS: {blas}")


if __name__ == "__main__":
    main()
