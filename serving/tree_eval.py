"""A binary:logistic tree ensemble compiled to one Python function, for small requests.

Why: `Booster.inplace_predict` has a fixed cost per call whatever the row count. On this
project's machines it is about 0.25 ms, most of it four reads of the cgroup CPU-quota
files (`/sys/fs/cgroup/cpu/cpu.cfs_*`) that XGBoost makes on every call, at ~50 µs each
in these VMs; it would be most of the time of a single-row request. An earlier numpy
evaluator took ~12 µs per row in a loop but ~30 µs inside the server, where the dispatch
code of its ten numpy calls is evicted from the CPU caches by the HTTP stack between
requests; plain comparisons in one function cost less there (benchmarks/README.md).

How: every split becomes an `if` in generated source, compiled once when the model loads.
Trees that share a split are merged first: for all trees whose root is split s,
Σ tree(x) = [x goes left at s]·Σ left(x) + [x goes right at s]·Σ right(x), applied again
to the subtrees, so a split shared by many trees is decided once, and the leaves its
path reaches are set together. XGBoost goes left when value < threshold in float32, and a missing
value (NaN) follows the node's default: `not x >= t` sends NaN left, `x < t` sends it
right. Inputs are float32 values (serving.decoder rounds them), so comparing them with
the float32 thresholds as Python floats decides exactly as XGBoost does.

Many shallow trees over few features (training's defaults: 240 trees of depth 2 over five
features) are answered by tables instead (`_table_source`): each value's interval among its
feature's thresholds is found once (`bisect`), and every group of trees splitting on the same
features gets its packed float32 leaves from one precomputed table (240 x 2: one row 8.5 ->
5 µs; 32 rows 280 -> 120 µs).

Bit for bit: a row's probability must not depend on how many rows share its request (the
server answers small requests here and larger ones with XGBoost), so the arithmetic after
the splits is XGBoost's own, in float32 (xgboost 3.2, src/predictor/cpu_predictor.cc,
src/common/math.h, src/objective/regression_loss.h): the margin starts at the base margin
`-logf(1/p - 1)` of the float32 base score p (clamped to [1e-6, 1 - 1e-6]) and adds each
tree's leaf in tree order, rounding to float32 after every addition; the probability is
`1 / ((expf(min(-margin, 88.7)) + 1) + 1e-16)` in float32, with the C library's `expf`
(libxgboost calls the same `expf@GLIBC_2.27`). So merged trees still decide shared splits
once, but each path assigns every tree's leaf to its own variable instead of adding them
up, and the float32 sums are made in that order (numpy's `add.accumulate` is a sequential
prefix sum, not a pairwise one).

Where a C compiler is at hand, the same walk and sums run in C (serving/ensemble.c, built by
serving.native): under load the generated Python costs the model server ~18 µs a request on the
slower VMs, mostly its code evicted from the CPU caches between requests. The generated function
stays the fallback, and both answer the same tests against XGBoost.

It is only a shortcut: `compile_trees` returns None for anything it does not reproduce
exactly (dart, categorical splits, multi-output, other objectives, non-finite thresholds, a
C library without `expf`) or that is too large to be worth it, and the model loader checks
that it gives XGBoost's exact float32 answers on probe rows before using it (serving.model).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
import itertools
import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving import native

SUPPORTED_OBJECTIVES = frozenset(("binary:logistic", "reg:logistic"))
# Beyond this many nodes the generated source (~60 bytes a node) takes seconds to compile
# and a row costs as much as XGBoost's fixed cost: such models use XGBoost alone.
MAX_NODES = 100_000
# Python refuses more than 100 levels of indentation: trees nested deeper are left to XGBoost.
NESTING_LIMIT = 90
# Searches (below) repeat subtrees: they stop growing the source beyond this many lines.
MAX_SOURCE_LINES = 30_000
# A request is answered here while rows x nodes stays under this (measured: one row of a
# 300-tree depth-6 model, 18,818 nodes, ~32 µs; one XGBoost call ~250 µs), else by XGBoost.
_NODES_PER_XGBOOST_CALL = 120_000
# However small the model: these requests are answered inline on the event loop (serving.app).
ROWS_LIMIT = 32


@dataclass(frozen=True)
class CompiledTrees:
    leaves: Callable[..., bytes]  # leaves(x0, x1, ...): the base margin, then each tree's leaf for one row, as float32
    base_margin: float  # float32, as XGBoost computes it from the base score
    num_features: int
    num_trees: int
    nodes: int
    searches: int  # features whose several thresholds became a binary search (below)
    max_rows: int  # requests of at most this many rows are cheaper here than in XGBoost
    tables: int = 0  # groups of trees answered by table look-ups (below); 0: the generated `if`s answer
    # With tables, leaves() packs the trees group by group: order[i] is where tree i-1's leaf is (0: the base margin).
    order: np.ndarray | None = field(default=None, compare=False)  # an array: kept out of == and hash
    walk: Any = field(default=None, compare=False)  # the ensemble in C (serving/ensemble.c), when it could be built

    def predict_rows(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Probabilities of rows of float32 values (NaN is missing): XGBoost's float32 answers, as Python floats."""
        if self.walk is not None:
            return self.walk(rows)
        leaves = self.leaves  # each row's base margin and leaves, packed as float32 (exact: they are float32)
        order = self.order
        if len(rows) == 1:  # the common request: no reshaping, no lists (~3 µs less than the general case)
            terms = _frombuffer(leaves(*rows[0]), _FLOAT32)
            return [_sigmoid(_accumulate(terms if order is None else terms[order]).item(-1))]
        terms = _frombuffer(b"".join([leaves(*row) for row in rows]), _FLOAT32).reshape(len(rows), self.num_trees + 1)
        if order is not None:
            terms = terms[:, order]
        return [_sigmoid(margin) for margin in _accumulate(terms, axis=1)[:, -1].tolist()]


