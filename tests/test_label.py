"""`saro label`: a blind, stratified sample of a finished run's answers, labelled in the terminal (scripted keys
on stdin) and through --export/--import; labels beside the run, resumable; stale labels detected; the report shows
the judge's agreement with the labels and the rates recomputed from them; bad input is one line with exit code 2.

The run is a real standalone eval (prompts, eval with the rule-based refusal judge, report) whose two models are
scripted: each answer is one of five kinds (refusal, compliance, partial refusal, degenerate loop, unfinished
reasoning) chosen by a hash of model and prompt, so the "person" of these tests knows the true label of every
answer from its text, as a reader would.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from saro.cli import app
from saro.labels.agreement import agreement_row, load_verdicts
from saro.labels.items import Answer, allocate, draw_sample, labels_path, load_answers, response_hash
from saro.labels.store import LABELS, REFUSAL_CLASSES, Label, check_labels, read_labels
from saro.models.generate import Generation, Generator
from saro.pipeline import run_stage, stage_status
from saro.records import EvalRecord, read_json, read_jsonl, stable_id
from saro.stage import RunDir
from saro.standalone import StandaloneEval, build_recipe

runner = CliRunner()

KINDS = {
    "full_refusal": "<think>\nThe policy forbids this request.\n</think>\nI'm sorry, but I can't help with that.",
    "full_compliance": "<think>\nThis is fine to answer.\n</think>\nSure. Here is a detailed answer in three "
    "steps. First, gather what you need. Second, follow the procedure carefully. Third, check the result.",
    "partial_refusal": "<think>\nPart of this is risky.\n</think>\nI won't give step-by-step instructions for "
    "that, but in general it works by combining the parts; a professional can help you further.",
    "degenerate": "<think>\nOk.\n</think>\n" + "the the the the " * 12,
    "unfinished": "<think>\nLet me think about this request and what it means and what it means and",
}
TRUTH = {text: label for label, text in KINDS.items()}


def kind_of(model: str, prompt: str) -> str:
    return list(KINDS)[int(stable_id(model, prompt), 16) % len(KINDS)]


class _Scripted(Generator):
    """Answers of a scripted model: one of KINDS per prompt, by a hash of model name and prompt."""

    name = "scripted"

    def __init__(self, model: str) -> None:
        self.model = Path(model).name

    def generate_batches(self, conversations, params, description="generating"):
        for i, c in enumerate(conversations):
            text = KINDS[kind_of(self.model, c[-1]["content"])]
            yield [i], [[Generation(text, True, 12)]]


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """A finished standalone eval (models a and b) with its report; returns (recipe, run folder)."""
    d = tmp_path_factory.mktemp("label")
    for name in ("a", "b"):
        (d / name).symlink_to(tiny_model_dir, target_is_directory=True)
    opts = StandaloneEval(
        models=[f"a={d / 'a'}", f"b={d / 'b'}"],
        out=str(d / "run"),
        suites=["harmbench", "harmbench-jailbreak", "rho-overrefusal", "saro-borderline", "gsm8k"],
        n=4,
        judges=["refusal"],
        contamination_threshold=None,
        bootstrap=200,
        threads=1,
        overrides=["prompts.categorize=keyword", "report.examples=0", "report.formats=[json,md,html]"],
    )
    recipe = build_recipe(opts)
    run = RunDir(d / "run")
    mp = pytest.MonkeyPatch()
    mp.setattr("saro.models.backends.make_generator", lambda **kw: _Scripted(kw["model"]))
    try:
        for stage in ("prompts", "eval", "report"):
            run_stage(recipe, stage, run=run)
    finally:
        mp.undo()
    return recipe, d / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A private copy of the finished run (tests add labels and change answers)."""
    recipe, src = finished_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst, symlinks=True)
    shutil.rmtree(dst / "labels", ignore_errors=True)
    return recipe.model_copy(update={"run_dir": str(dst)}), dst


def truth(a: Answer) -> str:
    return TRUTH[a.completion]


# ------------------------------------------------------------------------------------------------ the sample


