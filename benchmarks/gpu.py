"""The scoring core on a GPU beside the GPU predictors people would otherwise use, one command.

    python benchmarks/gpu.py [--quick] [--batches 1,16,256,4096,65536,1048576] [--out gpu]

Models (100 features, trained here on synthetic data): XGBoost 500 trees of depth 8,
LightGBM 500 trees of 255 leaves, a scikit-learn random forest of 100 trees of depth 12,
an MLP 100-256-256-1 (torch, random weights: speed does not depend on training), a
logistic regression. For each model and batch size it times:

- ``cpu_core``: CompiledModel.predict on this machine's CPU (numba, all cores);
- ``cuda_core``: the same model ``.to("cuda:0")``, host numpy in, host numpy out (copies
  included), and ``cuda_core_resident``: input already on the GPU, output left there; for
  trees also ``cuda_core_resident_shared`` (or ``_global``): the other place for the forest
  (``scoring_core.cuda.trees``, staging) than the one chosen by default;
- ``xgboost_cuda``: XGBoost's GPU predictor (``device="cuda"``, ``inplace_predict`` on data
  already on the GPU when CuPy is importable, else on host data);
- ``cuml_fil``: RAPIDS cuML's Forest Inference, where cuML imports;
- ``torch_tensor``: Hummingbird-style execution in torch on the GPU: trees as a batched
  gather traversal (one level a step for every row and tree at once), the MLP and the
  logistic regression as torch modules;

then latency percentiles at batch 1 (and 64) for the CUDA core and the CPU core, and GPU
memory and utilisation (pynvml) while the CUDA core scores the largest batch. Results go
to benchmarks/results/<out>.json and a table. It checks, before timing, that the CUDA
core's outputs equal the CPU core's within 1e-5.

With no GPU (no nvidia-smi, or numba.cuda sees none) it says so, runs the CPU part (the
CPU core on the same models at a few batch sizes), writes the JSON and exits 0. On one
H100/H200 the full run is sized to finish in well under 10 minutes. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import machine, rate, table, write  # noqa: E402

FEATURES = 100
TOL = 1e-5


# ---- models ------------------------------------------------------------------------------------
def _data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    w = rng.normal(size=FEATURES)
    y = (X @ w + 2 * np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2] > 0).astype(np.int32)
    return X, y


def train_models(train_rows: int, on_gpu: bool) -> dict[str, dict[str, Any]]:
    """name -> {"source": fitted model, "kind": ...}; each trained once, here."""
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = _data(train_rows)
    models: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    def xgboost(device: str) -> Any:
        return xgb.XGBClassifier(n_estimators=500, max_depth=8, learning_rate=0.05, tree_method="hist",
                                 device=device).fit(X, y).get_booster()

    try:
        booster = xgboost("cuda" if on_gpu else "cpu")
    except xgb.core.XGBoostError:  # an XGBoost built without CUDA trains on the CPU; the model is the same
        booster = xgboost("cpu")
    models["xgboost_500x8"] = {"source": booster, "kind": "xgboost"}
    lgbm = lgb.train({"objective": "binary", "num_leaves": 255, "min_data_in_leaf": 5, "learning_rate": 0.05,
                      "verbose": -1}, lgb.Dataset(X, y), 500)
    models["lightgbm_500x255"] = {"source": lgbm, "kind": "lightgbm"}
    forest = RandomForestClassifier(n_estimators=100, max_depth=12, n_jobs=-1, random_state=0).fit(X, y)
    models["random_forest_100x12"] = {"source": forest, "kind": "sklearn_forest"}
    models["logistic_100"] = {"source": LogisticRegression(max_iter=200).fit(X, y), "kind": "linear"}
    try:
        import torch

        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Linear(FEATURES, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 1), torch.nn.Sigmoid()).eval()
        models["mlp_100_256_256_1"] = {"source": mlp, "kind": "torch"}
    except ImportError:
        pass
    print(f"trained {len(models)} models on {train_rows} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    return models


# ---- timing --------------------------------------------------------------------------------------
def _cell(fn: Callable[[], object], rows: int, seconds: float) -> dict[str, float]:
    return rate(fn, rows, min_seconds=seconds, max_calls=2000)


def latency(fn: Callable[[], object], calls: int) -> dict[str, float]:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    us = np.array(times) * 1e6
    return {f"p{q}_us": float(np.percentile(us, q)) for q in (50, 90, 99)} | {"calls": calls}


# ---- the GPU peers -------------------------------------------------------------------------------
def _sync() -> None:
    from numba import cuda

    cuda.synchronize()


def _xgboost_cuda(booster: Any, X: np.ndarray) -> tuple[Callable[[int], Callable[[], object]], str]:
    booster = booster.copy()
    booster.set_param({"device": "cuda"})
    try:
        import cupy

        on_device = cupy.asarray(X)
        where = "cupy array on the GPU"

        def make(n: int) -> Callable[[], object]:
            part = on_device[:n]
            return lambda: (booster.inplace_predict(part), cupy.cuda.Device().synchronize())
    except ImportError:
        where = "host numpy (CuPy not importable)"

        def make(n: int) -> Callable[[], object]:
            part = X[:n]
            return lambda: booster.inplace_predict(part)
    return make, where


def _cuml_fil(spec: dict[str, Any], X: np.ndarray, tmp: Path) -> Callable[[int], Callable[[], object]] | None:
    try:
        from cuml import ForestInference
    except ImportError:
        return None
    kind, source = spec["kind"], spec["source"]
    if kind == "xgboost":
        path = tmp / "fil.json"
        source.save_model(str(path))
        fil = ForestInference.load(str(path), model_type="xgboost_json", output_class=True)
    elif kind == "lightgbm":
        path = tmp / "fil.txt"
        source.save_model(str(path))
        fil = ForestInference.load(str(path), model_type="lightgbm", output_class=True)
    elif kind == "sklearn_forest":
        fil = ForestInference.load_from_sklearn(source, output_class=True)
    else:
        return None
    import cupy

    on_device = cupy.asarray(X)

    def make(n: int) -> Callable[[], object]:
        part = on_device[:n]
        return lambda: (fil.predict_proba(part), cupy.cuda.Device().synchronize())

    return make


def _torch_tensor(spec: dict[str, Any], compiled: Any, X: np.ndarray,
                  device: str = "cuda:0") -> Callable[[int], Callable[[], object]] | None:
    """Hummingbird's execution strategies, written for this suite: trees as a gather
    traversal over all rows and trees at once (its TreeTraversal), dense models as torch."""
    import torch

    dev = torch.device(device)
    Xd = torch.as_tensor(X, device=dev)
    if spec["kind"] == "torch":
        module = spec["source"].to(dev)

        def run(x: Any) -> Any:
            with torch.inference_mode():
                return module(x)
    elif spec["kind"] == "linear":
        lr = spec["source"]
        w = torch.as_tensor(lr.coef_.T, dtype=torch.float32, device=dev)
        b = torch.as_tensor(lr.intercept_, dtype=torch.float32, device=dev)

        def run(x: Any) -> Any:
            return torch.sigmoid(x @ w + b)
    else:
        from scoring_core.cuda.trees import gpu_layout

        stage = compiled.model
        params, arrays = stage.ensemble.to_arrays()
        lay = gpu_layout(arrays)
        feature = torch.as_tensor(lay["feature"].astype(np.int64), device=dev)
        thr = torch.as_tensor(lay["threshold"], device=dev)
        child = torch.as_tensor(lay["child"].astype(np.int64), device=dev)
        nan_right = torch.as_tensor((lay["flags"] & 1).astype(bool), device=dev)
        roots = torch.as_tensor(lay["tree_root"].astype(np.int64), device=dev)
        width = int(params.get("leaf_width", 1))
        leaf = torch.as_tensor(arrays["leaf_value"].astype(np.float32).reshape(-1, width), device=dev)
        from scoring_core.trees.layouts import tree_depths

        depth = int(tree_depths(arrays["tree_root"], arrays["node_children"]).max())
        chunk = 1 << 14  # rows a step: (chunk, trees) int64 indices stay in a few hundred MiB

        def run(x: Any) -> Any:
            outs = []
            for x_part in torch.split(x, chunk):
                idx = roots.expand(x_part.shape[0], -1)
                for _ in range(depth):
                    f = feature[idx]
                    v = torch.gather(x_part, 1, f.clamp(min=0))
                    right = (v >= thr[idx]) | (torch.isnan(v) & nan_right[idx])
                    idx = torch.where(f >= 0, child[idx] + right.long(), idx)
                outs.append(leaf[child[idx]].sum(dim=1))
            return torch.cat(outs)

    def make(n: int) -> Callable[[], object]:
        part = Xd[:n]
        return lambda: (run(part), torch.cuda.synchronize() if dev.type == "cuda" else None)

    return make


def _nvml_sample(fn: Callable[[], object], seconds: float) -> dict[str, Any] | None:
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    util, used = [], []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()
        util.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        used.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    return {"gpu_util_percent_max": max(util), "gpu_util_percent_mean": float(np.mean(util)),
            "memory_used_bytes_max": max(used), "name": str(pynvml.nvmlDeviceGetName(handle))}


# ---- the run -------------------------------------------------------------------------------------
def gpu_available() -> tuple[bool, str]:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False, "NUMBA_ENABLE_CUDASIM=1: the CUDA simulator is no GPU to time"
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA GPU here (no nvidia-smi)"
    try:
        from numba import cuda
    except ImportError as err:
        return False, f"numba-cuda is not installed ({err}): pip install 'milepost[gpu]'"
    if not cuda.is_available():
        return False, f"numba.cuda sees no GPU ({cuda.cuda_error()})"
    return True, str(cuda.get_current_device().name)


def gpu_engines(spec: dict[str, Any], compiled: Any, X: np.ndarray, entry: dict[str, Any],
                tmp: Path) -> dict[str, Callable[[int], Callable[[], object]]]:
    """The GPU contenders for one model, each ``batch size -> a call to time``; a peer that
    cannot load is noted in ``entry["errors"]`` and left out."""
    from numba import cuda

    gpu = compiled.to("cuda:0")
    check = X[:100_000]
    entry["max_abs_diff_vs_cpu_core"] = float(np.nanmax(np.abs(gpu.predict(check) - compiled.predict(check))))
    X_dev = cuda.to_device(X)
    engines: dict[str, Callable[[int], Callable[[], object]]] = {
        "cuda_core": lambda n: (lambda part=X[:n]: gpu.predict(part)),
        "cuda_core_resident": lambda n: (lambda part=X_dev[:n]: (gpu.predict_device(part), _sync())),
    }
    trees = gpu.device_stages[-1]
    if not gpu.transforms and hasattr(trees, "staging"):
        entry["tree_staging_default"] = trees.staging
        other = "global" if trees.staging == "shared" else "shared"
        engines[f"cuda_core_resident_{other}"] = lambda n: (
            lambda part=X_dev[:n]: (trees.predict(part, staging=other), _sync()))
    peers: dict[str, Callable[[], Any]] = {
        "cuml_fil": lambda: _cuml_fil(spec, X, tmp),
        "torch_tensor": lambda: _torch_tensor(spec, compiled, X),
    }
    if spec["kind"] == "xgboost":
        make, entry["xgboost_cuda_input"] = _xgboost_cuda(spec["source"], X)
        engines["xgboost_cuda"] = make
    for peer, load in peers.items():
        try:
            made = load()
        except Exception as err:  # noqa: BLE001 - a peer that fails to load is reported, not fatal
            entry["errors"][peer] = repr(err)
            continue
        if made is not None:
            engines[peer] = made
    return engines


def run(args: argparse.Namespace) -> dict[str, Any]:
    import scoring_core

    on_gpu, why = gpu_available()
    print(f"GPU: {why}" if on_gpu else f"no GPU: {why}; running the CPU part only", flush=True)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else (
        [1, 16, 256, 4096, 65536, 1 << 20] if on_gpu else [1, 1000, 100_000])
    if args.quick:
        batches = [b for b in batches if b <= 100_000]
    seconds = 0.2 if args.quick or not on_gpu else 0.3
    models = train_models(args.train_rows, on_gpu)
    X, _ = _data(max(batches), seed=1)
    X[::17, 3] = np.nan
    result: dict[str, Any] = {"machine": machine(), "gpu": why if on_gpu else None, "no_gpu_reason": None if on_gpu else why,
                              "batches": batches, "train_rows": args.train_rows, "models": {},
                              "load_average_before_timing": os.getloadavg()}  # a shared machine's figures need it
    rows_out: list[list[object]] = []
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "milepost-gpu-bench"
    tmp.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget_s
    for name, spec in models.items():
        compiled = scoring_core.compile(spec["source"])
        entry: dict[str, Any] = {"engines": {}, "errors": {}}
        result["models"][name] = entry
        engines: dict[str, Callable[[int], Callable[[], object]]] = {
            "cpu_core": lambda n, c=compiled: (lambda part=X[:n]: c.predict(part)),
        }
        if on_gpu:
            try:
                engines.update(gpu_engines(spec, compiled, X, entry, tmp))
            except Exception as err:  # noqa: BLE001 - a model the GPU side cannot take is reported, not fatal
                entry["errors"]["cuda_core"] = repr(err)
        for engine, make in engines.items():
            cells = entry["engines"][engine] = {}
            for n in batches:
                if time.perf_counter() > deadline:
                    cells[str(n)] = {"skipped": f"past the {args.budget_s:.0f} s budget"}
                    continue
                try:
                    cells[str(n)] = _cell(make(n), n, seconds)
                except Exception as err:  # noqa: BLE001 - a peer that fails is reported, not fatal
                    entry["errors"][f"{engine}@{n}"] = repr(err)
                    break
                rows_out.append([name, engine, n, cells[str(n)]["rows_per_s"], cells[str(n)]["us_per_call"]])
                print(f"  {name:22s} {engine:26s} {n:>8d}  {cells[str(n)]['rows_per_s']:>14,.0f} rows/s", flush=True)
        calls = 200 if args.quick else 1000
        entry["latency"] = {f"{engine}@{n}": latency(engines[engine](n), calls)
                            for engine in ("cpu_core", "cuda_core") if engine in engines for n in (1, 64)}
        if "cuda_core_resident" in engines:
            big = max(batches)
            entry["nvml_at_largest_batch"] = _nvml_sample(engines["cuda_core_resident"](big), 2.0)
            gpu_rates = entry["engines"]["cuda_core_resident"]
            cpu_rates = entry["engines"]["cpu_core"]
            entry["crossover_batch"] = next((n for n in batches if "rows_per_s" in gpu_rates.get(str(n), {})
                                             and gpu_rates[str(n)]["rows_per_s"]
                                             > cpu_rates.get(str(n), {}).get("rows_per_s", float("inf"))), None)
    print()
    print(table(["model", "engine", "batch", "rows/s", "us/call"], rows_out))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="", help="comma-separated batch sizes (default: by machine)")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="batches up to 100k rows, shorter timings")
    parser.add_argument("--out", default="gpu")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting new timings after this long")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - t0
    print(f"wrote {write(args.out, result)} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