def _libm_function(name: str) -> Callable[[float], float] | None:
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_float]
    return function


_expf = _libm_function("expf")
_logf = _libm_function("logf")
_EXP_LIMIT = float(np.float32(88.7))  # XGBoost's guard against expf overflow
_BASE_SCORE_EPS = float(np.float32(1e-6))  # XGBoost's kRtEps


_F32 = struct.Struct("f")
_F32_PACK, _F32_UNPACK = _F32.pack, _F32.unpack
_FLOAT32 = np.dtype(np.float32)
_accumulate = np.add.accumulate  # a sequential prefix sum (not pairwise): XGBoost's order of additions
_frombuffer = np.frombuffer


@functools.lru_cache(maxsize=256)
def _float32_struct(count: int) -> struct.Struct:
    return struct.Struct(f"{count}f")


def _round_float32(values: list[float]) -> list[float]:
    # Python's + and / round to float64; rounding that to float32 gives float32's own result
    # (float64 has more than 2 x 24 + 2 bits, so the double rounding is innocuous).
    rounder = _float32_struct(len(values))
    return list(rounder.unpack(rounder.pack(*values)))


def _sigmoid(margin: float) -> float:
    # One row's float32 sigmoid (below) with no list: a ctypes call and two float32 roundings.
    return _F32_UNPACK(_F32_PACK(1.0 / _F32_UNPACK(_F32_PACK(_expf(min(-margin, _EXP_LIMIT)) + 1.0))[0]))[0]  # type: ignore[misc]


def sigmoid_float32(margins: Sequence[float]) -> list[float]:
    """XGBoost's common::Sigmoid(float) of float32 margins: 1 / ((expf(min(-m, 88.7)) + 1) + 1e-16), in float32.

    The + 1e-16 is left out: added to a float32 of at least 1 it is below half a unit in
    the last place, so it never changes the sum. Each result is rounded to float32 as in
    _round_float32. numpy's float32 `exp` is not libm's
    `expf`: it differed on 39 % of 2 M sampled inputs here (AVX-512 loops), so each row
    costs one ctypes call (~0.6 µs).
    """
    return [_sigmoid(margin) for margin in margins]


