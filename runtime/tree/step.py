"""The ``tree`` command: one side of vertical SecureBoost training (see docs/trees.md).

Per tree, over one bidirectional stream:

1. the leader computes gradients and hessians, packs each row's pair into one
   fixed-point plaintext, encrypts it under its own key and sends the ciphertexts;
2. the follower sums them per node, feature and bin (cumulatively, so every entry
   is one candidate split "bin <= k") and returns the sums, still encrypted; for
   the two children of a split it sums only the smaller one, and the leader
   subtracts it from the parent's sums for the sibling;
3. the leader decrypts, scores its own candidates in the clear and the follower's
   by index, and sends each node's decision: a leaf, its own split (with the row
   partition), or the index of the follower's winning candidate, to which the
   follower answers with the partition (it keeps the threshold);
4. after the last level the follower sends, for every row, which leaves it can
   reach under its own splits; the leader intersects that with its own splits and
   adds the leaf weights (which never leave it) to the margins.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsite_proto.runtime.v1 import tree_pb2 as pb
from runtime.common import check_hello as common_check_hello
from runtime.common import clean, expect, write_atomically
from runtime.config import JobConfig
from runtime.errors import DataError, PeerError
from runtime.report import Reporter
from runtime.train.data import Table, aligned_path, ids_digest, read_table, split_rows
from runtime.tree import core
from runtime.tree.binning import apply_bins, fit_bins
from runtime.tree.link import PROTOCOL_VERSION, TreeFollowerLink, TreeLeaderLink
from runtime.tree.params import TreeParams, parse_tree_params

STAGE = "tree"
MODEL_FORMAT = "fedsite-tree/1"


# -- data ----------------------------------------------------------------------
@dataclass
class Prepared:
    table: Table
    y: np.ndarray | None
    bins: np.ndarray  # rows x features, int8
    spec: list[dict[str, Any]]
    train_idx: np.ndarray
    val_idx: np.ndarray
    digest: bytes


def read_labels(path: str, label_column: str | None) -> np.ndarray:
    """Numeric labels for regression (the 0/1 check of classification does not apply)."""
    if not label_column:
        raise DataError("data: the leader needs a label column")
    try:
        df = pd.read_parquet(path, columns=[label_column]) if path.endswith((".parquet", ".pq")) else None
        if df is None:
            df = pd.read_csv(path, usecols=[label_column])
    except (ValueError, KeyError):
        raise DataError(f"data: the leader's table {path} has no label column {label_column!r}") from None
    raw = pd.to_numeric(df[label_column], errors="coerce")
    if raw.isna().any():
        line = int(np.flatnonzero(raw.isna().to_numpy())[0]) + 2
        raise DataError(f"data: {path} line {line}: label {label_column!r} is missing or not a number")
    return raw.to_numpy(dtype=np.float64)


def prepare(cfg: JobConfig, params: TreeParams, reporter: Reporter) -> Prepared:
    path = aligned_path(cfg, params.data_path)
    reporter.log(f"tree: reading {path}")
    classify = params.objective == "binary:logistic"
    table = read_table(path, cfg.data.id_column, cfg.data.label_column, need_label=cfg.is_leader and classify)
    y = None
    if cfg.is_leader:
        y = (
            table.labels.astype(np.float64)
            if classify and table.labels is not None
            else read_labels(path, cfg.data.label_column)
        )
    n = len(table.ids)
    train_idx, val_idx = split_rows(n, params.validation_fraction, params.seed)
    spec = fit_bins(table.features, train_idx, params.max_bin)
    bins = apply_bins(table.features, spec)
    reporter.log(
        f"tree: {n} rows ({len(train_idx)} train, {len(val_idx)} validation), {bins.shape[1]} features "
        f"in at most {params.max_bin} bins"
    )
    return Prepared(table, y, bins, spec, train_idx, val_idx, ids_digest(table.ids))


# -- handshake -------------------------------------------------------------------
def make_hello(cfg: JobConfig, shared: str, rows: int, digest: bytes, mode: str, ckpts: list[int], cand: int) -> Any:
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        job_id=cfg.job_id,
        role=cfg.role,
        mode=mode,
        rows=rows,
        ids_digest=digest,
        shared_params=shared,
        checkpoint_trees=ckpts,
        candidates=cand,
    )


def check_hello(mine: Any, theirs: Any) -> None:
    """Both sides run this on the other's hello; a mismatch fails the job on both."""
    common_check_hello(mine, theirs, version=PROTOCOL_VERSION, protocol="tree", stage="tree")


