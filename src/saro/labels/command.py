"""``saro label RUN``: one entry point for the labelling actions (terminal, HTML page, export, import, test set)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from saro.errors import SaroError
from saro.labels.items import DEFAULT_N, LABELS_DIR, Answer, draw_sample, load_answers, sample_name
from saro.labels.page import PAGE_NAME, write_page
from saro.labels.store import LabelState, LabelWriter, check_labels, read_labels, repair_labels, state_text
from saro.labels.terminal import label_in_terminal
from saro.labels.testset import write_testset
from saro.labels.transfer import export_row, export_sample, import_labels
from saro.stage import RunDir

log = logging.getLogger(__name__)

WARNING = (
    "Warning: labelling shows the models' answers to harmful prompts (jailbreak requests included), unredacted, "
    "because you asked to label them. They may contain harmful content."
)
FILE_WARNING = "holds the models' answers to harmful prompts: keep it with the run, do not publish it"


@dataclass
class LabelOptions:
    """What ``saro label`` was asked to do (at most one of the file actions; none = label in the terminal)."""

    n: int = DEFAULT_N
    seed: int = 0
    labeller: str = "unknown"
    export: Path | None = None
    import_file: Path | None = None
    html: Path | None = None
    html_default: bool = False  # --html without a path: RUN/labels/label.html
    testset: Path | None = None
    yes: bool = False  # skip the confirmation before answers are shown in the terminal


def label_run(run_dir: Path, opts: LabelOptions, out: Console, read: Callable[[], str | None]) -> None:
    """Do what ``opts`` asks for the run in ``run_dir``; ``out`` shows answers, ``read`` reads a line (None at end)."""
    actions = [x for x in (opts.export, opts.import_file, opts.html or opts.html_default, opts.testset) if x]
    if len(actions) > 1:
        raise SaroError("saro label: give at most one of --export, --import, --html, --testset")
    answers = load_answers(RunDir(run_dir))
    if not answers:
        raise SaroError(
            f"{run_dir}: the eval has no answers to label (capability and prefilled ones are not labelled)"
        )
    repair_labels(run_dir)
    labels = read_labels(run_dir)
    state = check_labels(labels, answers)
    name = sample_name(opts.n, opts.seed)
    if opts.import_file:
        newest = {lab.item: lab for lab in labels}
        with LabelWriter(run_dir, opts.labeller, f"import:{opts.import_file.name}", "import") as w:
            res = import_labels(opts.import_file, answers, newest, w)
        out.print(
            f"imported {res.added} labels from {opts.import_file} ({res.unchanged} unchanged, {res.unlabelled} rows "
            f"without a label"
            + (f", {res.stale} given to an older answer: stored as stale" if res.stale else "")
            + ")"
        )
        _after(run_dir, out)
        return
    if opts.testset:
        k = write_testset(opts.testset, answers, state.valid)
        out.print(f"wrote {k} labelled answers to {opts.testset} (it {FILE_WARNING})")
        return
    sample = draw_sample(answers, opts.n, opts.seed)
    if opts.export:
        k = export_sample(opts.export, sample, state.valid)
        out.print(f"wrote the blind sample ({k} answers, {name}) to {opts.export} (it {FILE_WARNING})")
        return
    if opts.html or opts.html_default:
        path = opts.html or run_dir / LABELS_DIR / PAGE_NAME
        write_page(path, [export_row(a, state.valid.get(a.id)) for a in sample], run_dir, name)
        out.print(
            f"wrote {path}: open it in a browser, download the labels, then saro label {run_dir} --import FILE"
        )
        out.print(f"(the page {FILE_WARNING})")
        return
    _terminal(run_dir, opts, sample, state, out, read)


def _terminal(
    run_dir: Path,
    opts: LabelOptions,
    sample: list[Answer],
    state: LabelState,
    out: Console,
    read: Callable[[], str | None],
) -> None:
    """Label the sample's unlabelled answers in the terminal, after a warning and (unless --yes) a confirmation."""
    pending = [a for a in sample if a.id not in state.valid]
    out.print(Text(state_text(state, len(sample))))
    if not pending:
        out.print("every answer of this sample is labelled (a larger --n adds more)")
        return
    out.print(Text(WARNING, style="bold yellow"))
    if not opts.yes:
        out.print("Continue? [y/N]")
        if (read() or "").strip().lower() not in ("y", "yes"):
            out.print("nothing shown")
            return
    with LabelWriter(run_dir, opts.labeller, "terminal", sample_name(opts.n, opts.seed)) as w:
        res = label_in_terminal(pending, w, out, read, done_before=len(sample) - len(pending))
    out.print(
        f"{res.labelled} labels given, {res.skipped} skipped"
        + ("; run the same command to resume" if res.quit else "")
    )
    _after(run_dir, out)


def _after(run_dir: Path, out: Console) -> None:
    state = check_labels(read_labels(run_dir), load_answers(RunDir(run_dir)))
    out.print(Text(state_text(state)))
    out.print(f"the report shows the judge's agreement with these labels: saro report {run_dir}")
