"""Embedding-space overlap of harmful, jailbreak-wrapped, borderline and benign prompts (SaRO's preliminary study).

The paper motivates reasoning by showing that harmful, jailbreak and benign prompts overlap in embedding space, so
surface features do not tell them apart. We embed the four groups with the packaged MiniLM sentence encoder or with
a causal LM's own hidden states (one layer, mean- or last-token-pooled), project them to 2-D (PCA, t-SNE) and
measure the overlap:

- k-nearest-neighbour label purity (cosine, per group and overall, with the chance level of the group sizes),
- the silhouette score of the group labels (cosine),
- linear probes (logistic regression, stratified k-fold CV): harmful+jailbreak vs benign+borderline, jailbreak vs
  benign, harmful+jailbreak vs borderline.

Cosine measures use vectors centred on the sample mean, then L2-normalised: hidden states share a large common
component (anisotropy) that would otherwise make every pair look alike. Everything is deterministic given the seed.
Output: ``<out>/overlap.json`` and one PNG per embedding source (plus a grid of all sources when there are several).
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from saro.errors import SaroError

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = ("harmful", "jailbreak", "borderline", "benign")
COLORS = {"harmful": "#d62728", "jailbreak": "#9467bd", "borderline": "#ff7f0e", "benign": "#2ca02c"}
# probe name -> (positive groups, negative groups)
PROBES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "harmful_vs_benign": (("harmful", "jailbreak"), ("benign", "borderline")),
    "jailbreak_vs_benign": (("jailbreak",), ("benign",)),
    "harmful_vs_borderline": (("harmful", "jailbreak"), ("borderline",)),
}
DEFAULT_HARMFUL = ("harmbench", "advbench")
DEFAULT_BORDERLINE = ("rho_overrefusal", "saro_borderline")
DEFAULT_BENIGN = ("saro_benign",)
# readable template attacks (the demo's train + held-out lists); encodings would be trivially separable
DEFAULT_ATTACKS = (
    "prefix_injection",
    "refusal_suppression",
    "aim",
    "developer_mode",
    "distractors",
    "poem",
    "fiction_frame",
    "code_completion",
    "past_tense_rule",
    "style_injection",
    "evil_confidant",
    "deep_inception",
    "wikipedia",
)
POOLINGS = ("mean", "last")
MINILM = "minilm"

VectorsFn = Callable[[list[str]], Any]


# ------------------------------------------------------------------------------------------------ measures


def _check_groups(groups: Mapping[str, Sequence[Any]]) -> None:
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SaroError(f"unknown group '{unknown[0]}' (groups: {', '.join(GROUPS)})")
    empty = [g for g, items in groups.items() if len(items) == 0]
    if empty:
        raise SaroError(f"group '{empty[0]}' is empty")
    if len(groups) < 2:
        raise SaroError(f"overlap needs at least two groups, got {', '.join(groups) or 'none'}")


def cosine_ready(x: Any, center: bool = True) -> Any:
    """Rows centred on their mean (optional) and L2-normalised, as float64."""
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def knn_purity(x: Any, labels: Sequence[str], k: int) -> dict[str, Any]:
    """Mean fraction of each point's k nearest neighbours (cosine, itself excluded) that share its label."""
    labels_arr = np.asarray(labels)
    n = len(labels_arr)
    if not 1 <= k < n:
        raise SaroError(f"k={k}: needs 1 <= k < number of prompts ({n})")
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    # stable sort on (-similarity): ties go to the lower index, so results do not depend on the platform
    nn = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    same = (labels_arr[nn] == labels_arr[:, None]).mean(axis=1)
    counts = Counter(labels_arr.tolist())
    per_group = {
        g: {"purity": float(same[labels_arr == g].mean()), "chance": (c - 1) / (n - 1)}
        for g, c in counts.items()
    }
    chance = sum(c / n * (c - 1) / (n - 1) for c in counts.values())
    return {"overall": float(same.mean()), "chance": float(chance), "k": k, "per_group": per_group}


