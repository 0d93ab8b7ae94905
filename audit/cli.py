"""The `madaudit` command line. Commands only parse options and call plain functions.

Exit codes: 0 success (a scan that passed, warnings allowed), 1 a scan gate failed (only that),
2 usage or configuration error, 3 input or runtime error, 4 internal error (a bug: the traceback
is printed with --verbose), 130 interrupted. `MadauditGroup` maps every exception to one of them,
so a traceback never exits 1, which CI would read as a failed gate.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from audit import __version__
from audit.limits import LIMITS, MAX_RUNS_X_GENERATIONS

EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class InputError(click.ClickException):
    """Bad or unusable input (nothing readable, weights missing): exit code 3."""

    exit_code = EXIT_INPUT


class InternalError(click.ClickException):
    """A bug: exit code 4, never 1."""

    exit_code = EXIT_INTERNAL


def classify_exception(exc: BaseException) -> click.ClickException:
    """The exit code an exception means: 2 for usage and configuration, 3 for inputs and the
    machine (files, weights, cache, disk, memory), 4 for anything else (a bug)."""
    import sqlite3

    from audit.embedding import DeviceError, ModelNotFound, WeightsUnavailable
    from audit.io import ArrayProblem, FolderProblem, InputProblem
    from audit.items import EngineProblem, ItemsProblem
    from audit.limits import LimitError
    from audit.policy import PolicyError
    from audit.store import CacheUnavailable
    from detectors.base import DetectorProblem, ModelMismatch

    if isinstance(exc, (PolicyError, LimitError, ModelNotFound, ModelMismatch, DetectorProblem, DeviceError)):
        return click.UsageError(str(exc))
    if isinstance(exc, EngineProblem):
        return click.UsageError(str(exc))
    if isinstance(exc, (InputProblem, ArrayProblem, FolderProblem, WeightsUnavailable, CacheUnavailable, ItemsProblem)):
        return InputError(str(exc))
    if isinstance(exc, sqlite3.Error):
        return InputError(f"embedding cache error: {exc}")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return InputError(f"{where}{exc.strerror or exc}")
    if isinstance(exc, MemoryError):
        return InputError("out of memory: use smaller inputs or a machine with more memory")
    return InternalError(f"internal error: please report it ({type(exc).__name__}: {exc}); "
                         "run with `madaudit --verbose ...` for the traceback")


def repeated_option(params: list[click.Parameter], args: list[str]) -> str | None:
    """The first single-valued option that `args` give twice (click would keep the last one
    silently), as a message; None if there is none. Values are skipped, so a value that looks like
    an option is not counted."""
    takes_value, single = {}, {}
    for p in params:
        if isinstance(p, click.Option):
            for opt in (*p.opts, *p.secondary_opts):
                takes_value[opt] = not (p.is_flag or p.count)
                if not (p.multiple or p.count):
                    single[opt] = p
    seen: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        opt = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2] if arg.startswith("-") and len(arg) > 1 else None
        if opt in takes_value:
            param = single.get(opt)
            if param is not None:
                if param.name in seen:
                    both = f"{opt} is given twice" if seen[param.name] == opt else f"{seen[param.name]} and {opt} are both given"
                    return f"{both}, but it sets one value ({param.name}): give it once"
                seen[param.name] = opt
            if takes_value[opt] and arg == opt:
                i += 1  # its value follows
        i += 1
    return None


class StrictCommand(click.Command):
    """A single-valued option given twice is a usage error (exit 2), never a silent override."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        problem = repeated_option(self.params, args)
        if problem:
            raise click.UsageError(problem, ctx)
        return super().parse_args(ctx, args)


class MadauditGroup(click.Group):
    """Every exception a command lets through becomes a clear message and its exit code; every
    command (and every subgroup's) is a `StrictCommand`."""

    command_class = StrictCommand
    group_class = type  # subgroups are MadauditGroups too

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("madaudit: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - every exception gets an exit code here
            if (ctx.obj or {}).get("verbose"):
                import traceback

                traceback.print_exc()
            raise classify_exception(exc) from None


@click.group(cls=MadauditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="madaudit")
@click.option("--verbose", "-v", is_flag=True, help="Print tracebacks of errors, and what libraries log.")
@click.option("--quiet", is_flag=True, help="Log errors only (each command's -q hides its progress bars).")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Audit a candidate training set against a trusted real reference set: how much is
    synthetic, how faithful and diverse it is, and how fast it would go MAD if reused.

    Each side (REFERENCE, CANDIDATE) is any of: an image folder; WebDataset tar shards (a .tar, a
    folder of them, or 'shards/{00000..00009}.tar'); a .txt or parquet list of image paths; an
    embedding folder (`madaudit embed` or clip-retrieval, every part); a .npy file; a parquet file
    or folder with an embedding column."""
    ctx.obj = {"verbose": verbose}
    configure_logging(verbose, quiet)


OUR_LOGGERS = ("audit", "detectors", "madaudit")


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """One stderr handler on the root logger: madaudit's own records at INFO with --verbose, WARNING
    by default, ERROR with --quiet; other libraries' records (open_clip's "WARNING:root:" lines)
    only with --verbose. Installed first, so a library's logging.basicConfig adds nothing."""
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to whatever sys.stderr is at the time (test runners swap it)."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    if not verbose:
        handler.addFilter(lambda record: record.name.split(".")[0] in OUR_LOGGERS)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_madaudit", False)]
    handler._madaudit = True
    root.addHandler(handler)
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    root.setLevel(logging.INFO if verbose else level)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _apply(f, options):
    for option in reversed(options):
        f = option(f)
    return f


