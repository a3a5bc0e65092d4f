"""Tree ensembles on the GPU: a layout for it, the walk kernel, and the stage that runs them.

Layout (``gpu_layout``, built once when a model moves to a device, from the ensemble's
canonical arrays): every node, leaves included, is one slot of five flat arrays
(``feature`` (-1 for a leaf), ``threshold``, ``child``, ``flags``, ``cat_set``); each tree
is laid out breadth-first with the two children of a node side by side, so that a step is
``i = child[i] + right`` (one load gives both children, no branch), and a leaf's ``child``
is its index among the leaf values. The CPU layouts (``scoring_core.trees.layouts``) turn
thresholds into integer order keys and mirror NaN-right nodes onto negated columns, which
pays on a CPU; a GPU compares floats as fast as integers, so here a numerical node keeps its
float threshold and its NaN bit: ``right = x >= t``, or the bit when ``x`` is NaN. A
categorical node is tested by the CPU walk's own function
(``scoring_core.trees.tree_kernels.categorical_step``, compiled as a device function).

Kernel (``_tree_kernels.walk_kernel``): one row per thread, or, for batches too small to fill the GPU,
``lanes`` threads per row (a power of two up to 32) that take the trees strided (lane
``k`` walks trees ``k, k + lanes, ...``) and are summed in a fixed pairwise order in shared
memory: no atomics, and the same sum on every run. Rows are column-major on the device
(Arrow batches arrive so), so the threads of a warp, on consecutive rows, read one feature
with one coalesced load. Input rules (LightGBM's missing values, category casts) are
applied first, once per value, by ``_tree_kernels.rules_kernel`` into a float32 copy, as the CPU
kernels apply them while gathering a block.

Precision: leaves are summed in the library's precision (float32 for XGBoost, float64 for
LightGBM and scikit-learn), in tree order, from the base margin, as on the CPU. With one
lane per row the sum is the CPU's, addition for addition; with several lanes it is
reassociated (a float32 sum of 500 leaves moves by a few ulp, well within 1e-5), and CUDA's
``exp`` may differ from the CPU's by an ulp in the link.

Where the forest lives (``staging``): with "shared", each block copies the forest into
its shared memory a chunk of consecutive trees at a time (``chunks``: as many trees as fit
in ``SHARED_SLOTS`` nodes; a larger tree is walked from global memory), and every row of
the block walks the chunk there; with "global" the walk reads the node arrays where they
are, through the L1/L2 caches (every thread of a warp is on one tree, so the top levels are
shared). By default a forest that fits in one chunk is staged and a larger one is walked
in global memory: a 500-tree, depth-8 model is ~3 MiB, and whether re-staging it chunk by
chunk in every block pays is what ``benchmarks/gpu.py`` measures (both are timed there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from scoring_core.cuda import _runtime as rt
from scoring_core.trees import tree_kernels as K
from scoring_core.trees.ensemble import LINKS
from scoring_core.trees.stage import TreeStage

# Threads a block for the walk (4 warps; the kernels' TREE_BLOCK), and most lanes a row.
TREE_BLOCK = 128
MAX_LANES = 32
# Nodes a block stages in shared memory: 13 bytes each, 39 KiB, under the 48 KiB a block has.
SHARED_SLOTS = 3072
STAGINGS = ("auto", "global", "shared")
FINISH_PLAIN, FINISH_BINARY, FINISH_ARGMAX = 0, 1, 2  # as the kernels' codes
_NAN_REACHES = (K.TRANSFORM_NONE, K.TRANSFORM_LGB_KEEP_NAN, K.TRANSFORM_LGB_ZERO_IS_MISSING)


@njit(cache=True)
def _place(ref, s, feature, threshold, flags, cat_set, f_out, t_out, c_out, fl_out, cs_out, queue_slot, queue_node, tail):
    """Put canonical node ``ref`` (an id, or ``~leaf``) in slot ``s``; an internal node joins
    the queue, whose children are placed when it comes out. Returns the new queue tail."""
    if ref < 0:
        f_out[s] = -1
        t_out[s] = 0.0
        fl_out[s] = 0
        cs_out[s] = -1
        c_out[s] = ~ref
        return tail
    f_out[s] = feature[ref]
    t_out[s] = threshold[ref]
    fl_out[s] = flags[ref]
    cs_out[s] = cat_set[ref]
    queue_slot[tail] = s
    queue_node[tail] = ref
    return tail + 1


@njit(cache=True)
def _build(tree_root, children, feature, threshold, flags, cat_set, f_out, t_out, c_out, fl_out, cs_out, root_out):
    """Fill the GPU layout (module docstring) from canonical nodes, tree by tree,
    breadth-first; returns the slots used (``n_trees + 2 * n_internal``)."""
    queue_slot = np.empty(f_out.shape[0], np.int64)
    queue_node = np.empty(f_out.shape[0], np.int64)
    pos = 0
    for t in range(tree_root.shape[0]):
        root_out[t] = pos
        head = 0
        tail = _place(tree_root[t], pos, feature, threshold, flags, cat_set, f_out, t_out, c_out, fl_out, cs_out,
                      queue_slot, queue_node, 0)
        pos += 1
        while head < tail:
            slot = queue_slot[head]
            node = queue_node[head]
            head += 1
            c_out[slot] = pos
            for side in range(2):
                tail = _place(children[2 * node + side], pos + side, feature, threshold, flags, cat_set,
                              f_out, t_out, c_out, fl_out, cs_out, queue_slot, queue_node, tail)
            pos += 2
    return pos


def gpu_layout(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The flat node arrays of the module docstring from an ensemble's canonical
    ``arrays`` (``TreeEnsemble.to_arrays``). A numerical node whose feature cannot hold NaN
    when it is walked (a category rule turned it into a number) loses its NaN bit, as the
    CPU kernel form ignores it there."""
    transform = arrays["feature_transform"]
    feature = arrays["node_feature"].astype(np.int32)
    flags = arrays["node_flags"].copy()
    numerical = (flags & K.FLAG_CATEGORICAL) == 0
    no_nan = numerical & ~np.isin(transform, _NAN_REACHES)[feature]
    flags[no_nan] &= np.uint8(~K.FLAG_NAN_RIGHT & 0xFF)
    roots = arrays["tree_root"].astype(np.int64)
    children = arrays["node_children"].astype(np.int64)
    n_slots = roots.size + children.size
    out: dict[str, np.ndarray] = {
        "feature": np.empty(n_slots, np.int32),
        "threshold": np.empty(n_slots, np.float32),
        "child": np.empty(n_slots, np.int32),
        "flags": np.empty(n_slots, np.uint8),
        "cat_set": np.empty(n_slots, np.int32),
        "tree_root": np.empty(roots.size, np.int32),
    }
    used = _build(roots, children, feature, arrays["node_threshold"], flags, arrays["node_cat_set"],
                  out["feature"], out["threshold"], out["child"], out["flags"], out["cat_set"], out["tree_root"])
    assert used == n_slots, (used, n_slots)  # every node, and every leaf reference, once
    return out


