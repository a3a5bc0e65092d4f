"""The tree kernels (``scoring_core.cuda.trees`` says what they do); this module imports
``numba.cuda``, and is imported only when a first kernel is built."""

# mypy: ignore-errors
# (kernel bodies are numba-cuda's dialect: cuda.grid, threadIdx and local arrays have no Python types)

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, types

from scoring_core.trees import tree_kernels as K

# Threads a block for the walk: 4 warps.
TREE_BLOCK = 128
# The CPU walk's categorical node test, compiled from the same Python function for the GPU.
categorical_step = cuda.jit(device=True)(K.categorical_step.py_func)
FINISH_PLAIN, FINISH_BINARY, FINISH_ARGMAX = 0, 1, 2
_LGB_ZERO = np.float32(1e-35)


def rules_kernel() -> Any:
    """``Xt[r, f] = rule_f(float32(X[r, f]))``: the per-feature input rules of
    ``scoring_core.trees.tree_kernels`` (TRANSFORM_*), one row a thread."""

    @cuda.jit
    def rules(X, Xt, transform):
        r = cuda.grid(1)
        if r >= X.shape[0]:
            return
        for f in range(X.shape[1]):
            x = np.float32(X[r, f])
            code = transform[f]
            if code == K.TRANSFORM_LGB_NAN_TO_ZERO:
                if x != x or abs(x) <= _LGB_ZERO:
                    x = np.float32(0.0)
            elif code == K.TRANSFORM_LGB_KEEP_NAN:
                if abs(x) <= _LGB_ZERO:
                    x = np.float32(0.0)
            elif code == K.TRANSFORM_LGB_ZERO_IS_MISSING:
                if x != x or abs(x) <= _LGB_ZERO:
                    x = np.float32(math.nan)
            elif code == K.TRANSFORM_LGB_CATEGORY:
                if x <= -1.0 or x >= 2147483648.0:
                    x = np.float32(-1.0)
                elif x < 0.0:
                    x = np.float32(0.0)
            elif code == K.TRANSFORM_XGB_CATEGORY:
                if x < 0.0 or x >= 16777216.0:
                    x = np.float32(-1.0)
            elif code == K.TRANSFORM_SKL_CATEGORY:
                if x == x and math.fmod(x, 1.0) != 0.0:  # not an integer (math.floor gives an int here)
                    x = np.float32(-1.0)
            Xt[r, f] = x

    return rules