TOP_DEFAULT = 24  # most suspicious items listed (fraction) and shown in the report's gallery (scan)


def metric_options(f):
    """Options of the metrics, shared by `metrics` and `scan`."""
    return duplicate_options(_apply(f, [
        click.option("--tail-q", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True),
                     help="Share of the reference (the sparsest points) that tail coverage looks at."),
        click.option("--clusters", default=None, type=click.IntRange(min=2),
                     help="k-means clusters for the cluster tail mass [default: N/50, between 2 and 50]."),
    ]))


def fraction_options(f):
    """Options of the synthetic-share estimate, shared by `fraction` and `scan`."""
    return _apply(f, [
        click.option("--delta", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="BBE's lower bound holds with probability 1 - delta."),
        click.option("--top", default=TOP_DEFAULT, show_default=True, type=click.IntRange(min=0),
                     help="Most suspicious items to list (scan: to show in the report's gallery)."),
    ])


def item_options(f):
    """The per-item pass and sampling at scale (scan only)."""
    from audit.items import DEFAULT_DROP, ENGINES
    from audit.items.run import DEFAULT_TARGET_RECALL
    from audit.pipeline import DEFAULT_SAMPLE_SIZE

    return _apply(f, [
        click.option("--items/--no-items", "items", default=True, show_default=True,
                     help="Score every candidate item into items.parquet beside report.json (per-item verdicts "
                          "for `madaudit filter`)."),
        click.option("--sample-size", default=DEFAULT_SAMPLE_SIZE, show_default=True, type=click.IntRange(min=100),
                     help="Set-level numbers on a seeded uniform sample of at most this many items per side."),
        click.option("--exact", is_flag=True, help="Exact nearest neighbours in the per-item pass, whatever the size "
                                                   "[default: exact up to 50,000 items, an IVF index beyond]."),
        click.option("--target-recall", default=DEFAULT_TARGET_RECALL, show_default=True,
                     type=click.FloatRange(0, 1, min_open=True),
                     help="Recall@10 the approximate index is tuned to (measured on a sample, in report.json)."),
        click.option("--drop", default=",".join(DEFAULT_DROP), show_default=True,
                     help="Which flags drop an item in items.parquet's keep column: any of synthetic, copies, "
                          "duplicates, outside."),
        click.option("--engine", default="local", show_default=True, type=click.Choice(ENGINES),
                     help="Where the per-item scoring runs: this process, or a Ray cluster (pip install "
                          "'madaudit[ray]')."),
        click.option("--address", default=None, help="Ray cluster address [default: a local cluster]."),
        click.option("--ray-workers", default=None, type=click.IntRange(min=1),
                     help="CPUs of the local Ray cluster [default: all]."),
    ])


def forecast_options(f):
    """The forecast's knobs, shared by `project` and `scan`, with one set of defaults (those of
    [forecast] in the config, `policy.ForecastSettings`); a flag overrides the config."""
    from audit.policy import ForecastSettings

    base = ForecastSettings()
    return _apply(f, [
        click.option("--loop", default=None, type=click.Choice(["fully_synthetic", "augment", "fresh", "accumulate", "all"]),
                     help=f"Loop model (`all`: every loop, `project` only) [default: {base.loop}]."),
        click.option("--stand-in", "stand_in", default=None, type=click.Choice(["auto", "gaussian", "gmm", "categorical"]),
                     help=f"Generative stand-in (auto: the first that reproduces the reference at generation 0) "
                          f"[default: {base.model}]."),
        click.option("--generations", default=None, type=click.IntRange(1, LIMITS["generations"]),
                     help=f"[default: {base.generations}]"),
        click.option("--runs", default=None, type=click.IntRange(1, LIMITS["runs"]),
                     help=f"Monte Carlo runs (runs x generations at most {MAX_RUNS_X_GENERATIONS:,}) [default: {base.runs}]."),
        click.option("--dim", default=None, type=click.IntRange(1, LIMITS["dim"]),
                     help=f"PCA subspace dimension [default: {base.dim}]."),
        click.option("--threshold", default=None, type=click.FloatRange(0, 1, min_open=True),
                     help=f"Share of the real-only loop's recall / tail coverage that marks the MAD horizon "
                          f"[default: {base.threshold}]."),
        click.option("--eval-size", default=None, type=click.IntRange(10, LIMITS["eval_size"]),
                     help=f"Samples a run scores against up to 1,000 held-out reference points [default: {base.eval_size}]."),
    ])