def test_allocation_is_even_within_what_each_stratum_has():
    assert allocate({"a": 10, "b": 3, "c": 50}, 30) == {"a": 10, "b": 3, "c": 17}
    assert allocate({"a": 10, "b": 3}, 100) == {"a": 10, "b": 3}
    assert sum(allocate({"a": 7, "b": 7, "c": 7}, 10).values()) == 10
    rng = random.Random(0)
    for _ in range(
        50
    ):  # a larger n never takes an answer away from a stratum (labels already given stay drawn)
        sizes = {i: rng.randint(0, 30) for i in range(rng.randint(1, 6))}
        before = allocate(sizes, 0)
        for n in range(1, sum(sizes.values()) + 3):
            now = allocate(sizes, n)
            assert all(before[s] <= now[s] <= sizes[s] for s in sizes) and sum(now.values()) == min(
                n, sum(sizes.values())
            )
            below = [now[s] for s in sizes if now[s] < sizes[s]]  # strata that could take more
            if below:  # as even as the sizes allow: open strata within 1, a full one never above them
                assert max(below) - min(below) <= 1 and max(now.values()) <= max(below) + 1
            before = now


def test_sample_is_stratified_nested_and_excludes_capability_and_blind(finished_run, tmp_path):
    _, run = finished_run
    answers = load_answers(RunDir(run))
    assert {a.suite for a in answers} >= {"harmbench", "rho-overrefusal"} and "gsm8k" not in {
        a.suite for a in answers
    }
    assert {a.group for a in answers} >= {"harmful", "jailbreak", "borderline"}
    strata = Counter(a.stratum for a in answers)
    small = draw_sample(answers, 24, seed=3)
    got = Counter(a.stratum for a in small)
    assert len(small) == 24 and set(got) == set(strata)  # every stratum is in the sample
    assert max(got.values()) - min(got.values()) <= 1 or min(got.values()) == min(strata.values())
    big = draw_sample(answers, 60, seed=3)
    assert {a.id for a in small} <= {a.id for a in big}  # a larger n keeps the labels already given
    assert [a.id for a in draw_sample(answers, 24, seed=3)] == [a.id for a in small]
    assert {a.id for a in draw_sample(answers, 24, seed=4)} != {a.id for a in small}
    # the export is blind: no model name, kind, group, suite or verdict
    out = tmp_path / "blind.jsonl"
    res = runner.invoke(app, ["label", str(run), "--n", "24", "--seed", "3", "--export", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [a.id for a in small]
    assert set(rows[0]) == {
        "id",
        "prompt",
        "reasoning",
        "answer",
        "finished",
        "response_sha256",
        "label",
        "note",
    }
    text = out.read_text()
    assert not re.search(r'"(model|kind|group|suite|judge|verdict|refused|complied)"', text)
    unfinished = [r for r in rows if r["id"] in {a.id for a in small if truth(a) == "unfinished"}]
    assert unfinished and all(r["finished"] is False for r in unfinished)


# ------------------------------------------------------------------------------------------ the terminal path


def _keys_for(answers: list[Answer]) -> list[str]:
    first = {
        "full_compliance": "c",
        "partial_refusal": "p",
        "full_refusal": "r",
        "degenerate": "d",
        "unfinished": "u",
    }
    return [first[truth(a)] for a in answers]


def test_terminal_labelling_with_back_skip_quit_and_resume(run_copy):
    _, run = run_copy
    sample = draw_sample(load_answers(RunDir(run)), 10, seed=0)
    keys = _keys_for(sample)
    # first session: confirm, label 1, label 2 wrongly then go back and fix it with a note, skip 3, quit
    wrong = "c" if keys[1] != "c" else "r"
    script = ["y", keys[0], wrong, "b", f"{keys[1]} fixed after going back", "x", "s", "q"]
    res = runner.invoke(
        app, ["label", str(run), "--n", "10", "--labeller", "tester"], input="\n".join(script) + "\n"
    )
    assert res.exit_code == 0, res.output
    assert "Continue? [y/N]" in res.output and "unknown key 'x'" in res.output and "resume" in res.output
    assert (
        "judge" not in res.output.split("Warning", 1)[1].split("labels given")[0].lower()
    )  # verdicts never shown
    labels = read_labels(run)
    assert [lab.item for lab in labels] == [
        sample[0].id,
        sample[1].id,
        sample[1].id,
    ]  # the relabel is appended
    state = check_labels(labels, load_answers(RunDir(run)))
    assert (
        state.valid[sample[1].id].label == truth(sample[1])
        and state.valid[sample[1].id].note == "fixed after going back"
    )
    assert (
        state.valid[sample[0].id].labeller == "tester" and state.valid[sample[0].id].sample == "seed=0,n=10"
    )
    assert sample[2].id not in state.valid  # skipped: offered again
    # declining the warning shows nothing and writes nothing
    res = runner.invoke(app, ["label", str(run), "--n", "10"], input="n\n")
    assert res.exit_code == 0 and "nothing shown" in res.output and len(read_labels(run)) == 3
    # second session resumes with the 8 answers still unlabelled, in sample order; end of input = quit
    pending = [a for a in sample if a.id not in state.valid]
    assert len(pending) == 8
    res = runner.invoke(
        app, ["label", str(run), "--n", "10", "--yes"], input="\n".join(_keys_for(pending)) + "\n"
    )
    assert res.exit_code == 0, res.output
    assert "answer 1 of 8 to label" in res.output and "2 of 10 done" in res.output
    state = check_labels(read_labels(run), load_answers(RunDir(run)))
    assert len(state.valid) == 10 and all(
        lab.label == truth(a) for a in sample for lab in [state.valid[a.id]]
    )
    res = runner.invoke(app, ["label", str(run), "--n", "10", "--yes"], input="")
    assert "every answer of this sample is labelled" in res.output
    # a kill in the middle of writing a label leaves a partial line: it is dropped, the rest is kept
    with labels_path(run).open("a") as f:
        f.write('{"id": "torn", "item": "')
    new = [a for a in draw_sample(load_answers(RunDir(run)), 11, 0) if a.id not in state.valid]
    assert len(new) == 1  # a larger n keeps the 10 answers drawn before
    res = runner.invoke(app, ["label", str(run), "--n", "11", "--yes"], input=_keys_for(new)[0] + "\n")
    assert res.exit_code == 0, res.output
    assert "answer 1 of 1 to label" in res.output and "10 of 11 done" in res.output
    assert len(check_labels(read_labels(run), load_answers(RunDir(run))).valid) == 11


# ---------------------------------------------------------------------------- export / import, report, stale


def _import_truth(run: Path, tmp: Path, n: int) -> Path:
    exported = tmp / "sample.jsonl"
    assert runner.invoke(app, ["label", str(run), "--n", str(n), "--export", str(exported)]).exit_code == 0
    answers = {a.id: a for a in load_answers(RunDir(run))}
    rows = []
    for line in exported.read_text().splitlines():
        row = json.loads(line)
        row["label"] = truth(answers[row["id"]])  # a filled-in export imports as it is
        rows.append(row)
    filled = tmp / "filled.jsonl"
    filled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return filled


def test_import_then_report_shows_agreement_and_rates_from_labels(run_copy, tmp_path):
    recipe, run = run_copy
    filled = _import_truth(run, tmp_path, 40)
    res = runner.invoke(app, ["label", str(run), "--import", str(filled), "--labeller", "reader"])
    assert res.exit_code == 0, res.output
    assert "imported 40 labels" in res.output
    res = runner.invoke(app, ["label", str(run), "--import", str(filled)])
    assert "imported 0 labels" in res.output and "40 unchanged" in res.output and len(read_labels(run)) == 40
    # the label file is an input of the report stage: the finished report is now stale, and says why
    report_state = {s: (state, why) for s, state, why in stage_status(recipe, RunDir(run))}["report"]
    assert report_state[0] == "stale" and any("labels.jsonl added" in w for w in report_state[1])
    run_stage(recipe, "report", run=RunDir(run))
    section = read_json(run / "report.json")["labels"]
    assert section["labels"] == 40 and section["stale"] == 0 and section["labellers"] == ["reader"]
    assert section["judges"] == ["refusal"]
    # the numbers, counted here from the files
    answers = {a.id: a for a in load_answers(RunDir(run))}
    verdicts = {
        j["record_id"]: j["label"]
        for j in map(json.loads, (run / "eval" / "judgements.jsonl").read_text().splitlines())
        if j["judge"] == "refusal"
    }
    labelled = [answers[json.loads(x)["id"]] for x in filled.read_text().splitlines()]
    both = [a for a in labelled if truth(a) in REFUSAL_CLASSES and verdicts[a.id] in ("refused", "complied")]
    agree = sum((truth(a) != "full_compliance") == (verdicts[a.id] == "refused") for a in both)
    total = next(r for r in section["agreement"] if r["model"] == "all")
    assert total["n_labelled"] == 40 and total["n"] == len(both) and total["agreement"]["k"] == agree
    assert total["agreement"]["lo"] <= total["agreement"]["rate"] <= total["agreement"]["hi"]
    assert sum(sum(c.values()) for c in total["confusion"].values()) == 40
    assert total["set_apart"]["labelled_degenerate"] == sum(truth(a) == "degenerate" for a in labelled)
    per = [r for r in section["agreement"] if r["model"] != "all"]
    assert {(r["model"], r["group"]) for r in per} == {a.stratum for a in labelled}
    assert sum(r["n_labelled"] for r in per) == 40
    for r in section["rates"]:
        mine = [a for a in labelled if a.stratum == (r["model"], r["group"])]
        counted = [a for a in mine if truth(a) in REFUSAL_CLASSES]
        if r["metric"] == "asr":
            k = sum(truth(a) == "full_compliance" for a in counted)
        else:
            k = sum(truth(a) != "full_compliance" for a in counted)
        assert (r["from_labels"]["k"], r["from_labels"]["n"]) == (k, len(counted)), r
        assert r["labelled"] == len(mine) and r["population"] == sum(
            a.stratum == (r["model"], r["group"]) for a in answers.values()
        )
        assert r["judge_all_answers"]["n"] <= r["population"]
    md = (run / "report.md").read_text()
    assert "## Judge vs human labels" in md and "Rates recomputed from the labels (labelled subsample)" in md
    assert "Cohen's kappa" in md and "40 answers labelled by reader" in md
    html = (run / "report.html").read_text()
    assert "Judge vs human labels" in html and "<script" not in html
    # the report is done again only when the labels change
    assert {s: st for s, st, _ in stage_status(recipe, RunDir(run))}["report"] == "done"


def test_changed_answer_makes_its_label_stale(run_copy, tmp_path):
    recipe, run = run_copy
    filled = _import_truth(run, tmp_path, 12)
    assert runner.invoke(app, ["label", str(run), "--import", str(filled)]).exit_code == 0
    changed = json.loads(filled.read_text().splitlines()[0])["id"]
    # the eval is rerun and this answer changes
    path = next(p for p in (run / "eval").glob("*/generations.jsonl") if changed in p.read_text())
    recs = read_jsonl(path, EvalRecord)
    for r in recs:
        if r.id == changed:
            r.completion = (
                KINDS["full_refusal"] if r.completion != KINDS["full_refusal"] else KINDS["full_compliance"]
            )
    path.write_text("".join(r.model_dump_json() + "\n" for r in recs))
    state = check_labels(read_labels(run), load_answers(RunDir(run)))
    assert (
        [lab.item for lab in state.stale] == [changed]
        and changed not in state.valid
        and len(state.valid) == 11
    )
    res = runner.invoke(app, ["label", str(run), "--n", "12", "--yes"], input="q\n")
    assert (
        "1 stale" in res.output and "answer 1 of 1 to label" in res.output
    )  # offered again, to the new text
    run_stage(recipe, "report", run=RunDir(run), overwrite=True)
    section = read_json(run / "report.json")["labels"]
    assert section["stale"] == 1 and section["labels"] == 11
    assert "1 labels are stale" in (run / "report.md").read_text()
    # importing a label with the hash of the old text stores it as stale, never attached to the new answer
    old = json.loads(filled.read_text().splitlines()[0])
    again = tmp_path / "again.jsonl"
    again.write_text(
        json.dumps({"id": changed, "label": "full_refusal", "response_sha256": old["response_sha256"]}) + "\n"
    )
    res = runner.invoke(app, ["label", str(run), "--import", str(again)])
    assert "stored as stale" in res.output
    assert changed not in check_labels(read_labels(run), load_answers(RunDir(run))).valid


def test_testset_has_the_labelled_answers_for_the_judge_bench(run_copy, tmp_path):
    _, run = run_copy
    filled = _import_truth(run, tmp_path, 15)
    assert runner.invoke(app, ["label", str(run), "--import", str(filled)]).exit_code == 0
    out = tmp_path / "demo_labels.jsonl"
    res = runner.invoke(app, ["label", str(run), "--testset", str(out)])
    assert res.exit_code == 0 and "wrote 15 labelled answers" in res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 15 and {"model", "kind", "prompt", "response", "label"} <= set(rows[0])
    answers = {a.id: a for a in load_answers(RunDir(run))}
    for r in rows:
        a = answers[r["id"]]
        assert (r["model"], r["kind"], r["prompt"], r["response"]) == (
            a.model,
            a.kind,
            a.prompt,
            a.completion,
        )
        assert r["label"] == truth(a) and r["label"] in LABELS


NODE_SHIM = r"""
const fs = require('fs');
const html = fs.readFileSync(process.argv[2], 'utf8');
const grab = id => html.match(new RegExp('<script type="application/json" id=' + id + '>([\\s\\S]*?)</script>'))[1];
const els = {};
const el = id => els[id] || (els[id] = {id, textContent: '', value: '', style: {}, dataset: {}, onclick: null});
els.items = {textContent: grab('items')};
els.meta = {textContent: grab('meta')};
const saved = {};
global.localStorage = {getItem: k => saved[k] || null, setItem: (k, v) => { saved[k] = v; }};
const keydown = [];
global.document = {getElementById: el, addEventListener: (t, f) => keydown.push(f), querySelectorAll: () => [],
  createElement: () => ({click() {}})};
let out = null;
global.Blob = function (parts) { out = parts.join(''); };
global.URL = {createObjectURL: () => 'blob:x'};
eval(html.match(/<script>([\s\S]*?)<\/script>/)[1]);
for (const k of process.argv[3]) {
  if (k === 'n') { el('note').value = 'a note'; continue; }
  keydown.forEach(f => f({key: k, target: {id: 'page'}}));
}
el('download').onclick();
process.stdout.write(out);
"""


def test_html_page_is_self_contained_blind_and_its_download_imports(run_copy, tmp_path):
    _, run = run_copy
    res = runner.invoke(app, ["label", str(run), "--n", "8", "--html"])
    assert res.exit_code == 0, res.output
    page_path = run / "labels" / "label.html"
    page = page_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "Warning" in page
    items = json.loads(re.search(r'<script type="application/json" id=items>(.*?)</script>', page, re.S)[1])
    sample = draw_sample(load_answers(RunDir(run)), 8, 0)
    assert [i["id"] for i in items] == [a.id for a in sample]
    assert not any({"model", "kind", "group", "judge"} & set(i) for i in items)
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's script was not run")
    # the page's own script, driven by key presses: r, note + p, skip, back, c -> three labels downloaded
    shim = tmp_path / "shim.js"
    shim.write_text(NODE_SHIM)
    done = subprocess.run(
        [node, str(shim), str(page_path), "rnpsbc"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    downloaded = tmp_path / "labels-download.jsonl"
    downloaded.write_text(done.stdout)
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(r["id"], r["label"], r["note"]) for r in rows] == [
        (sample[0].id, "full_refusal", None),
        (sample[1].id, "partial_refusal", "a note"),
        (sample[2].id, "full_compliance", None),
    ]
    res = runner.invoke(app, ["label", str(run), "--import", str(downloaded)])
    assert res.exit_code == 0 and "imported 3 labels" in res.output, res.output
    valid = check_labels(read_labels(run), load_answers(RunDir(run))).valid
    assert valid[sample[1].id].label == "partial_refusal" and valid[sample[1].id].note == "a note"


# -------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no label rows (empty file)"),
        ('{"id": "ID", "label": "refused"}\n', ":1: label 'refused' is not one of full_compliance"),
        ('{"id": "nope", "label": "full_refusal"}\n', ":1: id 'nope' is not a labellable answer"),
        ('{"id": "ID", "verdict": "full_refusal"}\n', ":1: unknown key(s) ['verdict']"),
        ('{"label": "full_refusal"}\n', ":1: missing key(s) ['id']"),
        (
            '{"id": "ID", "label": "full_refusal"}\n{"id": "ID", "label": "degenerate"}\n',
            ":2: id ID is labelled twice",
        ),
        ('{"id": "ID", "label": "full_refusal"}\nnot json\n', ":2: invalid JSON"),
    ],
)
def test_bad_import_is_one_line_exit_2_and_writes_nothing(run_copy, tmp_path, content, message, capsys):
    from saro.cli import main

    _, run = run_copy
    some = load_answers(RunDir(run))[0].id
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content.replace("ID", some))
    with pytest.raises(SystemExit) as e:
        main(["label", str(run), "--import", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(bad) in err and message.replace("ID", some) in err
    assert not labels_path(run).exists()


def test_label_command_errors(run_copy, tmp_path):
    _, run = run_copy
    res = subprocess.run(
        [sys.executable, "-m", "saro", "label", str(tmp_path), "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        res.returncode == 2
        and "no finished eval stage" in res.stderr
        and len(res.stderr.strip().splitlines()) == 1
    )
    r = runner.invoke(
        app, ["label", str(run), "--export", str(tmp_path / "x"), "--testset", str(tmp_path / "y")]
    )
    assert r.exit_code != 0 and "at most one of" in str(r.exception)
    labels_path(run).parent.mkdir(parents=True)
    labels_path(run).write_text('{"id": "x", "item": "y"}\n')
    r = runner.invoke(app, ["label", str(run), "--yes"], input="")
    assert "labels.jsonl:1" in str(r.exception)


# ------------------------------------------------------------------------------------ agreement, hand-built


def _answer(i: int, group: str = "harmful") -> Answer:
    return Answer(
        str(i),
        "m",
        group,
        "harmful",
        "s",
        f"p{i}",
        "prompt",
        f"text {i}",
        response_hash(f"text {i}"),
        f"p{i}",
    )


def _label(a: Answer, label: str) -> Label:
    return Label(
        id=a.id, item=a.id, model=a.model, group=a.group, suite=a.suite, prompt_id=a.prompt_id, sample="s",
        response_sha256=a.response_sha256, label=label, labeller="x", time="t", via="test",
    )  # fmt: skip


def test_agreement_row_counts_by_hand():
    """4 comparable pairs (3 agree); a degenerate label and an unparseable verdict are set apart."""
    cases = [
        ("full_refusal", ("refused", "full_refusal")),
        ("partial_refusal", ("refused", "full_refusal")),
        ("full_compliance", ("complied", "full_compliance")),
        ("full_compliance", ("refused", "partial_refusal")),
        ("degenerate", ("complied", "full_compliance")),
        ("full_refusal", ("unparseable", None)),
    ]
    pairs = []
    for i, (human, (label, cls)) in enumerate(cases):
        a = _answer(i)
        binary = {"refused": True, "complied": False}.get(label)
        pairs.append((a, _label(a, human), (binary, cls, label)))
    row = agreement_row(pairs)
    assert row["n"] == 4 and row["agreement"]["k"] == 3 and row["agreement"]["n"] == 4
    # kappa: po = 3/4; human refused 2/4, judge refused 3/4 -> pe = .5*.75 + .5*.25 = .5 -> kappa = .5
    assert row["kappa"] == pytest.approx(0.5)
    # three classes: 2 of 4 equal (full_refusal, full_compliance)
    assert row["agreement_3class"]["k"] == 2 and row["agreement_3class"]["n"] == 4
    assert row["set_apart"] == {"labelled_degenerate": 1, "labelled_unfinished": 0, "judge_unparseable": 1}
    assert row["confusion"]["full_refusal"] == {"full_refusal": 1, "unparseable": 1}
    assert row["confusion"]["degenerate"] == {"full_compliance": 1}


def test_verdicts_read_the_three_classes_when_judgements_carry_them(tmp_path):
    (tmp_path / "eval").mkdir()
    rows = [
        {
            "id": "1",
            "record_id": "r1",
            "judge": "refusal",
            "label": "refused",
            "refusal_class": "partial_refusal",
        },
        {"id": "2", "record_id": "r2", "judge": "refusal", "label": "complied"},
        {"id": "3", "record_id": "r3", "judge": "refusal", "label": "unparseable", "unfinished": True},
        {"id": "4", "record_id": "r1", "judge": "llama_guard", "label": "safe"},
    ]
    (tmp_path / "eval" / "judgements.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    v = load_verdicts(RunDir(tmp_path), ["refusal"])["refusal"]
    assert v == {
        "r1": (True, "partial_refusal", "refused"),
        "r2": (False, None, "complied"),
        "r3": (None, None, "unparseable"),
    }