def base_margin_float32(base_score: float) -> float:
    """XGBoost's LogisticRegression::ProbToMargin: -logf(1 / p - 1) of the clamped float32 base score, in float32."""
    (p,) = _round_float32([base_score])
    p = min(max(p, _BASE_SCORE_EPS), _round_float32([1.0 - _BASE_SCORE_EPS])[0])
    (odds,) = _round_float32([1.0 / p])
    (odds,) = _round_float32([odds - 1.0])
    return -_logf(odds)  # type: ignore[misc]


def _parse_base_score(text: str) -> float:
    # XGBoost 3 writes "[1.995E-1]" (a vector for multi-target), older versions "1.995E-1".
    return float(str(text).strip("[] "))


def _float32(value: float) -> float:
    # The JSON holds float32 values as short decimals: round them back to the exact float32.
    return _F32.unpack(_F32.pack(value))[0]


class _Tree:
    """One tree's arrays from the model JSON, with its values already read as float32."""

    def __init__(self, tree: dict, width: int, index: int) -> None:
        self.index = index  # its place in the ensemble: the order XGBoost adds the leaves in
        if any(t != 0 for t in tree.get("split_type", [])) or tree.get("categories"):
            raise ValueError("categorical splits")
        self.left = [int(n) for n in tree["left_children"]]
        self.right = [int(n) for n in tree["right_children"]]
        self.feature = [int(n) for n in tree["split_indices"]]
        # At a leaf, split_conditions holds the leaf's value.
        self.value = [_float32(float(v)) for v in tree["split_conditions"]]
        self.default_left = [bool(int(v)) for v in tree["default_left"]]
        count = len(self.left)
        if not count or any(len(a) != count for a in (self.right, self.feature, self.value, self.default_left)):
            raise ValueError("ragged tree arrays")
        for node in range(count):
            if self.left[node] != -1:
                if not (0 < self.left[node] < count and 0 < self.right[node] < count):
                    raise ValueError("child out of range")
                if not 0 <= self.feature[node] < width:
                    raise ValueError("split on a feature the model does not have")
                if not math.isfinite(self.value[node]):
                    raise ValueError("non-finite threshold")
            elif not math.isfinite(self.value[node]):
                raise ValueError("non-finite leaf")
        # Per feature it splits on: its thresholds (for the tables, below).
        self.thresholds: dict[int, set[float]] = {}
        for node in range(count):
            if self.left[node] != -1:
                self.thresholds.setdefault(self.feature[node], set()).add(self.value[node])
        # Per node: source lines of its subtree (2 a split, 1 a leaf) and its height, children first.
        self.size = [0] * count
        self.height = [0] * count
        state = [0] * count  # 0 unseen, 1 children pending, 2 done
        stack = [0]
        while stack:
            node = stack[-1]
            children = () if self.left[node] == -1 else (self.left[node], self.right[node])
            if state[node] == 0:
                state[node] = 1
                for child in children:
                    if state[child] != 0:
                        raise ValueError("not a tree")
                    stack.append(child)
            else:
                stack.pop()
                state[node] = 2
                self.size[node] = (2 if children else 1) + sum(self.size[c] for c in children)
                self.height[node] = 1 + max(self.height[c] for c in children) if children else 0


Subtrees = list[tuple[_Tree, int]]  # (tree, node) pairs whose outputs are to be added up