def _forecast_settings(base, loop=None, stand_in=None, generations=None, runs=None, dim=None, threshold=None,
                       eval_size=None):
    """`base` (the config's [forecast]) with the flags that were given."""
    import dataclasses

    given = {"loop": loop, "model": stand_in, "generations": generations, "runs": runs, "dim": dim,
             "threshold": threshold, "eval_size": eval_size}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def duplicate_options(f):
    """How near duplicates are called (`audit.duplicates`), for `metrics` and `scan`."""
    options = [
        click.option("--duplicates", default="calibrated", show_default=True, type=click.Choice(["calibrated", "cosine"]),
                     help="calibrated: as close as the --duplicate-quantile of the reference's own nearest-neighbour "
                          "distances; cosine: cosine similarity >= --duplicate-cosine."),
        click.option("--duplicate-quantile", default=0.001, show_default=True,
                     type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="Quantile of the reference's nearest-neighbour distances (the calibrated rule)."),
        click.option("--duplicate-cosine", default=0.95, show_default=True, type=click.FloatRange(-1, 1),
                     help="Cosine similarity threshold (the cosine rule)."),
    ]
    return _apply(f, options)


def model_options(f):
    """Options shared by every command that may embed images."""
    from audit.embedding import DEFAULT_MODEL, DEFAULT_PRETRAINED
    from audit.io.files import DEFAULT_MAX_FILE_MB
    from audit.limits import LIMITS

    options = [
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help="open_clip architecture name, a model-config .json, or 'pixels' (downsampled pixels + PCA "
                          "fitted on the first image folder; needs no weights)."),
        click.option("--basis", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="pixels: reuse this basis (the pixels_basis.npz `madaudit embed` writes) instead of fitting "
                          "one on the first image folder."),
        click.option("--pretrained", default=DEFAULT_PRETRAINED, show_default=True,
                     help="open_clip pretrained tag, a local checkpoint file, or 'random' (untrained, tests only)."),
        click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N."),
        click.option("--offline", is_flag=True, help="Never download weights; use local files and caches only."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, LIMITS["batch_size"])),
        click.option("--workers", default=None, type=click.IntRange(0, LIMITS["workers"]),
                     help="Decoding worker processes [default: number of CPU cores, at most 8]."),
        click.option("--max-file-mb", default=DEFAULT_MAX_FILE_MB, show_default=True,
                     type=click.FloatRange(0, 1 << 20, min_open=True),
                     help="Image files larger than this are listed as too_large, never read."),
        click.option("--embedding-column", default="embedding", show_default=True,
                     help="Column of parquet inputs that holds the embeddings."),
        click.option("--embedding-model", "embedding_model", multiple=True,
                     help="Declare the model of bare embeddings (.npy, parquet): once for both sides, or twice "
                          "(reference, candidate). Sides with different models are refused."),
        click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                     help="Embedding cache file [default: $MADAUDIT_CACHE or ~/.cache/madaudit/embeddings.sqlite]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command()