def silhouette(x: Any, labels: Sequence[str]) -> dict[str, Any]:
    """Silhouette of the group labels (cosine): near 1 separated, near 0 overlapping, below 0 mixed."""
    from sklearn.metrics import silhouette_samples

    labels_arr = np.asarray(labels)
    s = silhouette_samples(x, labels_arr, metric="cosine")
    per_group = {g: float(s[labels_arr == g].mean()) for g in dict.fromkeys(labels_arr.tolist())}
    return {"overall": float(s.mean()), "per_group": per_group, "metric": "cosine"}


def linear_probe(x: Any, y: Sequence[int] | np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Logistic-regression accuracy under stratified k-fold CV (standardised features), mean and std."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_arr = np.asarray(y)
    minority = int(np.bincount(y_arr, minlength=2).min())
    n_splits = min(folds, minority)
    if n_splits < 2:
        return {"skipped": f"needs at least 2 prompts per class (smallest class has {minority})"}
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(clf, np.asarray(x, dtype=np.float64), y_arr, cv=cv, scoring="accuracy")
    return {
        "accuracy_mean": float(scores.mean()),
        "accuracy_std": float(scores.std()),
        "fold_accuracies": [float(s) for s in scores],
        "folds": n_splits,
        "chance": float(max(y_arr.mean(), 1 - y_arr.mean())),
        "n": len(y_arr),
    }


def overlap_measures(
    x: Any, labels: Sequence[str], k: int = 10, folds: int = 5, seed: int = 0, center: bool = True
) -> dict[str, Any]:
    """kNN purity, silhouette and linear probes for vectors ``x`` (one row per prompt) with group ``labels``."""
    x = np.asarray(x)
    labels = list(labels)
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise SaroError(f"vectors have shape {x.shape}, expected ({len(labels)}, dim)")
    if folds < 2:
        raise SaroError(f"folds={folds}: needs at least 2")
    _check_groups({g: [1] * c for g, c in Counter(labels).items()})
    xc = cosine_ready(x, center)
    labels_arr = np.asarray(labels)
    probes: dict[str, Any] = {}
    for name, (pos, neg) in PROBES.items():
        mask_pos = np.isin(labels_arr, pos)
        mask_neg = np.isin(labels_arr, neg)
        if not mask_pos.any() or not mask_neg.any():
            continue
        sel = mask_pos | mask_neg
        res = linear_probe(x[sel], mask_pos[sel].astype(int), folds=folds, seed=seed)
        present = set(labels_arr.tolist())
        probes[name] = {
            "positive": [g for g in pos if g in present],
            "negative": [g for g in neg if g in present],
            **res,
        }
    return {
        "counts": {g: c for g, c in Counter(labels).items()},
        "dim": int(x.shape[1]),
        "knn_purity": knn_purity(xc, labels, k),
        "silhouette": silhouette(xc, labels),
        "probes": probes,
    }


def compute_overlap(
    groups: dict[str, list[str]], vectors_fn: VectorsFn, k: int = 10, folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Embed every group's texts with ``vectors_fn`` (texts -> array (n, dim)) and measure their overlap."""
    _check_groups(groups)
    texts, labels = _flatten(groups)
    return overlap_measures(vectors_fn(texts), labels, k=k, folds=folds, seed=seed)


def _flatten(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    texts = [t for g in groups.values() for t in g]
    labels = [name for name, g in groups.items() for _ in g]
    return texts, labels


# ---------------------------------------------------------------------------------------------- embeddings


def resolve_layer(layer: int | str, num_layers: int) -> int:
    """Index into ``hidden_states`` (0 = embeddings, ``num_layers`` = last block): int, negative, or 'middle'."""
    if isinstance(layer, str):
        if layer == "middle":
            return num_layers // 2
        try:
            layer = int(layer)
        except ValueError:
            raise SaroError(
                f"--layer {layer!r}: an integer (negative counts from the end) or 'middle'"
            ) from None
    if not -(num_layers + 1) <= layer <= num_layers:
        raise SaroError(
            f"--layer {layer}: the model has hidden states 0..{num_layers} (or -1..-{num_layers + 1})"
        )
    return layer % (num_layers + 1)


def _content_start(rendered: str, text: str) -> int:
    """Character offset where the prompt itself starts in a chat-templated string (0 when not found)."""
    i = rendered.rfind(text)
    if i < 0:
        i = rendered.rfind(text.strip())
    return max(i, 0)


def embed_with_model(
    texts: list[str],
    model: Any,
    layer: int | str = "middle",
    pooling: str = "mean",
    batch_size: int = 16,
    tokenizer: Any = None,
    template: bool = True,
    max_length: int = 1024,
) -> Any:
    """Pooled hidden states of a causal LM at ``layer``, shape (len(texts), hidden), float32 numpy.

    ``model`` is a loaded model or a source ('embedded', a folder, a hub id). With ``template`` each text is the
    user turn of the model's chat template (with the generation prompt); ``mean`` then averages the tokens from
    the prompt's start to the end, leaving out the system/header prefix that every prompt shares, and ``last``
    takes the final token (the assistant header: where the model decides how to answer). Right padding, so
    positions match an unpadded forward pass; long prompts are truncated from the left.
    """
    import torch

    from saro.console import make_progress

    if pooling not in POOLINGS:
        raise SaroError(f"--pooling {pooling!r}: one of {', '.join(POOLINGS)}")
    if batch_size < 1:
        raise SaroError(f"batch size {batch_size}: must be at least 1")
    if isinstance(model, str):
        from saro.models.loading import load_model, load_tokenizer

        tokenizer = tokenizer or load_tokenizer(model)
        model = load_model(model)
    elif tokenizer is None:
        from saro.models.loading import load_tokenizer

        tokenizer = load_tokenizer(model.config._name_or_path)
    num_layers = int(model.config.num_hidden_layers)
    idx = resolve_layer(layer, num_layers)
    hidden = int(model.config.hidden_size)
    if not texts:
        return np.zeros((0, hidden), dtype=np.float32)
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if template and getattr(tokenizer, "chat_template", None):
        rendered = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
            )
            for t in texts
        ]
        starts = [_content_start(r, t) for r, t in zip(rendered, texts, strict=True)]
    else:
        rendered, starts = list(texts), [0] * len(texts)
    fast = bool(getattr(tokenizer, "is_fast", False))  # offsets need a fast tokenizer; else pool every token
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(texts), hidden), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(rendered[i]))  # similar lengths share a batch
    with make_progress() as prog, torch.inference_mode():
        task = prog.add_task(f"hidden states (layer {idx}/{num_layers}, {pooling})", total=len(texts))
        for b in range(0, len(order), batch_size):
            ids = order[b : b + batch_size]
            enc = tokenizer(
                [rendered[i] for i in ids],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=not template,
                return_offsets_mapping=fast,
            )
            offsets = enc.pop("offset_mapping", None)
            enc = {key: v.to(device) for key, v in enc.items()}
            h = hidden_at(model, enc, idx).float()
            mask = enc["attention_mask"].bool()
            if pooling == "last":
                pos = torch.arange(mask.shape[1], device=device)
                last = (mask * pos).argmax(dim=1)
                pooled = h[torch.arange(h.shape[0], device=device), last]
            elif offsets is None:
                w = mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * w).sum(dim=1) / w.sum(dim=1)
            else:
                start = torch.tensor([starts[i] for i in ids]).unsqueeze(1)
                keep = mask & (offsets[:, :, 1] > start).to(device)
                keep = torch.where(keep.any(dim=1, keepdim=True), keep, mask)  # all truncated away: use all
                w = keep.unsqueeze(-1).to(h.dtype)
                pooled = (h * w).sum(dim=1) / w.sum(dim=1)
            out[ids] = pooled.cpu().numpy()
            prog.advance(task, len(ids))
    return out