class _Source:
    """Writes the body of `leaves`: statements that set, for some subtrees, their tree's leaf variable `l<tree>`."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.searches = 0

    def add_sum(self, nodes: Subtrees, level: int) -> None:
        if level > NESTING_LIMIT:
            raise ValueError("too deep")
        assignments: list[str] = []
        by_feature: dict[int, dict[tuple[float, bool], tuple[Subtrees, Subtrees]]] = {}
        for tree, node in nodes:
            if tree.left[node] == -1:
                assignments.append(f"l{tree.index} = {tree.value[node]!r}")
            else:
                splits = by_feature.setdefault(tree.feature[node], {})
                lefts, rights = splits.setdefault((tree.value[node], tree.default_left[node]), ([], []))
                lefts.append((tree, tree.left[node]))
                rights.append((tree, tree.right[node]))
        if assignments or not by_feature:
            self.lines.append(f"{'    ' * level}{'; '.join(assignments) or 'pass'}")
        for feature, splits in by_feature.items():
            thresholds = sorted({threshold for threshold, _ in splits})
            search_depth = math.ceil(math.log2(len(thresholds) + 1)) + 1
            below = max(tree.height[child] for pair in splits.values() for side in pair for tree, child in side)
            if (
                len(thresholds) >= 3
                and level + search_depth + below <= NESTING_LIMIT
                and len(self.lines) + (len(thresholds) + 1) * _size(splits) <= MAX_SOURCE_LINES
            ):
                self._search(feature, splits, thresholds, level)
            else:
                for (threshold, default_left), (lefts, rights) in splits.items():
                    self._if(_goes_left(feature, threshold, default_left), lefts, rights, level)

    def _if(self, condition: str, then: Subtrees, otherwise: Subtrees, level: int) -> None:
        pad = "    " * level
        self.lines.append(f"{pad}if {condition}:")
        self.add_sum(then, level + 1)
        self.lines.append(f"{pad}else:")
        self.add_sum(otherwise, level + 1)

    def _search(self, feature: int, splits: dict, thresholds: list[float], level: int) -> None:
        """Several splits on one feature: a binary search for the value's interval between their thresholds.

        In interval j (thresholds[j-1] <= x < thresholds[j]) every split is decided, so the
        sides taken are merged into one sum. A missing value goes each split's default way.
        """
        self.searches += 1
        rank = {threshold: index for index, threshold in enumerate(thresholds)}
        defaults = {default_left for _, default_left in splits}
        uniform_left = defaults == {True}  # NaN fails every comparison: send it where all defaults go

        def interval(j: int) -> Subtrees:
            return [
                n
                for (threshold, _), (lefts, rights) in splits.items()
                for n in (lefts if j <= rank[threshold] else rights)
            ]

        def search(low: int, high: int, at: int) -> None:
            if low == high:
                self.add_sum(interval(low), at)
                return
            middle = (low + high + 1) // 2
            pad = "    " * at
            self.lines.append(f"{pad}if {_goes_left(feature, thresholds[middle - 1], uniform_left)}:")
            search(low, middle - 1, at + 1)
            self.lines.append(f"{pad}else:")
            search(middle, high, at + 1)

        if len(defaults) == 1:
            search(0, len(thresholds), level)
        else:
            missing = [
                n for (_, default_left), (lefts, rights) in splits.items() for n in (lefts if default_left else rights)
            ]
            pad = "    " * level
            self.lines.append(f"{pad}if x{feature} != x{feature}:")
            self.add_sum(missing, level + 1)
            self.lines.append(f"{pad}else:")
            search(0, len(thresholds), level + 1)


def _goes_left(feature: int, threshold: float, default_left: bool) -> str:
    # XGBoost: left when value < threshold; NaN fails both comparisons, so `not >=` sends it left.
    return f"not x{feature} >= {threshold!r}" if default_left else f"x{feature} < {threshold!r}"


def _size(splits: dict) -> int:
    """Source lines of the larger side of every split: what each interval of a search repeats, before merging."""
    return sum(
        max(sum(tree.size[node] for tree, node in lefts), sum(tree.size[node] for tree, node in rights))
        for lefts, rights in splits.values()
    )


# Tables: a tree's leaf depends only on which of its thresholds each value reaches, so trees
# that split on the same features form a group whose leaves, for every combination of the
# value's interval on each of those features (and "missing"), are precomputed as one packed
# float32 string. A row then costs one bisect per feature and one look-up per group instead
# of one assignment per tree (240 trees of depth 2: 21 groups, 0.5 MB). A group whose table
# would exceed GROUP_ENTRIES_LIMIT is halved (fewer trees, fewer thresholds); a model with a
# tree too large alone, tables over TABLE_VALUES_LIMIT values in all, or too few trees per
# group for the look-ups to pay, keeps the `if`s.
GROUP_ENTRIES_LIMIT = 4096
TABLE_VALUES_LIMIT = 1_000_000
# A look-up (a few list indexings) costs what assigning a few leaves costs: measured, 30 trees
# of depth 4 in 26 groups took 5.7 µs a row by tables and 3.5 µs by `if`s; 240 of depth 2
# in 21 groups 5.1 against 8.5 µs.
TREES_PER_TABLE = 4


def _union(group: list[_Tree]) -> dict[int, list[float]]:
    union: dict[int, set[float]] = {}
    for tree in group:
        for feature, thresholds in tree.thresholds.items():
            union.setdefault(feature, set()).update(thresholds)
    return {feature: sorted(union[feature]) for feature in sorted(union)}


def _entries(group: list[_Tree]) -> int:
    # Per feature: below every threshold, at or above each one, and missing.
    return math.prod(len(thresholds) + 2 for thresholds in _union(group).values())


def _groups(trees: list[_Tree]) -> list[list[_Tree]] | None:
    by_features: dict[tuple[int, ...], list[_Tree]] = {}
    for tree in trees:
        by_features.setdefault(tuple(sorted(tree.thresholds)), []).append(tree)
    pending = list(by_features.values())
    groups: list[list[_Tree]] = []
    while pending:
        group = pending.pop()
        if _entries(group) <= GROUP_ENTRIES_LIMIT:
            groups.append(group)
        elif len(group) == 1:
            return None
        else:
            pending += [group[: len(group) // 2], group[len(group) // 2 :]]
    if len(groups) * TREES_PER_TABLE > len(trees):
        return None
    if sum(_entries(group) * len(group) for group in groups) > TABLE_VALUES_LIMIT:
        return None
    return sorted(groups, key=lambda group: group[0].index)


def _leaf(tree: _Tree, point: dict[int, float]) -> float:
    node = 0
    while tree.left[node] != -1:
        value = point[tree.feature[node]]
        if value != value:  # missing: the node's default way
            node = tree.left[node] if tree.default_left[node] else tree.right[node]
        else:  # XGBoost: left when value < threshold
            node = tree.left[node] if value < tree.value[node] else tree.right[node]
    return tree.value[node]


def _table(group: list[_Tree], union: dict[int, list[float]]) -> tuple[bytes, ...]:
    """The group's packed leaves for every combination of intervals, the last feature varying fastest.

    Interval j of a feature (j of its thresholds at or below the value) is represented by
    -inf for j = 0 and by threshold j - 1 itself otherwise: every split of the group
    decides on it as on any value of the interval. The last interval is "missing" (NaN).
    """
    pack = _float32_struct(len(group)).pack
    points = [[-math.inf, *thresholds, math.nan] for thresholds in union.values()]
    return tuple(
        pack(*[_leaf(tree, dict(zip(union, values))) for tree in group]) for values in itertools.product(*points)
    )


def _table_source(trees: list[_Tree], base_margin: float) -> tuple[list[str], dict, np.ndarray, int] | None:
    """The body of `leaves` answering by tables, its namespace and the order of its output, or None."""
    groups = _groups(trees)
    if groups is None:
        return None
    thresholds = _union(trees)  # per feature, every threshold of the model: the value's interval is found once
    namespace: dict = {"_bisect": bisect.bisect_right, "_join": b"".join, "_base": _F32.pack(base_margin)}
    lines = []
    for feature, values in thresholds.items():
        namespace[f"t{feature}"] = values
        missing = len(values) + 1
        lines.append(f"    k{feature} = {missing} if x{feature} != x{feature} else _bisect(t{feature}, x{feature})")
    pieces = ["_base"]
    order = np.zeros(len(trees) + 1, dtype=np.intp)
    position = 1
    for number, group in enumerate(groups):
        union = _union(group)
        namespace[f"g{number}"] = _table(group, union)
        stride = 1
        terms = []
        for feature in reversed(union):
            local = union[feature]
            # Global interval k -> the group's interval: how many of its thresholds are among the first k.
            offsets = [0] + [bisect.bisect_right(local, value) * stride for value in thresholds[feature]]
            namespace[f"m{number}_{feature}"] = [*offsets, (len(local) + 1) * stride]
            terms.append(f"m{number}_{feature}[k{feature}]")
            stride *= len(local) + 2
        pieces.append(f"g{number}[{' + '.join(reversed(terms)) or '0'}]")
        for tree in group:
            order[1 + tree.index] = position
            position += 1
    lines.append(f"    return _join(({', '.join(pieces)},))")
    return lines, namespace, order, len(groups)


def _walk(
    trees: list[_Tree], base_margin: float, width: int
) -> Callable[[Sequence[Sequence[float]]], list[float]] | None:
    """The ensemble's walk in C (serving/ensemble.c) over these trees, or None when it is not built."""
    module = native.ensemble()
    if module is None:
        return None
    roots: list[int] = []
    left: list[int] = []
    right: list[int] = []
    feature: list[int] = []
    value: list[float] = []
    default_left: list[bool] = []
    for tree in trees:
        first = len(left)  # the C arrays hold every tree's nodes one after the other: children offset by it
        roots.append(first)
        left.extend(-1 if n == -1 else n + first for n in tree.left)
        right.extend(-1 if n == -1 else n + first for n in tree.right)
        feature.extend(tree.feature)
        value.extend(tree.value)
        default_left.extend(tree.default_left)
    try:
        capsule = module.build(
            *native.ensemble_arrays(left, right, feature, value, default_left, roots), base_margin, width
        )
    except ValueError:  # trees it does not take (a child before its parent): the generated function answers
        return None
    return functools.partial(module.predict, capsule)


