"""Supervised detector: how much of a candidate set looks like labelled synthetic examples.

Each item is described by its embedding and by density features against two banks kept with the
detector, the labelled real items R and the labelled synthetic items S (detectors/features.py):
distances to the nearest and k-th neighbour in each bank and the nearest-neighbour distance
relative to that neighbour's own radius. A logistic regression on those (detectors/linear.py)
sees both a generator's offset (the embedding) and its sampling bias (the log-distances, a k-NN
log-likelihood ratio between the banks). Training items are described leave-one-out.

Raw classify-and-count is biased whenever the classifier errs, so the share is estimated by
adjusted quantification:
- PACC (probabilistic adjusted classify-and-count, Bella et al. 2010): with out-of-fold mean
  scores s1 on synthetic and s0 on real training items, pi = (mean score on the candidate - s0) / (s1 - s0);
- EMQ (Saerens, Latinne and Decaestecker 2002): EM re-estimation of the prior from the posteriors,
  as a second opinion.
The out-of-fold scores come from 5 fold models, and a candidate is scored by the mean of the
same 5 models, so the candidate's real items have, in expectation, exactly the out-of-fold real
mean (scoring with one refit on all items would not: it is a better classifier than the ones
the out-of-fold means describe). The interval is a bootstrap over the candidate items and the
out-of-fold training scores. A detector whose out-of-fold AUC is below `MIN_AUC` identifies
nothing: its estimate is NaN ("not identifiable"), never a number.

A trained detector is plain data: `detector.json` (format, model identity, settings, the sha256
of its arrays) and `detector.npz` beside it (float arrays, read with allow_pickle=False).
It refuses embeddings from another model.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.io.atomic import write_atomic, write_text_atomic
from audit.io.jsonfile import read_json
from audit.limits import LIMITS
from detectors.base import DetectorProblem, FractionEstimate, ModelMismatch
from detectors.features import DensityBank, describe, feature_names
from detectors.linear import Logistic

FORMAT = "madaudit-detector/2"
N_FOLDS = 5
DEFAULT_K = 5
MIN_AUC = 0.6  # below this the detector separates too little to identify a share
MAX_BANK = 10_000  # labelled items kept per class: features and training use a seeded subset beyond
HELD_OUT_REAL = 0.25  # leave-one-generator-out: the share of real items kept out of training
HELD_OUT_SHARE = 0.3  # ... and the known synthetic share of the candidate it is tested on
_ARRAYS = ("real_bank", "synthetic_bank", "real_folds", "synthetic_folds", "means", "scales", "coefs", "intercepts",
           "oof_real", "oof_synthetic")


MAX_DETECTOR_JSON_BYTES = 16 * 1024 * 1024
MAX_DETECTOR_NPZ_BYTES = 4 * 1024 ** 3


@dataclass
class SupervisedProbe:
    """Real (0) vs synthetic (1) on [embedding, density features against the two banks],
    cross-fitted: fold model f was trained on the labelled items outside fold f, with features
    against the banks outside fold f; it scored fold f (out-of-fold) and scores every candidate
    item the same way, so out-of-fold and candidate scores are exchangeable."""

    real_bank: np.ndarray  # (n0, d) float32, labelled real items
    synthetic_bank: np.ndarray  # (n1, d) float32, labelled synthetic items
    real_folds: np.ndarray  # (n0,) fold of each real item
    synthetic_folds: np.ndarray  # (n1,)
    k: int
    means: np.ndarray  # (folds, p) feature standardisation of each fold model
    scales: np.ndarray  # (folds, p)
    coefs: np.ndarray  # (folds, p)
    intercepts: np.ndarray  # (folds,)
    oof_real: np.ndarray  # out-of-fold synthetic scores of the real training items
    oof_synthetic: np.ndarray  # out-of-fold synthetic scores of the synthetic training items
    model_identity: dict[str, Any] | None = None
    generators: list[dict[str, Any]] | None = None  # [{"name", "n"}] of the labelled synthetic sources
    held_out: list[dict[str, Any]] | None = None  # leave-one-generator-out figures (`leave_one_generator_out`)
    embedding: bool = True  # the embedding is a feature beside the density features (else density only)
    synthetic_labels: np.ndarray | None = None  # generator (index into `generators`) of each synthetic bank row

    def __post_init__(self) -> None:
        self._banks: list[DensityBank] | None = None

    @property
    def dim(self) -> int:
        return self.real_bank.shape[1]

    @property
    def train_prior(self) -> float:
        return len(self.oof_synthetic) / (len(self.oof_synthetic) + len(self.oof_real))

    @property
    def auc(self) -> float:
        """Out-of-fold ROC AUC (Mann-Whitney): how well the detector separates its own labels."""
        return _auc(self.oof_real, self.oof_synthetic)

    @property
    def identifiable(self) -> bool:
        return self.auc >= MIN_AUC

    @property
    def feature_names(self) -> list[str]:
        return [f"embedding[{i}]" for i in range(self.dim * self.embedding)] + feature_names(("real", "synthetic"))

    # -- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit_generators(cls, real: np.ndarray, synthetic: dict[str, np.ndarray], model_identity: dict | None = None,
                       seed: int = 0, k: int = DEFAULT_K, held_out_share: float = HELD_OUT_SHARE,
                       embedding: bool = True) -> SupervisedProbe:
        """Fit on real items against the labelled items of one or more generators (name: (n, d)),
        pooled, and, with two or more, measure how it does on a generator it has not seen
        (`leave_one_generator_out`): what every scan with it can then say."""
        if not synthetic:
            raise ValueError("give the labelled synthetic items of at least one generator")
        names = list(synthetic)
        labels = np.repeat(np.arange(len(names)), [len(synthetic[n]) for n in names])
        probe = cls.fit(real, np.vstack([_matrix(synthetic[n], n) for n in names]), model_identity, seed=seed, k=k,
                        embedding=embedding, synthetic_labels=labels if len(names) > 1 else None)
        probe.generators = [{"name": n, "n": int(len(synthetic[n]))} for n in names]
        if len(names) >= 2:
            probe.held_out = leave_one_generator_out(real, synthetic, seed=seed, k=k, share=held_out_share,
                                                     embedding=embedding)
        return probe

    def _generator_groups(self) -> list[np.ndarray]:
        """The out-of-fold synthetic scores, per generator where the labels are known."""
        labels = self.synthetic_labels
        if labels is None:
            return [self.oof_synthetic]
        return [self.oof_synthetic[labels == g] for g in np.unique(labels)]

    def unseen_generator_note(self) -> str | None:
        """What its leave-one-generator-out figures say about a generator it was not trained on."""
        if not self.generators:
            return None
        if not self.held_out:
            return (f"the detector was trained on one generator ({self.generators[0]['name']}): how much of an unseen "
                    "generator's share it finds is unknown (train with --synthetic on two or more to measure it)")
        recovered = [h["recovered"] for h in self.held_out]
        each = ", ".join(f"{h['held_out']} {100 * h['recovered']:.0f}% (AUC {h['auc']:.2f})" for h in self.held_out)
        return (f"on a generator it had not seen, this detector recovered {100 * min(recovered):.0f}% to "
                f"{100 * max(recovered):.0f}% of the share (each held out in turn: {each}); a generator absent from "
                "its training is under-counted by about that much")

    @classmethod
    def fit(cls, real: np.ndarray, synthetic: np.ndarray, model_identity: dict | None = None, seed: int = 0,
            k: int = DEFAULT_K, embedding: bool = True, synthetic_labels: np.ndarray | None = None) -> SupervisedProbe:
        """Fit on real (n0, d) and synthetic (n1, d) embeddings (at most MAX_BANK of each, a
        seeded subset beyond), cross-fitted over N_FOLDS stratified folds; `embedding` False
        leaves the embedding itself out of the features (density only); `synthetic_labels` says
        which generator each synthetic row came from (several generators)."""
        rng = np.random.default_rng(seed)
        real = _matrix(real, "real")
        real = real[_subset_rows(len(real), MAX_BANK, rng)]
        synthetic = _matrix(synthetic, "synthetic")
        kept = _subset_rows(len(synthetic), MAX_BANK, rng)
        synthetic = synthetic[kept]
        labels = None if synthetic_labels is None else np.asarray(synthetic_labels, dtype=np.int64)[kept]
        if real.shape[1] != synthetic.shape[1]:
            raise ValueError(f"real {real.shape} and synthetic {synthetic.shape} must have the same dimension")
        need = N_FOLDS * (k + 1)
        if min(len(real), len(synthetic)) < need:
            raise ValueError(f"need at least {need} real and {need} synthetic items to fit a detector with k={k}, "
                             f"have {len(real)} and {len(synthetic)}")
        folds = [rng.permutation(len(a)) % N_FOLDS for a in (real, synthetic)]
        banks = [DensityBank(real, k, folds[0]), DensityBank(synthetic, k, folds[1])]
        y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
        fold_of = np.r_[folds[0], folds[1]]
        oof = np.empty(len(y))
        params = []
        for f in range(N_FOLDS):
            x = np.vstack([describe(real, banks, f, member_of=0, embedding=embedding),
                           describe(synthetic, banks, f, member_of=1, embedding=embedding)])
            model = Logistic.fit(x[fold_of != f], y[fold_of != f])
            oof[fold_of == f] = model.predict(x[fold_of == f])
            params.append((model.mean, model.scale, model.coef, model.intercept))
        means, scales, coefs, intercepts = (np.array(p) for p in zip(*params))
        probe = cls(real, synthetic, folds[0], folds[1], k, means, scales, coefs, intercepts,
                    oof[y == 0], oof[y == 1], model_identity, embedding=embedding, synthetic_labels=labels)
        probe._banks = banks
        return probe

    # -- use -----------------------------------------------------------------------------------

    def scores(self, embeddings: np.ndarray, model_identity: dict | None = None) -> np.ndarray:
        """Per-item probability of being synthetic (under the training prior): the mean of the
        fold models' probabilities, each on features against its own part of the banks."""
        self.check_compatible(embeddings, model_identity)
        items = np.asarray(embeddings, dtype=np.float32)
        found = [bank.neighbours(items) for bank in self.banks]  # one search serves every fold
        out = np.zeros(len(items))
        for f in range(len(self.intercepts)):
            model = Logistic(self.means[f], self.scales[f], self.coefs[f], float(self.intercepts[f]))
            out += model.predict(describe(items, self.banks, f, found=found, embedding=self.embedding))
        return out / len(self.intercepts)

    @property
    def banks(self) -> list[DensityBank]:
        if self._banks is None:
            self._banks = [DensityBank(self.real_bank, self.k, self.real_folds),
                           DensityBank(self.synthetic_bank, self.k, self.synthetic_folds)]
        return self._banks

    def check_compatible(self, embeddings: np.ndarray, model_identity: dict | None) -> None:
        if np.ndim(embeddings) != 2 or np.shape(embeddings)[1] != self.dim:
            raise ModelMismatch(f"the detector expects {self.dim}-d embeddings, got shape {np.shape(embeddings)}")
        if self.model_identity and model_identity and model_identity != self.model_identity:
            raise ModelMismatch(
                "the detector was trained on embeddings of another model "
                f"({_describe(self.model_identity)}) than these ({_describe(model_identity)}); "
                "embed with the detector's model or train a detector for this one")

    def estimate(self, scores: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[FractionEstimate, FractionEstimate]:
        """PACC (with a bootstrap interval) and EMQ estimates of the synthetic share, from the
        candidate's per-item scores. Both NaN when the detector is not identifiable."""
        details = {"n": len(scores), "auc": self.auc, "classify_and_count": float(np.mean(scores > 0.5)),
                   "mean_score_real": float(self.oof_real.mean()),
                   "mean_score_synthetic": float(self.oof_synthetic.mean())}
        if not self.identifiable:
            reason = (f"not identifiable: the detector's out-of-fold AUC is {self.auc:.3f} (< {MIN_AUC}), it does not "
                      "separate real from synthetic")
            return (FractionEstimate(float("nan"), None, None, f"PACC: {reason}", details),
                    FractionEstimate(float("nan"), None, None, f"EMQ: {reason}", {"n": len(scores)}))
        value = pacc(scores, self.oof_real, self.oof_synthetic)
        rng = np.random.default_rng(seed)
        groups = self._generator_groups()
        low, high = [], []
        for _ in range(n_boot):
            cand, real = _resample(scores, rng), _resample(self.oof_real, rng)
            each = [pacc(cand, real, _resample(g, rng)) for g in groups]
            low.append(min(each))
            high.append(max(each))
        lo, hi = float(np.nanpercentile(low, 2.5)), float(np.nanpercentile(high, 97.5))
        how = "bootstrap 95% interval"
        if len(groups) > 1:
            # The pooled adjustment assumes the candidate mixes the generators as training did; any
            # mix lies between the generators' own adjustments, so the interval spans them.
            how += (f", spanning the {len(groups)} generators' own adjustments (any mix of them); the estimate "
                    "assumes the training mix")
            details["per_generator"] = {g["name"]: pacc(scores, self.oof_real, grp)
                                        for g, grp in zip(self.generators or [], groups)}
        pacc_estimate = FractionEstimate(value, min(lo, value), max(hi, value), "PACC: density-aware probe (embedding "
                                         f"+ k-NN distances), out-of-fold adjusted, {how}", details)
        emq_estimate = FractionEstimate(emq(scores, self.train_prior), None, None,
                                        "EMQ: EM prior re-estimation on the probe's posteriors", {"n": len(scores)})
        return pacc_estimate, emq_estimate

    # -- plain-data persistence ---------------------------------------------------------------

    def save(self, path: str | Path) -> list[Path]:
        """Write `path` (JSON) and its arrays beside it (same name, .npz). Returns both paths."""
        path = Path(path)
        arrays_path = path.with_suffix(".npz")
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        if self.synthetic_labels is not None:
            arrays["synthetic_labels"] = self.synthetic_labels

        def save_arrays(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        write_atomic(arrays_path, save_arrays)  # a kill or a full disk leaves no half-written detector
        meta = {"format": FORMAT, "kind": "density-probe", "model_identity": self.model_identity, "k": self.k,
                "folds": len(self.intercepts), "auc": self.auc, "n_real": len(self.real_bank),
                "n_synthetic": len(self.synthetic_bank), "features": self.feature_names[self.dim * self.embedding:],
                "embedding_features": self.embedding,
                "generators": self.generators, "leave_one_generator_out": self.held_out,
                "arrays": {"file": arrays_path.name, "sha256": _sha256(arrays_path)}}
        write_text_atomic(path, json.dumps(meta, indent=1))
        return [path, arrays_path]

    @classmethod
    def load(cls, path: str | Path) -> SupervisedProbe:
        """Read a detector: JSON and an .npz of float arrays, every field checked; nothing in
        either is executed (no pickle)."""
        path = Path(path)
        try:
            meta = read_json(path, "madaudit detector", MAX_DETECTOR_JSON_BYTES)
        except ValueError as exc:
            raise DetectorProblem(str(exc)) from None
        if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith("madaudit-detector/"):
            raise DetectorProblem(f"{path} is not a madaudit detector (format must be {FORMAT!r})")
        if meta["format"] != FORMAT:
            raise DetectorProblem(f"{path} is a {meta['format']} detector (a linear probe that cannot see sampling bias); "
                             "retrain it with `madaudit detector train`")
        files = meta.get("arrays")
        if not isinstance(files, dict) or not isinstance(files.get("file"), str) or "/" in files["file"] \
                or "\\" in files["file"] or files["file"] in ("", ".", ".."):
            raise DetectorProblem(f"{path}: 'arrays' must name the .npz file beside it")
        arrays_path = path.with_name(files["file"])
        if not arrays_path.is_file():
            raise DetectorProblem(f"{path}: its arrays file {arrays_path} is missing (copy both files)")
        if arrays_path.stat().st_size > MAX_DETECTOR_NPZ_BYTES:
            raise DetectorProblem(f"{path}: {arrays_path.name} is over {MAX_DETECTOR_NPZ_BYTES} bytes")
        if _sha256(arrays_path) != files.get("sha256"):
            raise DetectorProblem(f"{path}: {arrays_path.name} does not match the sha256 recorded in the detector")
        identity = meta.get("model_identity")
        if identity is not None and not isinstance(identity, dict):
            raise DetectorProblem(f"{path}: model_identity must be an object")
        k = meta.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= LIMITS["k"]:
            raise DetectorProblem(f"{path}: k must be an integer from 1 to {LIMITS['k']}")
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {name: np.asarray(npz[name]) for name in _ARRAYS}
                labels = np.asarray(npz["synthetic_labels"]) if "synthetic_labels" in npz.files else None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DetectorProblem(f"{path}: {arrays_path.name} is not a detector's arrays ({exc})") from None
        embedding = meta.get("embedding_features", True)
        if not isinstance(embedding, bool):
            raise DetectorProblem(f"{path}: embedding_features must be true or false")
        _check_arrays(arrays, k, path, embedding)
        generators, held_out = _check_generators(meta.get("generators"), meta.get("leave_one_generator_out"), path)
        if labels is not None and not (labels.dtype.kind == "i" and labels.shape == (len(arrays["synthetic_bank"]),)
                                       and generators and set(np.unique(labels)) <= set(range(len(generators)))):
            raise DetectorProblem(f"{path}: synthetic_labels must give each synthetic item one of the generators")
        return cls(**{name: arrays[name] for name in _ARRAYS}, k=k, model_identity=identity, generators=generators,
                   held_out=held_out, embedding=embedding, synthetic_labels=labels)


def _check_generators(generators: Any, held_out: Any, path: Path) -> tuple[list | None, list | None]:
    """The detector file's generator list and leave-one-out figures, each field checked (older
    files have neither)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)

    if generators is not None and not (isinstance(generators, list) and all(
            isinstance(g, dict) and isinstance(g.get("name"), str) and isinstance(g.get("n"), int) for g in generators)):
        raise DetectorProblem(f"{path}: 'generators' must be a list of {{name, n}}")
    keys = ("auc", "share", "estimate", "error", "recovered")
    if held_out is not None and not (isinstance(held_out, list) and all(
            isinstance(h, dict) and isinstance(h.get("held_out"), str) and all(number(h.get(key)) for key in keys)
            for h in held_out)):
        raise DetectorProblem(f"{path}: 'leave_one_generator_out' must be a list of {{held_out, {', '.join(keys)}}}")
    return generators, held_out


def leave_one_generator_out(real: np.ndarray, synthetic: dict[str, np.ndarray], seed: int = 0, k: int = DEFAULT_K,
                            share: float = HELD_OUT_SHARE, embedding: bool = True) -> list[dict[str, Any]]:
    """For each generator in turn: a detector fitted on the real items outside a held-out part
    (the first HELD_OUT_REAL of a seeded permutation) against every other generator, then scored
    on the held-out real items against the held-out generator: its AUC there, and its PACC estimate
    on a candidate of every held-out real item plus that generator's first items at `share`."""
    real = _matrix(real, "real")
    order = np.random.default_rng(seed).permutation(len(real))
    n_hold = int(round(HELD_OUT_REAL * len(real)))
    hold, train = real[np.sort(order[:n_hold])], real[np.sort(order[n_hold:])]
    out = []
    for name in synthetic:
        others = np.vstack([_matrix(synthetic[o], o) for o in synthetic if o != name])
        probe = SupervisedProbe.fit(train, others, seed=seed, k=k, embedding=embedding)
        unseen = _matrix(synthetic[name], name)
        n_fake = min(len(unseen), int(round(share / (1 - share) * len(hold))))
        candidate = np.vstack([hold, unseen[:n_fake]])
        truth = n_fake / len(candidate)
        estimate = pacc(probe.scores(candidate), probe.oof_real, probe.oof_synthetic)
        estimate = 0.0 if not np.isfinite(estimate) else estimate  # cannot separate even its own labels: finds none
        out.append({"held_out": name, "auc": _auc(probe.scores(hold), probe.scores(unseen)), "share": truth,
                    "estimate": estimate, "error": estimate - truth, "recovered": estimate / truth})
    return out


def _check_arrays(a: dict[str, np.ndarray], k: int, path: Path, embedding: bool = True) -> None:
    for name, value in a.items():
        kind = "i" if name.endswith("folds") else "f"
        if value.dtype.kind != kind or (kind == "f" and not np.all(np.isfinite(value))):
            raise DetectorProblem(f"{path}: array {name!r} must hold finite {'integers' if kind == 'i' else 'floats'}")
    d = a["real_bank"].shape[1] if a["real_bank"].ndim == 2 else -1
    p = d * embedding + len(feature_names(("real", "synthetic")))
    shapes_ok = (a["real_bank"].ndim == 2 and a["synthetic_bank"].ndim == 2 and a["synthetic_bank"].shape[1] == d
                 and min(len(a["real_bank"]), len(a["synthetic_bank"])) > k
                 and a["real_folds"].shape == (len(a["real_bank"]),)
                 and a["synthetic_folds"].shape == (len(a["synthetic_bank"]),)
                 and a["coefs"].ndim == 2 and a["coefs"].shape[1] == p and len(a["coefs"]) >= 2
                 and a["means"].shape == a["coefs"].shape and a["scales"].shape == a["coefs"].shape
                 and a["intercepts"].shape == (len(a["coefs"]),)
                 and set(np.unique(np.r_[a["real_folds"], a["synthetic_folds"]])) == set(range(len(a["coefs"])))
                 and a["oof_real"].ndim == 1 and a["oof_synthetic"].ndim == 1
                 and len(a["oof_real"]) > 0 and len(a["oof_synthetic"]) > 0)
    if not shapes_ok:
        raise DetectorProblem(f"{path}: inconsistent detector arrays")
    if np.any(a["scales"] <= 0):
        raise DetectorProblem(f"{path}: feature scales must be positive")


def _matrix(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite (n, d) array, got shape {a.shape}")
    return a


def _subset_rows(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))


def _auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[negatives, positives])
    n0, n1 = len(negatives), len(positives)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pacc(scores: np.ndarray, oof_real: np.ndarray, oof_synthetic: np.ndarray) -> float:
    """Probabilistic adjusted classify-and-count, clipped to [0, 1]."""
    s0, s1 = float(np.mean(oof_real)), float(np.mean(oof_synthetic))
    if s1 - s0 <= 1e-9:
        return float("nan")  # the probe cannot tell the classes apart
    return float(np.clip((np.mean(scores) - s0) / (s1 - s0), 0.0, 1.0))


def emq(scores: np.ndarray, train_prior: float, tol: float = 1e-8, max_iter: int = 1000) -> float:
    """Saerens-Latinne-Decaestecker EM: re-weight posteriors to the new prior until it settles."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
    prior = train_prior
    for _ in range(max_iter):
        w1 = prior / train_prior * p
        w0 = (1 - prior) / (1 - train_prior) * (1 - p)
        new = float(np.mean(w1 / (w1 + w0)))
        if abs(new - prior) < tol:
            return new
        prior = new
    return prior


def _resample(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return a[rng.integers(0, len(a), len(a))]


def _describe(identity: dict) -> str:
    arch = identity.get("architecture", {}).get("name", "?")
    weights = identity.get("weights", {})
    return f"{arch}, {weights.get('tag') or 'weights ' + str(weights.get('file_sha256', weights))[:12]}"