def chunks(tree_root: np.ndarray, n_slots: int, cap: int) -> np.ndarray:
    """Tree boundaries (n_chunks + 1) of consecutive trees whose slots fit ``cap`` together;
    a tree larger than ``cap`` is a chunk of its own, which the kernel walks in global memory."""
    sizes = np.diff(np.append(tree_root.astype(np.int64), n_slots))
    bounds = [0]
    total = 0
    for t, size in enumerate(sizes.tolist()):
        if t > bounds[-1] and total + size > cap:
            bounds.append(t)
            total = 0
        total += size
    bounds.append(len(sizes))
    return np.asarray(bounds if len(sizes) else [0, 0], np.int32)


def choose_lanes(n_rows: int, n_trees: int, sm_count: int) -> int:
    """Lanes a row: enough threads to fill the GPU (2048 a multiprocessor) when rows are
    few, one a row when they are many; never more lanes than trees, at most 32."""
    if n_rows <= 0:
        return 1
    want = sm_count * 2048 // n_rows
    lanes = 1
    while lanes * 2 <= min(want, MAX_LANES, max(1, n_trees)):
        lanes *= 2
    return lanes


def _kernels() -> Any:
    from scoring_core.cuda import _tree_kernels  # imports numba.cuda: only once a model is on a device

    assert _tree_kernels.TREE_BLOCK == TREE_BLOCK and _tree_kernels.FINISH_ARGMAX == FINISH_ARGMAX
    return _tree_kernels