class _StopForward(Exception):
    """Raised by a forward hook once the wanted layer has run: later layers and the LM head are skipped."""


def hidden_at(model: Any, inputs: dict[str, Any], idx: int) -> Any:
    """``hidden_states[idx]`` of a causal LM's decoder for tokenised ``inputs``, without running later layers.

    Inner layers are read by a forward hook that stops the pass (the middle layer costs half a forward and no
    LM head); index 0 and the last (after the final norm) come from ``output_hidden_states``.
    """
    import torch

    base = getattr(model, "base_model", model)
    layers = getattr(base, "layers", None)
    n = int(model.config.num_hidden_layers)
    if 0 < idx < n and isinstance(layers, torch.nn.ModuleList) and len(layers) == n:
        captured: list[Any] = []

        def hook(_mod: Any, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = layers[idx - 1].register_forward_hook(hook)
        try:
            base(**inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if captured:
            return captured[0]
    return base(**inputs, output_hidden_states=True, use_cache=False).hidden_states[idx]


@dataclass
class Embedder:
    """One embedding source: the MiniLM sentence encoder or a causal LM's hidden states."""

    label: str  # short name used in file names and the side-by-side table (minilm, model, base, aligned)
    source: str  # 'minilm', or a model source ('embedded', a folder, a hub id)
    layer: int | str = "middle"
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise SaroError(f"--pooling {self.pooling!r}: one of {', '.join(POOLINGS)}")
        if isinstance(self.layer, str) and self.layer != "middle":
            try:
                self.layer = int(self.layer)
            except ValueError:
                raise SaroError(
                    f"--layer {self.layer!r}: an integer (negative counts from the end) or 'middle'"
                ) from None

    @property
    def is_sentence_encoder(self) -> bool:
        return self.source == MINILM


def _model_name(source: str) -> str:
    """A short readable name: the embedded model's name, a folder's last two parts, or the hub id."""
    from saro.models.loading import EMBEDDED

    if source.startswith(EMBEDDED):
        return "SmolLM2-135M-Instruct (embedded)"
    p = Path(source)
    return "/".join(p.parts[-2:]) if p.exists() else source


def _embed(e: Embedder, texts: list[str], batch_size: int, template: bool) -> tuple[Any, dict[str, Any]]:
    """Vectors for ``texts`` and a description of how they were made."""
    if e.is_sentence_encoder:
        from saro.embeddings import embed

        log.info("embedding %d prompts with all-MiniLM-L6-v2", len(texts))
        return embed(texts, batch_size=max(batch_size, 32)), {"name": "all-MiniLM-L6-v2 (sentence encoder)"}
    from saro.models.loading import load_model, load_tokenizer

    log.info("embedding %d prompts with the hidden states of %s", len(texts), e.source)
    model = load_model(e.source)
    tok = load_tokenizer(e.source)
    n_layers = int(model.config.num_hidden_layers)
    idx = resolve_layer(e.layer, n_layers)
    vecs = embed_with_model(texts, model, idx, e.pooling, batch_size, tokenizer=tok, template=template)
    desc = {
        "name": f"{_model_name(e.source)}, layer {idx}/{n_layers}, {e.pooling} pooling",
        "layer": idx,
        "num_layers": n_layers,
        "pooling": e.pooling,
        "chat_template": template,
    }
    del model
    return vecs, desc


# ------------------------------------------------------------------------------------------------- inputs


def _sample(items: list[str], n: int | None, seed: int, what: str) -> list[str]:
    """A deterministic sample of ``n`` distinct items (all of them, shuffled, when n is None)."""
    from saro.prompts.sources import normalize

    uniq = sorted({normalize(t): t for t in items}.values(), key=normalize)
    random.Random(f"{seed}:{what}").shuffle(uniq)
    if n is None:
        return uniq
    if n < 1:
        raise SaroError(f"--n {n}: must be at least 1")
    if n > len(uniq):
        raise SaroError(f"group '{what}': asked for {n} prompts but only {len(uniq)} are available")
    return uniq[:n]


def groups_from_sources(
    n: int = 80,
    seed: int = 0,
    harmful: Sequence[str] = DEFAULT_HARMFUL,
    borderline: Sequence[str] = DEFAULT_BORDERLINE,
    benign: Sequence[str] = DEFAULT_BENIGN,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Four groups of ``n`` prompts from registered prompt sources; jailbreak = the harmful ones, wrapped.

    Each jailbreak prompt wraps the harmful prompt at the same position with the next attack in turn.
    Rows of a source whose kind does not fit the group are left out (an XSTest-like source gives both kinds).
    """
    from saro.prompts.attacks import apply_attack, get_attack
    from saro.prompts.sources import load_source

    attacks = list(dict.fromkeys(attacks))
    if not attacks:
        raise SaroError("jailbreak group: no attacks given")
    for a in attacks:
        if get_attack(a).needs_llm:
            raise SaroError(f"attack '{a}' needs an LLM rewriter; use template attacks for the overlap study")
    pools: dict[str, list[str]] = {}
    for group, names in (("harmful", harmful), ("borderline", borderline), ("benign", benign)):
        if not names:
            raise SaroError(f"group '{group}': no prompt source given")
        texts: list[str] = []
        for name in names:
            texts += [r.text for r in load_source(name).prompts if r.kind == group]
        if not texts:
            raise SaroError(f"group '{group}' is empty: sources {', '.join(names)} have no {group} prompts")
        pools[group] = texts
    chosen = {g: _sample(pools[g], n, seed, g) for g in pools}
    order = attacks[:]
    random.Random(f"{seed}:attacks").shuffle(order)
    wrapped = [(apply_attack(order[i % len(order)], t, seed=seed)) for i, t in enumerate(chosen["harmful"])]
    groups = {
        "harmful": chosen["harmful"],
        "jailbreak": wrapped,
        "borderline": chosen["borderline"],
        "benign": chosen["benign"],
    }
    info = {
        "from": "sources",
        "sources": {"harmful": list(harmful), "borderline": list(borderline), "benign": list(benign)},
        "jailbreak": "the harmful prompts, each wrapped by one attack (in turn)",
        "attacks": dict(Counter(order[i % len(order)] for i in range(len(wrapped)))),
        "n_per_group": n,
        "seed": seed,
    }
    return groups, info


def group_of(kind: str, attack: str | None) -> str | None:
    """The overlap group of a labelled prompt; wrapped benign/borderline prompts belong to none."""
    if kind == "harmful":
        return "jailbreak" if attack else "harmful"
    return None if attack else kind


def groups_from_run(
    run_dir: str | Path, n: int | None = None, seed: int = 0, splits: Sequence[str] = ("rw", "srpo", "eval")
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Groups from a run's ``prompts/{rw,srpo,eval}.jsonl``; ``n`` per group (all when None).

    Harmful prompts wrapped by an attack form the jailbreak group; wrapped benign or borderline prompts are left
    out (and counted). A group with no prompts is dropped with a warning, unless ``n`` asks for it.
    """
    from saro.records import Prompt, read_jsonl

    root = Path(run_dir)
    pdir = root / "prompts"
    files = [pdir / f"{s}.jsonl" for s in splits if (pdir / f"{s}.jsonl").exists()]
    if not root.is_dir():
        raise SaroError(f"{root}: run directory not found")
    if not files:
        raise SaroError(f"{pdir}: no prompts/{{{','.join(splits)}}}.jsonl; run the prompts stage first")
    pools: dict[str, list[str]] = {g: [] for g in GROUPS}
    skipped: Counter[str] = Counter()
    for f in files:
        for p in read_jsonl(f, Prompt):
            g = group_of(p.kind, p.attack)
            if g is None:
                skipped[f"wrapped {p.kind}"] += 1
            else:
                pools[g].append(p.text)
    groups: dict[str, list[str]] = {}
    for g in GROUPS:
        if not pools[g]:
            if n is not None:
                raise SaroError(f"group '{g}' is empty in {pdir}")
            log.warning("run %s has no %s prompts; leaving that group out", root, g)
            continue
        groups[g] = _sample(pools[g], n, seed, g)
    if len(groups) < 2:
        raise SaroError(
            f"{pdir}: prompts of at least two groups are needed, found {', '.join(groups) or 'none'}"
        )
    info = {
        "from": "run",
        "run_dir": str(root),
        "files": [str(f) for f in files],
        "n_per_group": n,
        "available": {g: len(set(v)) for g, v in pools.items()},
        "left_out": dict(skipped),
        "seed": seed,
    }
    return groups, info


def resolve_run_model(ref: str, run_dir: str | Path | None) -> str:
    """'@base', '@train_sft', '@train_dpo[/variant]' against a run directory; other sources pass through."""
    from saro.stage import FINAL, MANIFEST
    from saro.stages import parse_model_ref

    parsed = parse_model_ref(ref)
    if parsed is None:
        return ref
    if run_dir is None:
        raise SaroError(f"model reference '{ref}' needs a run directory")
    from saro.records import read_json

    root = Path(run_dir)
    if parsed.stage == "base":
        manifest = root / MANIFEST
        try:
            return str(read_json(manifest)["config"]["model"]["source"])
        except (KeyError, TypeError):
            raise SaroError(f"{manifest}: no model source recorded; give the base model explicitly") from None
    stage, variant = parsed.stage, parsed.variant
    path = root / stage / variant / FINAL if variant else root / stage / FINAL
    if not path.exists():
        raise SaroError(f"{path}: missing; run stage '{stage}' first")
    return str(path)


# -------------------------------------------------------------------------------------------------- plots


def project(x: Any, seed: int = 0) -> dict[str, Any]:
    """2-D PCA and t-SNE (cosine, PCA init) of the centred, normalised vectors; deterministic given ``seed``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    xc = cosine_ready(x)
    pca = PCA(n_components=2, svd_solver="full")
    p = pca.fit_transform(xc)
    perplexity = float(min(30.0, max(2.0, (len(xc) - 1) / 3)))
    t = TSNE(
        n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed, max_iter=1000
    ).fit_transform(xc)
    return {"pca": p, "tsne": t, "pca_explained": [float(v) for v in pca.explained_variance_ratio_]}


def _headline(m: dict[str, Any]) -> str:
    parts = [
        f"kNN purity {m['knn_purity']['overall']:.2f} (chance {m['knn_purity']['chance']:.2f})",
        f"silhouette {m['silhouette']['overall']:+.2f}",
    ]
    hb = m["probes"].get("harmful_vs_benign", {})
    if "accuracy_mean" in hb:
        parts.append(f"probe harmful-vs-benign {hb['accuracy_mean']:.2f}±{hb['accuracy_std']:.2f}")
    return " · ".join(parts)


def _draw(axes: Any, proj: dict[str, Any], labels: list[str]) -> None:
    labels_arr = np.asarray(labels)
    pe = proj["pca_explained"]
    for ax, key, title in (
        (axes[0], "pca", f"PCA ({pe[0]:.0%} + {pe[1]:.0%} of variance)"),
        (axes[1], "tsne", "t-SNE (cosine)"),
    ):
        xy = proj[key]
        for g in GROUPS:
            sel = labels_arr == g
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=12, alpha=0.7, c=COLORS[g], label=f"{g} ({sel.sum()})")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])


def _legend(fig: Any, axes: Any) -> None:
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)


def _save_png(fig: Any, path: Path) -> None:
    """Save a figure atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a plot is for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_source(
    path: Path, proj: dict[str, Any], labels: list[str], title: str, measures: dict[str, Any]
) -> None:
    """One PNG: PCA and t-SNE side by side, coloured by group, titled with the source and its measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    _draw(axes, proj, labels)
    fig.suptitle(f"{title}\n{_headline(measures)}", fontsize=10)
    _legend(fig, axes)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save_png(fig, path)
    plt.close(fig)


def plot_grid(path: Path, rows: list[tuple[str, dict[str, Any], dict[str, Any]]], labels: list[str]) -> None:
    """All sources in one PNG, one row each (title, projections, measures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 5.4 * len(rows)), squeeze=False)
    for ax_row, (title, proj, m) in zip(axes, rows, strict=True):
        _draw(ax_row, proj, labels)
        ax_row[0].text(
            0.0, 1.09, f"{title}\n{_headline(m)}", transform=ax_row[0].transAxes, fontsize=10, va="bottom"
        )
    _legend(fig, axes[0])
    fig.tight_layout(rect=(0, 0.04 / len(rows), 1, 1))
    _save_png(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- run


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "source"


def side_by_side(sources: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """The headline measures of every source, keyed measure -> label -> value."""
    table: dict[str, dict[str, float | None]] = {}
    for s in sources:
        m = s["measures"]
        row = {
            "knn_purity": m["knn_purity"]["overall"],
            "knn_purity_chance": m["knn_purity"]["chance"],
            "silhouette": m["silhouette"]["overall"],
        }
        for name in PROBES:
            p = m["probes"].get(name, {})
            row[f"probe_{name}"] = p.get("accuracy_mean")
            row[f"probe_{name}_std"] = p.get("accuracy_std")
        for key, v in row.items():
            table.setdefault(key, {})[s["label"]] = v
    return table


def run_overlap(
    groups: dict[str, list[str]],
    embedders: Sequence[Embedder],
    out_dir: str | Path,
    *,
    inputs: dict[str, Any] | None = None,
    k: int = 10,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 16,
    template: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Embed the groups with each source, measure, plot; write ``<out>/overlap.json`` and return it.

    Plot paths in the JSON are relative to its folder.
    """
    from saro.records import atomic_write_json

    _check_groups(groups)
    if not embedders:
        raise SaroError("no embedding source given")
    slugs = [_slug(e.label) for e in embedders]
    if len(set(slugs)) != len(slugs):
        raise SaroError(f"embedding source labels must be distinct: {', '.join(slugs)}")
    for e in embedders:  # fail before any slow work
        if not e.is_sentence_encoder:
            from saro.models.loading import resolve_source

            resolve_source(e.source)
    texts, labels = _flatten(groups)
    n_total = len(texts)
    if not 1 <= k < n_total:
        raise SaroError(f"--k {k}: needs 1 <= k < number of prompts ({n_total})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources: list[dict[str, Any]] = []
    grid: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for e, slug in zip(embedders, slugs, strict=True):
        vecs, desc = _embed(e, texts, batch_size, template)
        measures = overlap_measures(vecs, labels, k=k, folds=folds, seed=seed)
        entry: dict[str, Any] = {"label": e.label, "source": e.source, **desc, "measures": measures}
        if plots:
            proj = project(vecs, seed)
            title = f"{e.label}: {desc['name']}" if e.label != MINILM else desc["name"]
            plot_source(out / f"overlap_{slug}.png", proj, labels, title, measures)
            entry["plot"] = f"overlap_{slug}.png"
            entry["pca_explained_variance"] = proj["pca_explained"]
            grid.append((title, proj, measures))
        log.info("%s: %s", e.label, _headline(measures))
        sources.append(entry)
    result: dict[str, Any] = {
        "study": "embedding-space overlap of harmful, jailbreak, borderline and benign prompts",
        "inputs": inputs or {},
        "counts": {g: len(v) for g, v in groups.items()},
        "settings": {
            "k": k,
            "folds": folds,
            "seed": seed,
            "cosine": "centred on the sample mean, then L2-normalised",
            "probe": "standardised features, logistic regression (C=1), stratified k-fold accuracy",
            "embedders": [asdict(e) for e in embedders],
        },
        "sources": sources,
        "side_by_side": side_by_side(sources),
        "plots": {s["label"]: s["plot"] for s in sources if "plot" in s},
    }
    if plots and len(grid) > 1:
        plot_grid(out / "overlap_all.png", grid, labels)
        result["plots"]["all"] = "overlap_all.png"
    atomic_write_json(out / "overlap.json", result)
    log.info("wrote %s", out / "overlap.json")
    return result