def compile_trees(model_json: bytes | str) -> CompiledTrees | None:
    """Compile a Booster saved as JSON, or None when this evaluator cannot (or should not) reproduce it."""
    if _expf is None or _logf is None:
        return None
    try:
        learner = json.loads(model_json)["learner"]
        booster = learner["gradient_booster"]
        if booster.get("name") != "gbtree" or learner["objective"]["name"] not in SUPPORTED_OBJECTIVES:
            return None
        params = learner["learner_model_param"]
        if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) != 1:
            return None
        width = int(params["num_feature"])
        base_score = _parse_base_score(params["base_score"])
        raw_trees = booster["model"]["trees"]
        if not raw_trees or width < 1 or not 0.0 < base_score < 1.0:
            return None
        nodes = sum(len(tree["left_children"]) for tree in raw_trees)
        if nodes > MAX_NODES:
            return None
        trees = [_Tree(tree, width, index) for index, tree in enumerate(raw_trees)]
        base_margin = base_margin_float32(base_score)
        source = _Source()
        tabled = _table_source(trees, base_margin)
        if tabled is not None:
            body, namespace, order, tables = tabled
        else:
            source.add_sum([(tree, 0) for tree in trees], 1)
            result = ", ".join(f"l{tree.index}" for tree in trees)
            body = [*source.lines, f"    return _pack({base_margin!r}, {result})"]
            namespace, order, tables = {"_pack": _float32_struct(len(trees) + 1).pack}, None, 0
        arguments = ", ".join(f"x{i}" for i in range(width))
        lines = [f"def leaves({arguments}):", *body]
        exec(compile("\n".join(lines), "<compiled trees>", "exec"), namespace)  # source built only from numbers above
    except (KeyError, TypeError, ValueError, IndexError, RecursionError, SyntaxError, MemoryError):
        return None
    return CompiledTrees(
        walk=_walk(trees, base_margin, width),
        leaves=namespace["leaves"],
        base_margin=base_margin,
        num_features=width,
        num_trees=len(trees),
        nodes=nodes,
        searches=source.searches,
        max_rows=max(1, min(ROWS_LIMIT, _NODES_PER_XGBOOST_CALL // nodes)),
        tables=tables,
        order=order,
    )