# -- bits ----------------------------------------------------------------------
def to_bits(mask: np.ndarray) -> bytes:
    return np.packbits(mask.astype(bool).ravel()).tobytes()


def from_bits(data: bytes, count: int, what: str) -> np.ndarray:
    if len(data) != (count + 7) // 8:
        raise PeerError(f"protocol error: {what} has {len(data)} bytes for {count} rows")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count).astype(bool)


# -- checkpoints and files ---------------------------------------------------------
class Checkpoints:
    """One JSON state (and, for the leader, the margins) per finished tree; the last two are kept."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def trees(self) -> list[int]:
        if not self.dir.exists():
            return []
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("tree-*.json"))

    def save(self, t: int, state: dict[str, Any], margin: np.ndarray | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if margin is not None:
            tmp = self.dir / f".tree-{t}.npy.tmp"
            with tmp.open("wb") as fh:
                np.save(fh, margin)
            tmp.replace(self.dir / f"tree-{t}.npy")
        write_atomically(self.dir / f"tree-{t}.json", json.dumps(state))  # written last: marks the tree done
        for old in self.trees()[:-2]:
            (self.dir / f"tree-{old}.json").unlink(missing_ok=True)
            (self.dir / f"tree-{old}.npy").unlink(missing_ok=True)

    def load(self, t: int) -> tuple[dict[str, Any], np.ndarray | None]:
        state = json.loads((self.dir / f"tree-{t}.json").read_text())
        npy = self.dir / f"tree-{t}.npy"
        return state, (np.load(npy) if npy.exists() else None)


def importance(entries: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, gain in entries:
        d = out.setdefault(name, {"gain": 0.0, "splits": 0})
        d["gain"] += gain
        d["splits"] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["gain"]))


def threshold_text(c: dict[str, Any], k: int) -> str:
    if c["kind"] == "numeric":
        cuts = c["cuts"]
        if k >= len(cuts):
            return "any value"
        return f"< {cuts[k]:.9g}" if c.get("rule") == "lt" else f"<= {cuts[k]:.6g}"
    return "in {" + ", ".join(repr(v) for v in c["vocab"][: k + 1]) + "}"


def write_model(model_dir: Path, meta: dict[str, Any], half: dict[str, Any]) -> None:
    write_atomically(model_dir / "model.json", json.dumps(clean(half), indent=2))
    write_atomically(model_dir / "fedsite.json", json.dumps(meta, indent=2))


def run(cfg: JobConfig, reporter: Reporter) -> dict[str, Any]:
    params = parse_tree_params(cfg.tree)
    from runtime.tree.he import use_threads

    use_threads(params.threads)
    (Path(cfg.output_dir) / "tree" / "result.json").unlink(missing_ok=True)
    prep = prepare(cfg, params, reporter)
    if cfg.is_leader:
        return _leader(cfg, params, prep, reporter)
    return _follower(cfg, params, prep, reporter)


# -- leader ----------------------------------------------------------------------
def _leader(cfg: JobConfig, p: TreeParams, prep: Prepared, reporter: Reporter) -> dict[str, Any]:
    from runtime.tree.he import KeyPair

    out = Path(cfg.output_dir) / "tree"
    ckpts = Checkpoints(out / "checkpoint")
    assert prep.y is not None
    y = prep.y
    n, nt = len(y), len(prep.train_idx)
    train_idx, val_idx = prep.train_idx, prep.val_idx
    bins_train = np.ascontiguousarray(prep.bins[train_idx])
    names = [c["name"] for c in prep.spec]
    reporter.log(f"tree: leader listening on {cfg.listen_address}")
    link = TreeLeaderLink(cfg)
    timeout = p.peer_timeout_s
    try:
        link.accept(min(p.connect_timeout_s, cfg.timeout_s))
        mine = make_hello(cfg, p.shared(), n, prep.digest, "tree", ckpts.trees(), 0)
        theirs = expect(link.recv(timeout, "the follower's hello"), "hello")
        link.send(pb.LeaderMessage(hello=mine))
        check_hello(mine, theirs)
        if theirs.candidates <= 0 or theirs.candidates % p.max_bin:
            raise PeerError(f"protocol error: the follower announces {theirs.candidates} candidates")
        f_features = theirs.candidates // p.max_bin
        common = set(ckpts.trees()) & set(theirs.checkpoint_trees)
        start = max(common) if common else 0
        t0 = time.perf_counter()
        kp = KeyPair(p.he_scheme, p.key_bits)
        reporter.log(f"tree: {p.he_scheme} key of {p.key_bits} bits in {time.perf_counter() - t0:.2f} s")
        link.send(
            pb.LeaderMessage(
                welcome=pb.Welcome(
                    start_tree=start, public_key=kp.public_key, scheme=p.he_scheme, share_metrics=p.share_metrics
                )
            )
        )
        state: dict[str, Any] = {
            "trees": [],
            "history": [],
            "best": None,
            "best_iteration": -1,
            "wait": 0,
            "stopped": False,
            "base_margin": core.base_margin(p.objective, y[train_idx]),
        }
        margin = np.full(n, state["base_margin"])
        if start:
            state, saved = ckpts.load(start)
            assert saved is not None
            margin = saved
            reporter.log(f"tree: resuming after tree {start} from the checkpoints of both sides")
        for t in range(start, p.num_trees):
            if state["stopped"]:
                break
            t_tree = time.perf_counter()
            g, h = core.grad_hess(p.objective, y[train_idx], margin[train_idx])
            gq, hq, scale = core.quantize(g, h)
            sample = core.row_sample(nt, p.subsample, p.seed, t)
            cols_l = core.column_sample(bins_train.shape[1], p.colsample_bytree, p.seed, t, 0)
            n_cand_f = len(core.column_sample(f_features, p.colsample_bytree, p.seed, t, 1)) * p.max_bin
            bl = np.ascontiguousarray(bins_train[:, cols_l])
            t_enc = time.perf_counter()
            send_rows = sample[:-1] if p.fault == "tamper_count" else sample
            blob = kp.encrypt(gq[send_rows], hq[send_rows])
            copies = _shifted_copies(p, len(sample), n_cand_f // p.max_bin, kp.max_slots)
            shifted = [kp.encrypt(gq[send_rows], hq[send_rows], j) for j in range(1, copies)]
            enc_s = time.perf_counter() - t_enc
            in_sample = np.zeros(nt, dtype=bool)
            in_sample[sample] = True
            link.send(
                pb.LeaderMessage(
                    tree_start=pb.TreeStart(
                        tree=t, count=len(sample), ciphertexts=blob, sample=to_bits(in_sample), shifted=shifted
                    )
                )
            )
            tree, (dec_s, decrypts, slots), hist_rows = _leader_tree(
                link, kp, p, t, sample, bl, cols_l, gq, hq, scale, n_cand_f, timeout
            )
            # Routing: the follower's reachable leaves, intersected with ours.
            leaves = tree.leaves()
            r = expect(link.recv(timeout, f"the follower's leaf reach of tree {t + 1}"), "reach")
            if r.tree != t or r.leaves != len(leaves) or r.rows != n:
                raise PeerError(
                    f"protocol error: reach for tree {r.tree + 1} ({r.leaves} leaves, {r.rows} rows), "
                    f"expected tree {t + 1} ({len(leaves)} leaves, {n} rows)"
                )
            reach_f = from_bits(r.bits, n * len(leaves), "the leaf reach").reshape(n, len(leaves))
            own = {i: prep.bins[:, nd.feature] <= nd.bin for i, nd in tree.nodes.items() if nd.owner == "leader"}
            both = core.reach(tree, leaves, own, n) & reach_f
            hits = both.sum(axis=1)
            if np.any(hits != 1):
                bad = int(np.flatnonzero(hits != 1)[0])
                raise DataError(
                    f"misaligned data: row {bad} reaches {int(hits[bad])} leaves of tree {t + 1} under both sides' "
                    "splits; the sides' rows do not match"
                )
            values = np.array([tree.nodes[i].value for i in leaves])
            margin = margin + values[np.argmax(both, axis=1)]
            m = {
                "train": core.metrics_of(p.objective, y[train_idx], margin[train_idx]),
                "validation": core.metrics_of(p.objective, y[val_idx], margin[val_idx]),
            }
            monitor = m["validation"].get("loss", m["train"]["loss"])
            if state["best"] is None or monitor < state["best"]:
                state.update(best=monitor, best_iteration=t, wait=0)
            else:
                state["wait"] += 1
            stop = bool(p.early_stopping_rounds and state["wait"] >= p.early_stopping_rounds)
            tree_s = time.perf_counter() - t_tree
            flat = {f"{s}.{k}": v for s, d in m.items() for k, v in d.items()}
            link.send(pb.LeaderMessage(tree_end=pb.TreeEnd(tree=t, stop=stop, metrics=flat if p.share_metrics else {})))
            for s, d in m.items():
                for k, v in d.items():
                    reporter.metric(k, v, step=t + 1, epoch=t + 1, split=s)
            reporter.metric("tree_s", tree_s, step=t + 1, epoch=t + 1, split="train")
            state["trees"].append({str(i): asdict(nd) for i, nd in tree.nodes.items()})
            state["history"].append(
                clean(
                    {
                        "tree": t + 1,
                        **m,
                        "tree_s": tree_s,
                        "encrypt_s": enc_s,
                        "decrypt_s": dec_s,
                        "decrypts": decrypts,
                        "pack_slots": slots,
                        "shifted_copies": copies,
                        "sampled_rows": len(sample),
                        "he_adds": hist_rows * (n_cand_f // p.max_bin),
                        "leaves": len(leaves),
                    }
                )
            )
            state["stopped"] = stop
            ckpts.save(t + 1, state, margin)
            reporter.progress((t + 1) / p.num_trees, STAGE)
            reporter.log(
                f"tree: {t + 1}/{p.num_trees} in {tree_s:.2f} s, {len(leaves)} leaves, "
                f"loss {m['train']['loss']:.4f}"
                + (f", validation auc {m['validation']['auc']:.4f}" if "auc" in m["validation"] else "")
                + (", early stop" if stop else "")
            )
        keep = state["best_iteration"] + 1 if p.early_stopping_rounds else len(state["trees"])
        trees = [{int(k): core.Node(**v) for k, v in tr.items()} for tr in state["trees"][:keep]]
        best = state["history"][keep - 1] if keep else {}
        imp = importance(
            [(names[nd.feature], nd.gain) for tr in trees for nd in tr.values() if not nd.leaf and nd.owner == "leader"]
        )
        model_dir = out / "model"
        half = {
            "format": MODEL_FORMAT,
            "role": "leader",
            "job_id": cfg.job_id,
            "objective": p.objective,
            "base_margin": state["base_margin"],
            "id_column": cfg.data.id_column,
            "label_column": cfg.data.label_column,
            "trees": [{"nodes": [tr[i].to_json(names) for i in sorted(tr)]} for tr in trees],
            "features": prep.spec,
            "feature_importance": imp,
            "best_iteration": keep,
            "params": {k: v for k, v in asdict(p).items() if k not in ("fault", "data_path")},
        }
        meta = {"format": MODEL_FORMAT, "job_id": cfg.job_id, "role": "leader", "trees": keep}
        write_model(model_dir, meta, half)
        link.send(pb.LeaderMessage(done=pb.Done(rows=n, trees=keep)))
        expect(link.recv(timeout, "the follower's export"), "done")
        result = clean(
            {
                "role": "leader",
                "job_id": cfg.job_id,
                "metrics": {"train": best.get("train", {}), "validation": best.get("validation", {})},
                "history": state["history"],
                "model_dir": str(model_dir),
                "trees": keep,
                "trees_built": len(state["trees"]),
                "best_iteration": keep,
                "rows": n,
                "train_rows": nt,
                "validation_rows": len(val_idx),
                "resumed_from": start,
                "stopped_early": state["stopped"],
                "share_metrics": p.share_metrics,
                "feature_importance": imp,
                "s_per_tree": float(np.median([h["tree_s"] for h in state["history"]])) if state["history"] else None,
            }
        )
        write_atomically(out / "result.json", json.dumps(result, indent=2))
        reporter.progress(1.0, STAGE)
        link.close()
        return result
    except BaseException as exc:
        link.fail(exc)
        raise


def _leader_tree(
    link: TreeLeaderLink,
    kp: Any,
    p: TreeParams,
    t: int,
    sample: np.ndarray,
    bl: np.ndarray,
    cols_l: np.ndarray,
    gq: np.ndarray,
    hq: np.ndarray,
    scale: float,
    n_cand_f: int,
    timeout: float,
) -> tuple[core.Tree, tuple[float, int, int], int]:
    """Grow one tree level by level.

    Returns it, (seconds spent decrypting, ciphertexts decrypted, sums per ciphertext) and the rows the follower summed.
    """
    tree = core.Tree()
    open_nodes: dict[int, np.ndarray] = {0: sample}
    fhist: dict[int, np.ndarray] = {}  # the follower's decrypted cumulative sums of each open node
    dec_s = 0.0
    decrypts, slots = 0, 1
    n_cand_l = len(cols_l) * p.max_bin

    def answer(depth: int) -> Any:
        ans = expect(link.recv(timeout, f"the follower's level {depth} of tree {t + 1}"), "level_answer")
        if ans.tree != t or ans.depth != depth:
            raise PeerError(
                f"protocol error: the follower answered level {ans.depth} of tree {ans.tree + 1}, "
                f"expected level {depth} of tree {t + 1}"
            )
        return ans

    def decrypt(ans: Any, expected: set[int]) -> dict[int, np.ndarray]:
        nonlocal dec_s, decrypts, slots
        got = {hm.node for hm in ans.histograms}
        if got != expected:
            raise PeerError(f"protocol error: histograms for nodes {sorted(got)}, expected {sorted(expected)}")
        if expected and ans.key_fingerprint != kp.fingerprint:
            raise PeerError(
                "wrong key: the follower's histogram sums were computed under another public key "
                f"(fingerprint {ans.key_fingerprint.hex()[:16]}, this leader's is {kp.fingerprint.hex()[:16]})"
            )
        out = {}
        for hm in ans.histograms:
            if hm.count != n_cand_f:
                raise PeerError(
                    f"the follower's histogram of node {hm.node} has {hm.count} sums, expected {n_cand_f} "
                    "(tampered or truncated message)"
                )
            t_dec = time.perf_counter()
            gsum, hsum = kp.decrypt_sums(hm.ciphertexts, hm.count, hm.slots or 1)
            dec_s += time.perf_counter() - t_dec
            slots = hm.slots or 1
            decrypts += hm.count // slots
            out[hm.node] = np.stack([gsum, hsum])
        return out

    fhist.update(decrypt(answer(0), {0} if p.max_depth > 0 else set()))
    hist_rows = len(sample) if p.max_depth > 0 else 0
    depth = 0
    while open_nodes:
        decisions = []
        children: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        follower_split: dict[int, np.ndarray] = {}
        for nid in sorted(open_nodes):
            rows = open_nodes[nid]
            gt, ht = float(gq[rows].sum()), float(hq[rows].sum())
            node = core.Node(id=nid, depth=depth, cover=ht / scale)
            tree.nodes[nid] = node
            best_i, gain = -1, 0.0
            if depth < p.max_depth:
                hist = np.concatenate([core.histograms(bl, rows, gq, hq, p.max_bin), fhist[nid]], axis=1)
                best_i, gain = core.choose(core.split_gains(hist, gt, ht, scale, p), p)
            if best_i < 0:
                node.value = core.leaf_value(gt, ht, scale, p)
                decisions.append(pb.NodeDecision(node=nid, kind=pb.NodeDecision.LEAF))
                continue
            node.leaf, node.gain = False, gain
            if best_i < n_cand_l:
                f, k = divmod(best_i, p.max_bin)
                node.owner, node.feature, node.bin = "leader", int(cols_l[f]), k
                left = bl[rows, f] <= k
                children[nid] = (rows[left], rows[~left])
                decisions.append(pb.NodeDecision(node=nid, kind=pb.NodeDecision.LEADER_SPLIT, left=to_bits(left)))
            else:
                node.owner = "follower"
                follower_split[nid] = rows
                decisions.append(
                    pb.NodeDecision(
                        node=nid, kind=pb.NodeDecision.FOLLOWER_SPLIT, candidate=best_i - n_cand_l, gain=gain
                    )
                )
        link.send(pb.LeaderMessage(level_decision=pb.LevelDecision(tree=t, depth=depth, nodes=decisions)))
        ans = answer(depth + 1)
        parts = {pt.node: pt.left for pt in ans.partitions}
        if set(parts) != set(follower_split):
            raise PeerError(f"protocol error: partitions for nodes {sorted(parts)}, expected {sorted(follower_split)}")
        for nid, rows in follower_split.items():
            left = from_bits(parts[nid], len(rows), f"the partition of node {nid}")
            children[nid] = (rows[left], rows[~left])
        nxt: dict[int, np.ndarray] = {}
        smaller: dict[int, int] = {}
        for nid, (lr, rr) in children.items():
            nxt[2 * nid + 1], nxt[2 * nid + 2] = lr, rr
            smaller[nid] = 2 * nid + 1 if core.smaller_first(lr, rr) else 2 * nid + 2
        need_hist = depth + 1 < p.max_depth
        got = decrypt(ans, set(smaller.values()) if need_hist else set())
        parent_hist = fhist
        fhist = {}
        if need_hist:
            for nid, small in smaller.items():
                hist_rows += len(nxt[small])
                sibling = 4 * nid + 3 - small  # (2n+1) + (2n+2) - small
                fhist[small] = got[small]
                fhist[sibling] = parent_hist[nid] - got[small]
        open_nodes = nxt
        depth += 1
    return tree, (dec_s, decrypts, slots), hist_rows


# -- follower --------------------------------------------------------------------
def _follower(cfg: JobConfig, p: TreeParams, prep: Prepared, reporter: Reporter) -> dict[str, Any]:
    from runtime.tree.he import PublicKey, load_ciphertexts, random_key_ciphertexts

    out = Path(cfg.output_dir) / "tree"
    ckpts = Checkpoints(out / "checkpoint")
    n, nt = len(prep.table.ids), len(prep.train_idx)
    nf = prep.bins.shape[1]
    bins_train = np.ascontiguousarray(prep.bins[prep.train_idx])
    reporter.log(f"tree: follower connecting to the leader at {cfg.peer_address}")
    link = TreeFollowerLink(cfg, min(p.connect_timeout_s, cfg.timeout_s))
    timeout = p.peer_timeout_s
    try:
        mine = make_hello(cfg, p.shared(), n, prep.digest, "tree", ckpts.trees(), nf * p.max_bin)
        link.send(pb.FollowerMessage(hello=mine))
        theirs = expect(link.recv(timeout, "the leader's hello"), "hello")
        check_hello(mine, theirs)
        welcome = expect(link.recv(timeout, "the leader's welcome"), "welcome")
        if welcome.scheme != p.he_scheme:
            raise PeerError(f"the leader encrypts with {welcome.scheme!r}, this side expects {p.he_scheme!r}")
        key = PublicKey(welcome.public_key)
        start = welcome.start_tree
        state: dict[str, Any] = {"splits": [], "shapes": [], "history": [], "stopped": False}
        if start:
            if start not in ckpts.trees():
                raise PeerError(f"the leader resumes after tree {start} but this side has no checkpoint for it")
            state, _ = ckpts.load(start)
            reporter.log(f"tree: resuming after tree {start} from the checkpoints of both sides")
        for t in range(start, p.num_trees):
            if state["stopped"]:
                break
            t_tree = time.perf_counter()
            ts = expect(link.recv(timeout, f"the leader's ciphertexts of tree {t + 1}"), "tree_start")
            if ts.tree != t:
                raise PeerError(f"protocol error: the leader started tree {ts.tree + 1}, expected {t + 1}")
            in_sample = from_bits(ts.sample, nt, "the row sample")
            sample = np.flatnonzero(in_sample)
            if ts.count != len(sample):
                raise PeerError(
                    f"the leader announces {ts.count} ciphertexts for {len(sample)} sampled rows (tampered message)"
                )
            ct = load_ciphertexts(ts.ciphertexts, len(sample), f"the leader's ciphertexts of tree {t + 1}")
            shifted = [
                load_ciphertexts(b, len(sample), f"the leader's shifted ciphertexts of tree {t + 1}")
                for b in ts.shifted
            ]
            fp = key.fingerprint
            if p.fault == "wrong_key":
                ct, fp = random_key_ciphertexts(p.he_scheme, p.key_bits, len(sample))
            cols = core.column_sample(nf, p.colsample_bytree, p.seed, t, 1)
            order = np.ascontiguousarray(bins_train[sample][:, cols])
            pos = np.full(nt, -1, dtype=np.int64)
            pos[sample] = np.arange(len(sample))

            open_nodes: dict[int, np.ndarray] = {0: sample}
            hist0 = (
                _node_sums(key, [ct, *shifted], order, pos, len(sample), open_nodes, p.max_bin, p.pack_slots)
                if p.max_depth > 0
                else []
            )
            link.send(
                pb.FollowerMessage(level_answer=pb.LevelAnswer(tree=t, depth=0, histograms=hist0, key_fingerprint=fp))
            )
            shape = core.Tree()
            splits: dict[int, np.ndarray] = {}
            depth = 0
            while open_nodes:
                dec = expect(
                    link.recv(timeout, f"the leader's decisions for level {depth} of tree {t + 1}"), "level_decision"
                )
                if dec.tree != t or dec.depth != depth or {d.node for d in dec.nodes} != set(open_nodes):
                    raise PeerError(
                        f"protocol error: unexpected decisions for level {dec.depth} of tree {dec.tree + 1}"
                    )
                nxt: dict[int, np.ndarray] = {}
                smaller: dict[int, np.ndarray] = {}
                parts = []
                for d in dec.nodes:
                    rows = open_nodes[d.node]
                    node = core.Node(id=d.node, depth=depth)
                    shape.nodes[d.node] = node
                    if d.kind == pb.NodeDecision.LEAF:
                        continue
                    node.leaf = False
                    if d.kind == pb.NodeDecision.LEADER_SPLIT:
                        node.owner = "leader"
                        left = from_bits(d.left, len(rows), f"the partition of node {d.node}")
                    else:
                        node.owner = "follower"
                        if not 0 <= d.candidate < len(cols) * p.max_bin:
                            raise PeerError(f"protocol error: candidate {d.candidate} does not exist")
                        f, k = divmod(d.candidate, p.max_bin)
                        feature = int(cols[f])
                        left = bins_train[rows, feature] <= k
                        splits[d.node] = prep.bins[:, feature] <= k
                        c = prep.spec[feature]
                        state["splits"].append(
                            {
                                "tree": t,
                                "node": d.node,
                                "feature": c["name"],
                                "bin": k,
                                "threshold": threshold_text(c, k),
                                "gain": d.gain,
                            }
                        )
                        parts.append(pb.Partition(node=d.node, left=to_bits(left)))
                    lr, rr = rows[left], rows[~left]
                    nxt[2 * d.node + 1], nxt[2 * d.node + 2] = lr, rr
                    small = 2 * d.node + 1 if core.smaller_first(lr, rr) else 2 * d.node + 2
                    smaller[small] = nxt[small]
                hists = (
                    _node_sums(key, [ct, *shifted], order, pos, len(sample), smaller, p.max_bin, p.pack_slots)
                    if depth + 1 < p.max_depth and smaller
                    else []
                )
                link.send(
                    pb.FollowerMessage(
                        level_answer=pb.LevelAnswer(
                            tree=t, depth=depth + 1, partitions=parts, histograms=hists, key_fingerprint=fp
                        )
                    )
                )
                open_nodes = nxt
                depth += 1
            leaves = shape.leaves()
            r = core.reach(shape, leaves, splits, n)
            link.send(pb.FollowerMessage(reach=pb.Reach(tree=t, leaves=len(leaves), rows=n, bits=to_bits(r))))
            end = expect(link.recv(timeout, f"the end of tree {t + 1}"), "tree_end")
            if end.tree != t:
                raise PeerError(f"protocol error: the leader ended tree {end.tree + 1}, expected {t + 1}")
            tree_s = time.perf_counter() - t_tree
            metrics: dict[str, dict[str, float]] = {"train": {}, "validation": {}}
            for key_name, v in end.metrics.items():
                split, _, name = key_name.partition(".")
                if split in metrics and name:
                    metrics[split][name] = v
                    reporter.metric(name, v, step=t + 1, epoch=t + 1, split=split)
            state["shapes"].append({"leaves": leaves, "follower_nodes": sorted(splits)})
            state["history"].append(clean({"tree": t + 1, **metrics, "tree_s": tree_s}))
            state["stopped"] = end.stop
            ckpts.save(t + 1, state)
            reporter.progress((t + 1) / p.num_trees, STAGE)
            reporter.log(f"tree: {t + 1}/{p.num_trees} in {tree_s:.2f} s{', early stop' if end.stop else ''}")
        done = expect(link.recv(timeout, "the leader's export"), "done")
        keep = done.trees
        if not 0 <= keep <= len(state["shapes"]):
            raise PeerError(f"protocol error: the leader keeps {keep} trees of {len(state['shapes'])}")
        kept_splits = [s for s in state["splits"] if s["tree"] < keep]
        imp = importance([(s["feature"], s["gain"]) for s in kept_splits])
        model_dir = out / "model"
        half = {
            "format": MODEL_FORMAT,
            "role": "follower",
            "job_id": cfg.job_id,
            "id_column": cfg.data.id_column,
            "trees": state["shapes"][:keep],
            "splits": kept_splits,
            "features": prep.spec,
            "feature_importance": imp,
            "params": {k: v for k, v in asdict(p).items() if k not in ("fault", "data_path")},
        }
        write_model(model_dir, {"format": MODEL_FORMAT, "job_id": cfg.job_id, "role": "follower", "trees": keep}, half)
        link.send(pb.FollowerMessage(done=pb.Done(rows=n, trees=keep)))
        best = state["history"][keep - 1] if keep else {}
        result = clean(
            {
                "role": "follower",
                "job_id": cfg.job_id,
                "metrics": {"train": best.get("train", {}), "validation": best.get("validation", {})},
                "history": state["history"],
                "model_dir": str(model_dir),
                "trees": keep,
                "rows": n,
                "resumed_from": start,
                "stopped_early": state["stopped"],
                "share_metrics": welcome.share_metrics,
                "feature_importance": imp,
            }
        )
        write_atomically(out / "result.json", json.dumps(result, indent=2))
        reporter.progress(1.0, STAGE)
        link.close()
        return result
    except BaseException as exc:
        link.fail(exc)
        raise


def _shifted_copies(p: TreeParams, rows: int, features: int, max_slots: int) -> int:
    """Shifted encryptions per tree: `pack_slots` (1 = none) when set, else the cheapest the key allows."""
    from runtime.tree.he import shifted_copies, slots_for

    if p.pack_slots:
        return slots_for(features, min(p.pack_slots, max_slots))
    return shifted_copies(rows, features, p.max_bin, p.max_depth, max_slots)


def _node_sums(
    key: Any,
    cts: list[Any],
    order: np.ndarray,
    pos: np.ndarray,
    n_sample: int,
    nodes: dict[int, np.ndarray],
    nbins: int,
    pack_slots: int,
) -> list[Any]:
    """Encrypted cumulative histograms of `nodes` (rows as training positions), packed, one message each.

    With the leader's shifted encryptions (`cts` = plain, times 2**108, ...) the feature
    groups are summed under their shifts and added; otherwise `pack_slots` sums per
    ciphertext (0: as many as the key holds) are packed with shifts under encryption, a
    number that divides the sums, so every ciphertext is full. More than the key holds is refused.
    """
    from runtime.tree.he import slots_for

    masks = []
    for rows in nodes.values():
        m = np.zeros(n_sample, dtype=np.int8)
        m[pos[rows]] = 1
        masks.append(m)
    count = order.shape[1] * nbins
    if len(cts) > 1:  # the leader sent shifted encryptions: pack by adding
        slots = len(cts)
        blobs = key.bucket_sums_shifted(cts, masks, order, nbins)
    else:
        slots = slots_for(count, pack_slots or key.max_slots)
        blobs = key.bucket_sums(cts[0], masks, order, nbins, slots)
    return [
        pb.NodeHistogram(node=nid, count=count, ciphertexts=b, slots=slots) for nid, b in zip(nodes, blobs, strict=True)
    ]