def walk_kernel(n_groups: int, leaf_width: int, lanes: int, acc_name: str, categorical: bool, cap: int) -> Any:
    """The walk for one specialisation; its closure constants are what CUDA must know at
    compile time (local and shared array sizes and types, the lane count). The block's
    shared arrays hold ``cap`` nodes (1 when nothing is staged)."""
    ACC = types.float32 if acc_name == "float32" else types.float64
    G = n_groups
    LW = leaf_width
    L = lanes
    ROWS = TREE_BLOCK // lanes
    CAP = cap
    NAN_RIGHT = K.FLAG_NAN_RIGHT
    CAT = K.FLAG_CATEGORICAL

    @cuda.jit(device=True)
    def descend(X, row, i, base, feature, threshold, child, flags, cat_set, cat_bounds, cat_bits):
        """From root slot ``i`` to a leaf; the node arrays hold slots ``base ..`` (shared
        memory) or all of them (``base`` 0). Returns the leaf's index."""
        f = feature[i - base]
        while f >= 0:
            x = X[row, f]
            fl = flags[i - base]
            if categorical and (fl & CAT) != 0:
                right = categorical_step(x, fl, cat_set[i], cat_bounds, cat_bits)
            elif x != x:
                right = (fl & NAN_RIGHT) != 0
            else:
                right = x >= threshold[i - base]
            i = child[i - base] + (1 if right else 0)
            f = feature[i - base]
        return child[i - base]

    @cuda.jit
    def walk(X, out, tree_root, tree_group, feature, threshold, child, flags, cat_set, cat_bounds, cat_bits,
             leaf, base_margin, divisor, link, link_scale, finish, chunk_tree):
        tid = cuda.threadIdx.x
        lane = tid % L
        row = cuda.blockIdx.x * ROWS + tid // L
        part = cuda.local.array(G, ACC)
        for g in range(G):
            part[g] = base_margin[g] if lane == 0 else 0.0
        sh_feature = cuda.shared.array(CAP, types.int32)
        sh_threshold = cuda.shared.array(CAP, types.float32)
        sh_child = cuda.shared.array(CAP, types.int32)
        sh_flags = cuda.shared.array(CAP, types.uint8)
        n_trees = tree_root.shape[0]
        for chunk in range(chunk_tree.shape[0] - 1):
            # Trees t0 .. t1 are slots s0 .. s1 (each tree's slots follow its root): the
            # block copies them to shared memory when they fit, then every row walks them.
            t0 = chunk_tree[chunk]
            t1 = chunk_tree[chunk + 1]
            s0 = tree_root[t0]
            s1 = tree_root[t1] if t1 < n_trees else feature.shape[0]
            in_shared = s1 - s0 <= CAP
            if in_shared:
                q = tid
                while q < s1 - s0:
                    sh_feature[q] = feature[s0 + q]
                    sh_threshold[q] = threshold[s0 + q]
                    sh_child[q] = child[s0 + q]
                    sh_flags[q] = flags[s0 + q]
                    q += TREE_BLOCK
            cuda.syncthreads()
            if row < X.shape[0]:
                t = t0 + lane
                while t < t1:
                    if in_shared:
                        k = descend(X, row, tree_root[t], s0, sh_feature, sh_threshold, sh_child, sh_flags, cat_set,
                                    cat_bounds, cat_bits)
                    else:
                        k = descend(X, row, tree_root[t], 0, feature, threshold, child, flags, cat_set, cat_bounds,
                                    cat_bits)
                    if LW == 1:
                        g = tree_group[t]
                        part[g] = part[g] + leaf[k]
                    else:
                        for g in range(LW):
                            part[g] = part[g] + leaf[k * LW + g]
                    t += L
            cuda.syncthreads()  # before the next chunk overwrites shared memory
        if L > 1:
            shared = cuda.shared.array(TREE_BLOCK, ACC)
            for g in range(G):
                shared[tid] = part[g]
                cuda.syncthreads()
                s = L // 2
                while s > 0:
                    if lane < s:
                        shared[tid] = shared[tid] + shared[tid + s]
                    cuda.syncthreads()
                    s //= 2
                part[g] = shared[tid]
                cuda.syncthreads()
        if row >= X.shape[0] or lane != 0:
            return
        if divisor != 1.0:
            for g in range(G):
                part[g] = part[g] / divisor
        if link == K.LINK_SOFTMAX:
            top = np.float64(part[0])
            for g in range(1, G):
                if part[g] > top:
                    top = np.float64(part[g])
            total = 0.0
            for g in range(G):
                e = math.exp(np.float64(part[g]) - top)
                part[g] = e
                total += e
            for g in range(G):
                part[g] = np.float64(part[g]) / total
        elif link != K.LINK_IDENTITY:
            for g in range(G):
                x = np.float64(part[g])
                if link == K.LINK_SIGMOID:
                    y = 1.0 / (1.0 + math.exp(-(link_scale * x)))
                elif link == K.LINK_EXP:
                    y = math.exp(x)
                elif link == K.LINK_HINGE:
                    y = 1.0 if x > 0.0 else 0.0
                elif link == K.LINK_LOG1P_EXP:
                    y = math.log1p(math.exp(x))
                else:  # LINK_SIGNED_SQUARE
                    y = x * abs(x)
                part[g] = y
        if finish == FINISH_ARGMAX:
            best = 0
            for g in range(1, G):
                if part[g] > part[best]:
                    best = g
            out[row, 0] = best
        elif finish == FINISH_BINARY:
            p = np.float64(part[0])
            out[row, 0] = 1.0 - p
            out[row, 1] = p
        else:
            for g in range(G):
                out[row, g] = part[g]

    return walk