class DeviceTrees:
    """A TreeStage on a GPU: ``predict`` takes a device matrix (n, n_features), any float
    dtype and order, and returns the (n, n_outputs) float64 device array the CPU stage
    returns on the host."""

    def __init__(self, stage: TreeStage, *, shared_slots: int = SHARED_SLOTS) -> None:
        self.cu = cu = rt.cuda()
        params, arrays = stage.ensemble.to_arrays()
        layout = gpu_layout(arrays)
        self.n_features = stage.n_features
        self.n_outputs = stage.n_outputs
        self.n_groups = int(params["n_groups"])
        self.leaf_width = int(params.get("leaf_width", 1))
        self.acc = str(params["accumulate"])
        self.categorical = bool(np.any(arrays["node_flags"] & K.FLAG_CATEGORICAL))
        self.n_trees = int(layout["tree_root"].size)
        self.transform = arrays["feature_transform"]
        self.any_rule = bool(np.any(self.transform != K.TRANSFORM_NONE))
        if params["link"] == "argmax":
            self.finish = FINISH_ARGMAX
        elif stage.probabilities and stage.ensemble.n_outputs == 1:
            self.finish = FINISH_BINARY
        else:
            self.finish = FINISH_PLAIN
        self.link = LINKS[params["link"]]
        self.link_scale = float(params["link_scale"])
        self.divisor = float(params["divisor"])
        leaf = arrays["leaf_value"].astype(self.acc)
        self._args = tuple(cu.to_device(a) for a in (
            layout["tree_root"], arrays["tree_group"], layout["feature"], layout["threshold"], layout["child"],
            layout["flags"], layout["cat_set"], arrays["cat_bounds"], arrays["cat_bits"], leaf,
            arrays["base_margin"].astype(self.acc)))
        self._transform = cu.to_device(self.transform)
        # Staging: "shared" copies the forest into each block's shared memory a chunk of trees
        # at a time, "global" walks it where it is; "auto" stages a forest that fits in one chunk.
        n_slots = int(layout["feature"].size)
        # A forest smaller than the chunk gets shared arrays of its size (to a power of two):
        # less shared memory a block, more blocks a multiprocessor.
        self.shared_slots = min(shared_slots, 1 << max(0, n_slots - 1).bit_length())
        shared = chunks(layout["tree_root"], n_slots, self.shared_slots)
        self._chunks = {"global": cu.to_device(np.array([0, self.n_trees], np.int32)), "shared": cu.to_device(shared)}
        self._trees_a_chunk = int(np.diff(shared).min()) if self.n_trees else 1
        self.staging = "shared" if len(shared) == 2 else "global"
        self.sm_count = 1 if rt.simulated() else int(cu.get_current_device().MULTIPROCESSOR_COUNT)

    def predict(self, X: Any, *, lanes: int | None = None, staging: str = "auto") -> Any:
        """``lanes`` and ``staging`` (one of STAGINGS) override the choices, for tests and
        benchmarks."""
        if staging not in STAGINGS:
            raise ValueError(f"staging must be one of {STAGINGS}, got {staging!r}")
        staging = self.staging if staging == "auto" else staging
        n = X.shape[0]
        out = rt.device_empty((n, self.n_outputs), np.float64)
        if n == 0:
            return out
        if self.any_rule or X.dtype != np.float32:
            Xt = rt.device_empty(X.shape, np.float32, order="F")
            rules = rt.kernel(("tree_rules",), _kernels().rules_kernel)
            rules[rt.blocks(n, rt.ROW_BLOCK), rt.ROW_BLOCK](X, Xt, self._transform)
            X = Xt
        if lanes is None:
            # Staged, lanes past the trees of a chunk would idle.
            most = self.n_trees if staging == "global" else self._trees_a_chunk
            lanes = choose_lanes(n, most, self.sm_count)
        cap = self.shared_slots if staging == "shared" else 1
        key = ("tree_walk", self.n_groups, self.leaf_width, lanes, self.acc, self.categorical, cap)
        walk = rt.kernel(key, lambda: _kernels().walk_kernel(self.n_groups, self.leaf_width, lanes, self.acc,
                                                             self.categorical, cap))
        rows_a_block = TREE_BLOCK // lanes
        walk[rt.blocks(n, rows_a_block), TREE_BLOCK](X, out, *self._args, self.divisor, self.link,
                                                       self.link_scale, self.finish, self._chunks[staging])
        return out