@click.argument("source")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (img_emb/*.npy, metadata/*.parquet, skipped.csv, madaudit.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and skipped files as JSON.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="Embed here, or on a pool of Ray actors, one model each (pip install 'madaudit[ray]').")
@click.option("--address", default=None, help="Ray cluster address [default: a local cluster].")
@click.option("--ray-workers", default=None, type=click.IntRange(min=1), help="CPUs of the local Ray cluster.")
@model_options
def embed(source, out, as_json, engine, address, ray_workers, **flags):
    """Embed every image of SOURCE with CLIP and write them to --out. SOURCE is an image folder
    (recursively), WebDataset tar shards, or a .txt / parquet list of image paths."""
    from audit.embedding import embed_listing, save_embed_result
    from audit.io import InputProblem, detect_kind
    from audit.io.sides import IMAGE_KINDS, list_images, load_image_embedder
    from audit.store import EmbeddingStore, default_cache_path

    options = _embed_options(**flags)
    kind = detect_kind(source, options)
    if kind not in IMAGE_KINDS:
        raise InputProblem(f"{source}: holds embeddings already ({kind}); embed takes images")
    listing = list_images(source, kind, options.max_file_mb)
    with EmbeddingStore(options.cache or default_cache_path()) as store:
        embedder = load_image_embedder(options.model, options.pretrained, options.device, options.allow_download,
                                       store, listing, options.basis)
        result = embed_listing(listing, embedder, store, batch_size=options.batch_size, workers=options.workers,
                               progress=options.progress, max_file_mb=options.max_file_mb, engine=engine,
                               address=address, ray_workers=ray_workers)
    save_embed_result(result, out, listing.root if kind != "images" else str(source))
    basis = None
    if hasattr(embedder, "save"):  # pixels: the basis, so other folders can be embedded in the same space
        from audit.pixels import BASIS_FILE

        basis = embedder.save(Path(out) / BASIS_FILE)
    counts = result.counts
    if as_json:
        click.echo(json.dumps({"out": str(out), "vectors": len(result.keys), "counts": counts,
                               "basis": str(basis) if basis else None,
                               "skipped": [{"key": s.key, "reason": s.reason, "detail": s.detail} for s in result.skipped]},
                              indent=2))
        if not result.keys:
            raise InputError(f"no readable images in {source} (see {out / 'skipped.csv'})")
        return
    if basis:
        click.echo(f"pixels basis written to {basis}: pass it as --basis when embedding other folders, so they share "
                   "this space")
    click.echo(
        f"{len(result.keys)} embedded vectors written to {out} "
        f"({counts['embedded']} newly embedded, {counts['from_cache']} from cache, "
        f"{counts['unreadable']} unreadable, {len(result.skipped) - counts['unreadable']} ignored)"
    )
    for reason in sorted(k for k in counts if k.startswith("skipped_")):
        click.echo(f"  {reason.removeprefix('skipped_')}: {counts[reason]}")
    if not result.keys:
        raise InputError(f"no readable images in {source} (see {out / 'skipped.csv'})")


@main.command()
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--k", "k", default=5, show_default=True, type=click.IntRange(1, LIMITS["k"]), help="Neighbours for the k-NN radii.")
@metric_options
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON instead of a table.")
@model_options
def metrics(reference, candidate, k, tail_q, duplicates, duplicate_quantile, duplicate_cosine, clusters, seed, as_json,
            **flags):
    """Compare CANDIDATE with REFERENCE: precision, recall, density, coverage, tail coverage,
    FD, KID, CMMD, Vendi diversity and near duplicates. Each side is an image folder, a .npy
    embedding file or a folder written by `madaudit embed`."""
    from audit.metrics import compare
    from audit.render import metrics_table

    options = _embed_options(**flags)
    ref, cand = _load_pair(reference, candidate, options)
    try:
        result = compare(ref.vectors, cand.vectors, k=k, tail_q=tail_q, duplicate_rule=duplicates,
                         duplicate_quantile=duplicate_quantile, duplicate_threshold=duplicate_cosine, n_clusters=clusters, seed=seed, reference_keys=ref.keys, candidate_keys=cand.keys)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo(result.to_json(indent=2) if as_json else metrics_table(result))


@main.group()
def detector():
    """Train supervised synthetic-content detectors."""


@detector.command("train")
@click.option("--real", "real_path", required=True, type=click.Path(path_type=Path),
              help="Real items: image folder, .npy or embed folder.")
@click.option("--synthetic", "synthetic_paths", required=True, multiple=True, metavar="[NAME=]PATH",
              help="Labelled synthetic items of one generator: image folder, .npy or embed folder, named NAME "
                   "(default: the file or folder name). Repeat it for each generator: the detector learns real vs "
                   "all of them, and measures how it does on each one held out.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="detector.json to write (its arrays go beside it, same name, .npz).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--k", "k", default=5, show_default=True, type=click.IntRange(1, LIMITS["k"]), help="Neighbours for the density features.")
@click.option("--force", is_flag=True, help="Write the detector even if it barely separates real from synthetic.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written and how well it separates, as JSON.")
@model_options
def detector_train(real_path, synthetic_paths, out, seed, k, force, as_json, **flags):
    """Fit a density-aware detector real vs synthetic (embedding + k-NN distances to both labelled
    sets) and save it as plain data: JSON and an .npz of float arrays, with the embedding model's
    identity, so it refuses embeddings of another model. With two or more generators (--synthetic
    repeated) it also stores, per generator held out, the AUC and share it recovers when trained on
    the others. Refuses (exit 2) to write a detector whose out-of-fold AUC is below 0.6 unless --force."""
    from detectors.probe import MIN_AUC, SupervisedProbe

    options = _embed_options(**flags)
    named = parse_named_sources(synthetic_paths)
    synthetic = {}
    for name, path in named.items():
        real, synthetic[name] = _load_pair(real_path, path, options)
    try:
        probe = SupervisedProbe.fit_generators(real.vectors, {n: e.vectors for n, e in synthetic.items()},
                                               real.model_identity, seed=seed, k=k)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    summary = (f"out-of-fold AUC {probe.auc:.3f} on {len(probe.real_bank)} real and {len(probe.synthetic_bank)} "
               f"synthetic items (mean score: real {probe.oof_real.mean():.3f}, synthetic {probe.oof_synthetic.mean():.3f})")
    if not probe.identifiable and not force:
        raise click.UsageError(f"the detector does not separate real from synthetic: {summary}; below {MIN_AUC} its "
                               "estimates are not identifiable. Use more or other labelled synthetic examples, "
                               "or --force to write it anyway")
    written = probe.save(out)
    if as_json:
        click.echo(json.dumps({"written": [str(w) for w in written], "auc": probe.auc, "identifiable": probe.identifiable,
                               "n_real": len(probe.real_bank), "n_synthetic": len(probe.synthetic_bank),
                               "mean_score_real": float(probe.oof_real.mean()),
                               "mean_score_synthetic": float(probe.oof_synthetic.mean()),
                               "generators": probe.generators, "leave_one_generator_out": probe.held_out,
                               "unseen_generator": probe.unseen_generator_note()}, indent=2))
        return
    click.echo(f"detector written to {', '.join(map(str, written))}: {summary}")
    click.echo(probe.unseen_generator_note())
    if not probe.identifiable:
        click.echo(f"warning: AUC below {MIN_AUC}: scans with this detector report the synthetic share as unknown",
                   err=True)


@main.command()
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--detector", "detector_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A detector.json from `madaudit detector train` (adds the supervised estimate).")
@click.option("--k", "k", default=5, show_default=True, type=click.IntRange(1, LIMITS["k"]))
@fraction_options
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print every estimate, interval, method and warning as JSON.")
@model_options
def fraction(reference, candidate, detector_path, k, delta, seed, top, as_json, **flags):
    """Estimate the synthetic share of CANDIDATE against the real REFERENCE: supervised (with
    --detector), unsupervised lower bound (BBE), and the share outside the reference manifold."""
    from detectors.base import ModelMismatch
    from detectors.fraction import estimate_fraction
    from detectors.probe import SupervisedProbe

    probe = SupervisedProbe.load(detector_path) if detector_path else None  # a bad file: exit 2
    options = _embed_options(**flags)
    ref, cand = _load_pair(reference, candidate, options)
    try:
        report = estimate_fraction(ref.vectors, cand.vectors, probe, cand.model_identity, k=k, delta=delta, seed=seed)
    except ModelMismatch as exc:
        raise click.UsageError(str(exc)) from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "most_suspicious": report.most_suspicious(cand.keys, top)}, indent=2))
        return
    for name, e in report.estimates.items():
        interval = f"  [{e.lower:.3f}, {e.upper:.3f}]" if e.lower is not None and e.upper is not None else (
            f"  (at least {e.lower:.3f})" if e.lower is not None else "")
        click.echo(f"{name:16s} {e.value:.3f}{interval}  {e.method}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    for item in report.most_suspicious(cand.keys, top):
        click.echo(f"suspicious: {item['key']}  " + ", ".join(f"{k}={v:.3f}" for k, v in item.items() if k != "key"))


@main.command()
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", required=False, type=click.Path(path_type=Path))
@click.option("--detector", "detector_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With CANDIDATE: use this detector's synthetic share and scores.")
@forecast_options
@click.option("--real-fraction", type=click.FloatRange(0, 1), help="Fresh/fixed real share p [default: from CANDIDATE, else 0.1].")
@click.option("--n", "n", type=click.IntRange(2, LIMITS["n"]),
              help="Training items per generation [default: CANDIDATE's size, else 1000].")
@click.option("--lam", type=click.FloatRange(0, 1, min_open=True), help="Sampling bias [default: from CANDIDATE, else 0.8].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--from-report", "from_report", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take p, lambda and n measured by a scan from its report.json (instead of CANDIDATE).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the forecast curves (PNG).")
@click.option("--json", "as_json", is_flag=True)
@model_options
def project(reference, candidate, detector_path, loop, stand_in, real_fraction, n, lam, generations, runs, dim,
            threshold, eval_size, seed, from_report, plot, as_json, **flags):
    """Forecast how fast a training mixture goes MAD if reused generation after generation.
    With CANDIDATE, p, lambda and n are measured on it (flags override)."""
    from audit import projector
    from audit.render import forecast_plot, forecast_table

    from audit.limits import check_forecast
    from audit.policy import ForecastSettings

    settings = _forecast_settings(ForecastSettings(), loop, stand_in, generations, runs, dim, threshold, eval_size)
    loop, stand_in, generations, runs = settings.loop, settings.model, settings.generations, settings.runs
    dim, threshold, eval_size = settings.dim, settings.threshold, settings.eval_size
    check_forecast(generations, runs, dim, eval_size, n)
    options = _embed_options(**flags)
    measured: dict = {}
    separation = None  # a scan's separation reading (--from-report)
    if from_report is not None and candidate is not None:
        raise click.UsageError("give either CANDIDATE or --from-report, not both")
    if detector_path is not None and candidate is None:
        raise click.UsageError("--detector needs CANDIDATE: the detector measures the candidate's synthetic share")
    if from_report is not None:
        from audit.pipeline import measured_inputs_from_report

        try:
            measured = measured_inputs_from_report(from_report)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        separation = measured.pop("separation_reading", None)  # from the scan's forecast, not its inputs
    if candidate is not None:
        from detectors.fraction import estimate_fraction
        from detectors.probe import SupervisedProbe

        ref, cand = _load_pair(reference, candidate, options)
        probe = SupervisedProbe.load(detector_path) if detector_path else None
        report = estimate_fraction(ref.vectors, cand.vectors, probe, cand.model_identity, seed=seed)
        estimate = report.estimates["supervised" if probe else "unsupervised"]
        try:
            measured = projector.inputs_from_audit(ref.vectors, cand.vectors, estimate.value,
                                                   (estimate.lower, estimate.upper), seed=seed)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        reference_vectors = ref.vectors
        scores = report.item_scores.get("supervised")  # the items the detector calls synthetic, as scan takes
        flagged = None if scores is None else cand.vectors[scores >= 0.5]
    else:
        from audit.io import load_side

        try:
            reference_vectors = load_side(reference, options, {}).embeddings.vectors
        except ValueError as exc:
            if isinstance(classify_exception(exc), click.UsageError):
                raise
            raise InputError(str(exc)) from None
    keys = ("real_fraction", "real_fraction_interval", "lam", "lam_interval", "n")
    inputs = {"real_fraction": 0.1, "n": 1000, "lam": 0.8, **{k: measured[k] for k in keys if k in measured}}
    for key, value in (("real_fraction", real_fraction), ("n", n), ("lam", lam)):
        if value is not None:  # a flag replaces the measured value and its interval
            inputs[key] = value
            inputs.pop(f"{key}_interval", None)
    try:
        space = projector.ReferenceSpace.fit(reference_vectors, dim, seed=seed)
        part = {}
        if candidate is not None:
            from audit.pipeline import synthetic_part_inputs

            part = synthetic_part_inputs(space, reference_vectors, flagged, seed)
            if "synthetic_scores" in part:
                measured["synthetic_scores"] = part.pop("synthetic_scores")
        elif "synthetic_scores" in measured:  # --from-report: the scan's reading of the flagged items
            from audit.pipeline import recall_target

            part = {"synthetic_recall": recall_target(measured["synthetic_scores"]), "separation_reading": separation}
        if lam is not None:  # --lam replaces the lambda matched to the synthetic part's recall
            part.pop("synthetic_recall", None)
        meaning = projector.inputs_meaning(measured) if measured else None
        if meaning and lam is not None:
            meaning.pop("lam_note", None)  # --lam replaced the measured lambda
        loops = projector.LOOPS if loop == "all" else (loop,)
        forecasts = [projector.project(None, loop=lp, model=stand_in, generations=generations, runs=runs, seed=seed,
                                       threshold=threshold, space=space, search_fresh=lp == loops[0],
                                       eval_size=eval_size, inputs_meaning=meaning, **inputs, **part)
                     for lp in loops]
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if plot:
        forecast_plot(forecasts, plot)
    if as_json:
        click.echo(json.dumps({"inputs": inputs, "measured": measured, "forecasts": [f.to_dict() for f in forecasts]},
                              indent=2))
        return
    if measured:
        click.echo("measured on the candidate: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in measured.items()
            if k != "method" and not isinstance(v, dict)))  # the synthetic part's reading: in the forecast's lines
    for fc in forecasts:
        click.echo(forecast_table(fc) + "\n")
    if plot:
        click.echo(f"forecast curves written to {plot}")




def gate_flags(f):
    """--min-<metric> / --max-<metric> for every gateable value, in its natural direction."""
    from audit.policy import GATEABLE

    for metric, (comparator, meaning) in reversed(list(GATEABLE.items())):
        flag = f"--{comparator}-{metric.replace('_', '-')}"
        f = click.option(flag, f"{comparator}_{metric}", type=float, default=None,
                         help=f"Gate: {metric} {'>=' if comparator == 'min' else '<='} this ({meaning}).")(f)
    return f


@main.command()
@click.argument("reference", required=False, type=click.Path(path_type=Path))
@click.argument("candidate", required=False, type=click.Path(path_type=Path))
@click.option("--detector", "detector_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A detector.json from `madaudit detector train` (adds the supervised estimate).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), is_eager=True,
              callback=lambda ctx, param, value: _config_defaults(ctx, value),
              help="Run configuration: [inputs], [embed], [metrics], [detector], [forecast], [gates] (flags override) "
                   "[default: ./madaudit.toml, else [tool.madaudit] in ./pyproject.toml, else built-in].")
@click.option("--out", "-o", default="madaudit-report", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json, report.md, report.html and junit.xml.")
@click.option("--fail-on", default="fail", show_default=True, type=click.Choice(["fail", "warn", "never"]),
              help="Exit 1 when a gate of this severity (or worse) trips; never: always exit 0 after reporting.")
@click.option("--k", "k", default=5, show_default=True, type=click.IntRange(1, LIMITS["k"]))
@click.option("--seed", default=0, show_default=True, type=int)
@metric_options
@fraction_options
@forecast_options
@item_options
@click.option("--json", "as_json", is_flag=True, help="Print report.json to the terminal instead of the verdict table.")
@gate_flags
@model_options
def scan(reference, candidate, detector_path, config_path, out, fail_on, k, seed, tail_q, duplicates, duplicate_quantile,
         duplicate_cosine, clusters, delta, top, loop, stand_in, generations, runs, dim, threshold, eval_size, items,
         sample_size, exact, target_recall, drop, engine, address, ray_workers, as_json, **flags):
    """Audit CANDIDATE against REFERENCE end to end: embed (cache reused), every metric, the
    synthetic share, the MAD forecast, the policy's gates; write the reports; exit 0 (pass,
    warnings allowed), 1 (a gate failed), 2 (usage or config error) or 3 (input error).
    REFERENCE and CANDIDATE may come from the config's [inputs] instead."""
    from audit.report import verdict_table, write_reports

    from detectors.probe import SupervisedProbe

    import dataclasses

    from audit.limits import check_forecast

    if reference is None or candidate is None:
        raise click.UsageError("REFERENCE and CANDIDATE are needed: as arguments, or as reference and candidate "
                               "in the config's [inputs]")
    reference, candidate, out = Path(reference), Path(candidate), Path(out)
    detector_path = Path(detector_path) if detector_path is not None else None
    policy = _policy(config_path, flags)
    forecast = _forecast_settings(policy.forecast, loop, stand_in, generations, runs, dim, threshold, eval_size)
    if forecast.loop == "all":
        raise click.UsageError("scan forecasts one loop; --loop all is for `madaudit project`")
    check_forecast(forecast.generations, forecast.runs, forecast.dim, forecast.eval_size)
    policy = dataclasses.replace(policy, forecast=forecast)
    if detector_path is not None:
        SupervisedProbe.load(detector_path)  # a bad detector file is a usage error, found before any work
    options = dataclasses.replace(_embed_options(**flags), engine=engine, address=address, ray_workers=ray_workers)
    item_settings = _item_settings(drop, exact, target_recall, engine, address, ray_workers)
    result = _run_scan(reference, candidate, detector_path, policy, options, progress=_step_reporter(options), k=k,
                       seed=seed, tail_q=tail_q,
                       duplicate_rule=duplicates, duplicate_quantile=duplicate_quantile,
                       duplicate_threshold=duplicate_cosine, n_clusters=clusters, delta=delta, gallery_size=top,
                       sample_size=sample_size, items=out / "items.parquet" if items else None,
                       item_settings=item_settings)
    written = write_reports(result.to_dict(), out)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(verdict_table(result.to_dict(), _status_colour, shutil.get_terminal_size().columns))
        click.echo(f"reports: {', '.join(str(p) for p in written.values())}")
    trips = {"fail": {"fail"}, "warn": {"fail", "warn"}, "never": set()}[fail_on]
    if result.verdict in trips:
        sys.exit(1)


@main.command("filter")
@click.argument("report_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--drop", default=None,
              help="Flags that drop an item: any of synthetic, copies, duplicates, outside "
                   "[default: the list the scan used, report.json items.rules.drop].")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="The keys to keep: .parquet (one column `key`, for img2dataset / clip-retrieval) or text, "
                   "one key a line [default: REPORT_DIR/keep.txt].")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def filter_command(report_dir, drop, out, as_json):
    """Write the keys of the candidate items to keep, from a scan's items.parquet (REPORT_DIR, or
    the file itself)."""
    from audit.items import parse_drop
    from audit.items.filtering import filter_items

    try:
        drop = parse_drop(drop) if drop is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--drop") from None
    result = filter_items(report_dir, drop, out)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in result["flagged"].items()) or "nothing"
    click.echo(f"kept {result['kept']:,} of {result['items']:,} items (flagged: {dropped}); "
               f"keys written to {result['out']}")


@main.command("policy")
@click.option("--show", is_flag=True, help="Print the policy in effect as TOML (the default action).")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Policy file to read.")
@gate_flags
def policy_command(show, as_json, config_path, **gate_overrides):
    """Show the whole configuration a scan would run with here: [inputs], [embed], [metrics],
    [detector] (config file over built-in defaults), then the policy ([forecast], [gates]; config
    file and gate flags combined)."""
    from audit.config import RUN_KEYS, read_config, run_defaults
    from audit.policy import PolicyError

    policy = _policy(config_path, gate_overrides)
    try:
        configured = run_defaults(*read_config(config_path))
    except PolicyError as exc:
        raise click.UsageError(str(exc)) from None
    scan = main.commands["scan"]
    with click.Context(scan) as scan_ctx:  # the declared defaults, flags as False
        scan_defaults = {p.name: p.get_default(scan_ctx) for p in scan.params}
    scan_defaults = {k: (v if isinstance(v, (str, int, float, bool, tuple, Path)) else None) for k, v in scan_defaults.items()}
    run = {section: {key: configured.get(name, scan_defaults.get(name)) for key, (name, _) in keys.items()}
           for section, keys in RUN_KEYS.items()}
    if as_json:
        click.echo(json.dumps({**run, **policy.to_dict()}, indent=2, default=str))
        return
    lines = []
    for section, values in run.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None or value == ():
                lines.append(f"# {key} =  (not set)")
            else:
                value = list(value) if isinstance(value, tuple) else value
                lines.append(f"{key} = {json.dumps(value) if not isinstance(value, Path) else json.dumps(str(value))}")
        lines.append("")
    click.echo("\n".join(lines) + policy.to_toml(), nl=False)


REPORT_FILES = {"html": "report.html", "md": "report.md", "junit": "junit.xml"}


@main.command()
@click.argument("result", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", default="html", show_default=True, type=click.Choice(["html", "md", "junit", "json"]))
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="File to write ('-': the terminal) [default: report.html, report.md or junit.xml beside RESULT; "
                   "json: the terminal].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Judge the stored findings by this policy's gates instead (nothing is recomputed).")
@click.option("--fail-on", default="never", show_default=True, type=click.Choice(["fail", "warn", "never"]),
              help="Exit 1 when the (re-judged) verdict is this bad.")
@gate_flags
def report(result, fmt, out, config_path, fail_on, **gate_overrides):
    """Re-render a report.json (from `madaudit scan`) as html, md, junit or json, without
    recomputing; with --config or gate flags, judged by another policy first."""
    from audit.io.atomic import write_text_atomic
    from audit.pipeline import ScanResult
    from audit.report import render_html, render_junit, render_markdown, verdict_line

    try:
        scan_result = ScanResult.from_json(result)
        regate = config_path is not None or any(v is not None for v in gate_overrides.values())
        if regate:
            scan_result = scan_result.regated(_policy(config_path, gate_overrides))
        data = scan_result.to_dict()
        text = {"html": render_html, "md": render_markdown, "junit": render_junit,
                "json": lambda d: json.dumps(d, indent=2) + "\n"}[fmt](data)
    except ValueError as exc:  # names the file and the problem already
        raise InputError(str(exc)) from None
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise InputError(f"{result} is not a valid madaudit report ({type(exc).__name__}: {exc})") from None
    if out is None and fmt != "json":
        out = result.parent / REPORT_FILES[fmt]
    if out is None or str(out) == "-":
        click.echo(text, nl=False)
    else:
        write_text_atomic(out, text)
        click.echo((verdict_line(data) + "\n" if regate else "") + f"written to {out}")
    trips = {"fail": {"fail"}, "warn": {"fail", "warn"}, "never": set()}[fail_on]
    if data["verdict"] in trips:
        sys.exit(1)


@main.command()
@click.option("--out", "-o", default="madaudit-demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the generated fixtures, detector and reports.")
@click.option("--seed", default=0, show_default=True, type=int)
def demo(out, seed):
    """Offline demo: build digit fixtures (real digits plus 20% synthetic ones from a biased
    generator), train a detector, and scan, with the `pixels` embedder (no weights needed)."""
    from audit.demo import run_demo
    from audit.forecast_story import forecast_headline
    from audit.report import verdict_table

    result, paths = run_demo(out, seed=seed, progress=lambda msg: click.echo(msg))
    click.echo(verdict_table(result.to_dict(), _status_colour, shutil.get_terminal_size().columns))
    click.echo("\n" + forecast_headline(result.to_dict()["forecast"]))
    click.echo(f"\nThe truth: {paths['truth']}. Open {paths['html']} in a browser for the full report.")


def _config_defaults(ctx: click.Context, config_path) -> Path | None:
    """Eager: the run sections of the config become the defaults of scan's options (a flag given
    on the command line still wins)."""
    from audit.config import read_config, run_defaults
    from audit.policy import PolicyError

    try:
        data, source, prefix = read_config(config_path)
        defaults = run_defaults(data, source, prefix)
    except PolicyError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return config_path


@main.command()
@click.option("--out", "-o", default="madaudit.toml", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(out, force):
    """Write a commented starter configuration (every section, the default gates)."""
    from audit.config import STARTER
    from audit.io.atomic import write_text_atomic

    if out.exists() and not force:
        raise click.UsageError(f"{out} exists; use --force to overwrite it")
    write_text_atomic(out, STARTER)
    click.echo(f"written to {out}: edit it, then run `madaudit scan` in this folder")


def _step_reporter(options):
    """Each long step of a scan on its own stderr line, with the time the one before took (on a
    terminal, unless -q)."""
    import time

    show = sys.stderr.isatty() if options.progress is None else options.progress
    last = {"name": None, "start": 0.0}

    def report(name: str | None) -> None:
        """`name`: the step that starts now; None: the last one is over."""
        if not show:
            return
        if last["name"]:
            click.echo(f"  done in {time.monotonic() - last['start']:.1f} s", err=True)
        if name:
            click.echo(name + " ...", err=True, nl=False)
        last.update(name=name, start=time.monotonic())

    return report


def _status_colour(text: str, status: str) -> str:
    """Green, yellow or red status cells (click drops the colour when the output is not a terminal)."""
    return click.style(text, fg={"pass": "green", "warn": "yellow", "fail": "red"}.get(status), bold=status == "fail")


def _policy(config_path, flags):
    from audit.policy import GATEABLE, PolicyError, load_policy, with_overrides

    gate_flags = {f"{comparator}_{metric}" for metric, (comparator, _) in GATEABLE.items()}
    try:
        return with_overrides(load_policy(config_path),
                              {k: v for k, v in flags.items() if k in gate_flags and v is not None})
    except PolicyError as exc:
        raise click.UsageError(str(exc)) from None


def _item_settings(drop, exact, target_recall, engine, address, workers):
    from audit.items import ItemSettings, parse_drop

    try:
        drop = parse_drop(drop)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--drop") from None
    if address is not None and engine != "ray":
        raise click.UsageError("--address is for --engine ray")
    return ItemSettings(drop=drop, exact=exact, target_recall=target_recall, engine=engine, address=address,
                        workers=workers)


def _run_scan(reference, candidate, detector_path, policy, options, **kwargs):
    from audit.pipeline import scan as run_scan

    return run_scan(reference, candidate, detector_path, policy, options, **kwargs)


def _embed_options(model, pretrained, device, offline, batch_size, workers, cache_path, quiet, max_file_mb,
                   embedding_column, embedding_model, basis=None, **_gate_flags):
    from audit.io import EmbedOptions

    if len(embedding_model) > 2:
        raise click.UsageError("--embedding-model: give it once (both sides) or twice (reference, candidate)")
    return EmbedOptions(model, pretrained, device, False if offline else None, batch_size, workers,
                        str(cache_path) if cache_path else None, False if quiet else None, max_file_mb,
                        embedding_column, tuple(embedding_model), str(basis) if basis else None)


def parse_named_sources(values: tuple[str, ...]) -> dict[str, Path]:
    """`NAME=PATH` or `PATH` (named after the file or folder) for each value; names must differ."""
    import re

    named: dict[str, Path] = {}
    for value in values:
        name, sep, rest = str(value).partition("=")
        if sep and re.fullmatch(r"[A-Za-z0-9_.-]+", name) and rest:
            path = Path(rest)
        else:
            path, name = Path(value), Path(value).stem or Path(value).name
        if name in named:
            raise click.UsageError(f"two generators are named {name!r}: name them with NAME=PATH")
        named[name] = path
    return named


def _load_pair(reference, candidate, options):
    """Both sides as embeddings in one space, or a clear error (exit 2 or 3)."""
    from audit.io import load_pair

    try:
        ref, cand = load_pair(reference, candidate, options)
    except ValueError as exc:
        if isinstance(classify_exception(exc), click.UsageError):
            raise  # a configuration error (model, device, limits): exit 2
        raise InputError(str(exc)) from None  # anything else the inputs caused: exit 3
    return ref.embeddings, cand.embeddings


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
