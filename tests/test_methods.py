"""Prompting and inference-time baselines (``eval.models[].method``): conversation shapes, few-shot exemplars from
the policy file, the two-pass self_reflect runner, prefilled turns, recipe / CLI errors, generation hashes and the
"methods" entry of metrics.json."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Sequence

import pytest

from saro.errors import SaroError
from saro.evaluate import eval as R
from saro.evaluate import methods as M
from saro.models.generate import Conversation, Generation, Generator, SamplingParams
from saro.policy import Policy, load_policy
from saro.reasoning import parse
from saro.recipe import EvalConfig, validate_recipe
from saro.records import EvalRecord, JsonlWriter, Prompt, read_jsonl
from saro.standalone import StandaloneEval, build_recipe, parse_methods

POLICY = Policy.model_validate(
    {
        "name": "hand-built",
        "version": 3,
        "principle": "Help unless the answer gives real uplift toward serious harm.",
        "categories": [
            {
                "id": "locks",
                "name": "Lock picking",
                "description": "Opening locks that are not yours.",
                "disallowed": ["opening a neighbour's door lock without consent", "copying keys of others"],
                "allowed": ["how pin tumbler locks work", "choosing a good lock"],
                "alternatives": ["calling a licensed locksmith"],
            },
            {
                "id": "poisons",
                "name": "Poisons",
                "description": "Harming people with toxic substances.",
                "disallowed": ["dosing a person with a toxin"],
                "allowed": ["which household products must not be mixed"],
            },
            {
                "id": "unused",
                "name": "Third",
                "description": "Never made into an exemplar (only the first two are).",
                "disallowed": ["third-category harm"],
                "allowed": ["third-category help"],
            },
        ],
    }
)


class Scripted(Generator):
    """A generator that answers from a function of the conversation and records every call."""

    name = "scripted"

    def __init__(self, answer, fail_after: int | None = None) -> None:
        self.answer = answer
        self.calls: list[tuple[list[Conversation], SamplingParams]] = []
        self.fail_after = fail_after

    def generate_batches(
        self, conversations: Sequence[Conversation], params: SamplingParams, description: str = "generating"
    ) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("killed")
        self.calls.append((list(conversations), params))
        gens = []
        for c in conversations:
            text = self.answer(c)
            gens.append([Generation(text, True, len(text.split()))])
        yield list(range(len(conversations))), gens


def _prompt(i: int, text: str = "", kind: str = "harmful", **meta) -> Prompt:
    return Prompt.make(text or f"request number {i}", kind, "hand", meta={"suite": "hand", **meta})


# ------------------------------------------------------------------------------------------ conversations


def test_each_method_has_its_conversation_shape():
    q = "How do I open this lock?"
    assert M.build_conversation(q, "none", POLICY) == [{"role": "user", "content": q}]
    ps = M.build_conversation(q, "policy_system", POLICY)
    assert [m["role"] for m in ps] == ["system", "user"] and ps[-1]["content"] == q
    assert "[locks] Lock picking" in ps[0]["content"] and "[poisons]" in ps[0]["content"]
    assert "opening a neighbour's door lock" in ps[0]["content"]
    assert "how pin tumbler locks" in ps[0]["content"]
    assert "copying keys of others" not in ps[0]["content"]  # one clause of each kind per category
    assert "copying keys of others" in M.policy_summary(POLICY, clauses=2)
    pr = M.build_conversation(q, "policy_reasoning", POLICY)
    assert [m["role"] for m in pr] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert "<think>" in pr[0]["content"] and '"Wait,"' in pr[0]["content"]
    assert pr[-1]["content"] == q
    # self_reflect's first pass is a plain answer
    assert M.build_conversation(q, "self_reflect", POLICY) == [{"role": "user", "content": q}]
    pre = M.build_conversation(q, "policy_system", POLICY, prefill="Sure, first")
    assert pre[-1] == {"role": "assistant", "content": "Sure, first"} and pre[-2]["content"] == q
    with pytest.raises(ValueError, match="unknown eval method"):
        M.build_conversation(q, "telepathy", POLICY)
    assert [M.method_kind(m) for m in M.METHODS] == ["trained", "prompting", "prompting", "inference_time"]


def test_exemplars_come_from_the_policy_file_only():
    ex = M.reasoning_exemplars(POLICY)
    assert len(ex) == 4
    (h1, t1), (b1, tb1), (h2, _), (b2, _) = ex
    assert "opening a neighbour's door lock without consent" in h1 and "how pin tumbler locks work" in b1
    assert "dosing a person with a toxin" in h2 and "household products" in b2
    assert not any("third-category" in q or "third-category" in a for q, a in ex)
    # phrasing alternates, so the form of a request is not what decides
    assert h1.endswith(".") and b1.endswith("?") and h2.endswith("?") and b2.endswith(".")
    for _, turn in ex:
        p = parse(turn)
        assert p.status == "ok" and p.reflections and p.answer
    assert "[locks]" in (parse(t1).reasoning or "") and "calling a licensed locksmith" in parse(t1).answer
    assert "[locks]" in (parse(tb1).reasoning or "") and "can't" not in parse(tb1).answer
    # the prefix is the same whatever the eval prompt is
    a = M.build_conversation("first eval prompt", "policy_reasoning", POLICY)[:-1]
    b = M.build_conversation("another one entirely", "policy_reasoning", POLICY)[:-1]
    assert a == b


def test_policy_reasoning_fits_the_demo_context(smollm_tokenizer):
    """The longest method prompt, with the packaged policy, leaves room for a long jailbreak-wrapped request and
    an answer in the demo model's 2048-token context."""
    conv = M.build_conversation("x", "policy_reasoning", load_policy())

    def n_tokens(c: Conversation) -> int:
        text = smollm_tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        return len(smollm_tokenizer(text, add_special_tokens=False)["input_ids"])

    n = n_tokens(conv)
    assert 600 < n <= 2048 - 512 - 256, n  # room for a 512-token (wrapped) request and a 256-token answer
    assert n_tokens(M.build_conversation("x", "policy_system", load_policy())) < n


# ------------------------------------------------------------------------------------------- self_reflect


def _reflect_answer(conv: Conversation) -> str:
    if len(conv) == 1 or conv[-1]["role"] == "assistant":  # first pass (maybe prefilled)
        return "draft answer " + conv[0]["content"].split()[-1]
    assert (
        conv[0]["role"] == "system" and "[locks]" in conv[0]["content"]
    )  # the policy first: a shared prefix
    assert conv[2]["role"] == "assistant" and conv[3]["content"].startswith("Review your answer")
    return "revised: " + conv[2]["content"]


def test_self_reflect_runs_two_passes_and_sums_tokens():
    gen = Scripted(_reflect_answer)
    texts = [f"request {i}" for i in range(5)]
    params = SamplingParams(max_new_tokens=16, seed=3)
    out = list(M.self_reflect_batches(gen, texts, params, POLICY, reflect_max_new_tokens=40, batch_size=2))
    assert [idx for idx, _ in out] == [[0, 1], [2, 3], [4]]  # chunk by chunk
    assert len(gen.calls) == 6  # drafts, then reviews, per chunk
    (first, p1), (second, p2) = gen.calls[:2]
    assert [c[0]["content"] for c in first] == ["request 0", "request 1"] and p1.max_new_tokens == 16
    assert p2.max_new_tokens == 40 and p2.seed == 3
    assert [m["role"] for m in second[0]] == ["system", "user", "assistant", "user"]
    assert second[0][2]["content"] == "draft answer 0"
    assert "[locks]" in second[0][0]["content"]  # the policy summary comes first, the same for every review
    assert second[0][0] == second[1][0]
    r = out[0][1][0]
    assert r.final.text == "revised: draft answer 0"
    assert (r.first.tokens, r.final.tokens, r.tokens) == (3, 4, 7)
    # default budget: the first pass's
    gen2 = Scripted(_reflect_answer)
    list(M.self_reflect_batches(gen2, texts[:1], params, POLICY))
    assert gen2.calls[1][1].max_new_tokens == 16


def test_review_sees_the_drafts_answer_not_its_reasoning():
    assert M.draft_for_review("<think>\nsteps\n</think>\nThe answer.") == "The answer."
    assert M.draft_for_review("<think>\ncut in the middle") == "<think>\ncut in the middle"
    assert M.draft_for_review("plain") == "plain"


def _tok():
    from saro.models.loading import load_tokenizer

    return load_tokenizer("embedded")


def test_self_reflect_records_and_resume(tmp_path):
    tok = _tok()
    m = EvalConfig(models=[{"name": "sr", "source": "x", "method": "self_reflect"}]).models[0]
    prompts = [_prompt(i) for i in range(5)]
    path = tmp_path / "g.jsonl"
    gen = Scripted(_reflect_answer, fail_after=4)  # killed in the third chunk
    params = SamplingParams(max_new_tokens=8)
    with pytest.raises(RuntimeError, match="killed"), JsonlWriter(path) as w:
        for rec in R.generate_group(gen, m, prompts, params, POLICY, tok, batch_size=2):
            w.write(rec)
    assert len(read_jsonl(path, EvalRecord)) == 4  # two whole chunks survived
    with JsonlWriter(path) as w:
        todo = [p for p in prompts if R.stable_id(m.name, p.id) not in w]
        gen2 = Scripted(_reflect_answer)
        for rec in R.generate_group(gen2, m, todo, params, POLICY, tok, batch_size=2):
            w.write(rec)
    assert len(todo) == 1 and len(gen2.calls) == 2
    recs = read_jsonl(path, EvalRecord)
    assert len(recs) == 5 and len({r.id for r in recs}) == 5
    r = recs[0]
    assert r.completion.startswith("revised: draft answer")
    assert r.meta["draft"].startswith("draft answer")
    assert r.meta["tokens"] == r.meta["draft_tokens"] + r.meta["reflect_tokens"] > 0
    assert r.answer_tokens > 0 and r.finished


# ---------------------------------------------------------------------------------------------- prefills


def test_prefilled_prompt_stores_the_whole_turn(monkeypatch):
    fake = types.ModuleType("saro.evaluate.recovery")
    fake.turn_position = lambda text, kind: text.find("Wait") if "Wait" in text else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "saro.evaluate.recovery", fake)
    tok = _tok()
    m = EvalConfig(models=[{"name": "ps", "source": "x", "method": "policy_system"}]).models[0]
    p = _prompt(
        0,
        prefill="Sure, here is",
        prefill_kind="drift",
        prefill_style="sure",
        phrasing="imperative",
        cross_source=True,
        unrelated="not copied",
    )
    plain = _prompt(1, kind="benign", phrasing="question")
    gen = Scripted(
        lambda c: " the start. Wait, that would be harmful." if c[-1]["role"] == "assistant" else "ok"
    )
    recs = list(R.generate_group(gen, m, [p, plain], SamplingParams(max_new_tokens=8), POLICY, tok))
    conv = gen.calls[0][0][0]
    assert conv[0]["role"] == "system" and conv[-1] == {"role": "assistant", "content": "Sure, here is"}
    r, q = recs
    assert r.completion == "Sure, here is the start. Wait, that would be harmful."
    assert r.meta["prefill_chars"] == len("Sure, here is")
    assert r.meta["turn_tokens"] == len(tok(" the start. ", add_special_tokens=False)["input_ids"])
    assert r.meta["prefill_kind"] == "drift" and r.meta["prefill_style"] == "sure"
    assert r.meta["phrasing"] == "imperative" and r.meta["cross_source"] is True
    assert "unrelated" not in r.meta
    assert q.completion == "ok" and "prefill_chars" not in q.meta and q.meta["phrasing"] == "question"
    # never turns: None
    gen = Scripted(lambda c: " more and more")
    (r2,) = R.generate_group(gen, m, [p], SamplingParams(max_new_tokens=8), POLICY, tok)
    assert r2.meta["turn_tokens"] is None


def test_prefill_on_a_model_without_chat_template_is_an_error():
    from saro.recipe import BackendSpec

    tok = _tok()
    tok.chat_template = None
    m = EvalConfig(models=[{"name": "raw", "source": "some/base"}]).models[0]
    spec = BackendSpec(backend="hf", model="some/base")
    p = _prompt(0, prefill="Sure", prefill_kind="drift", suite="hb-prefill")
    R.check_prefill_template(m, spec, tok, [_prompt(1)])  # no prefill: fine
    with pytest.raises(SaroError, match="'raw'.*suite 'hb-prefill'.*no chat template"):
        R.check_prefill_template(m, spec, tok, [_prompt(1), p])
    R.check_prefill_template(m, BackendSpec(backend="openai", model="srv"), tok, [p])  # the server renders


# ----------------------------------------------------------------------------------- recipe and command line


def _recipe(models: list[dict], **ev) -> dict:
    return {"name": "r", "eval": {"models": models, **ev}}


def test_bad_method_and_budget_are_one_line_errors():
    with pytest.raises(SaroError, match=r"eval\.models\.1\.method.*'policy_system'"):
        validate_recipe(
            _recipe([{"name": "a", "source": "x"}, {"name": "b", "source": "x", "method": "magic"}])
        )
    with pytest.raises(SaroError, match=r"eval\.models\[0\]\.reflect_max_new_tokens = 64 is smaller.*128"):
        validate_recipe(
            _recipe(
                [{"name": "a", "source": "x", "method": "self_reflect", "reflect_max_new_tokens": 64}],
                max_new_tokens=128,
            )
        )
    with pytest.raises(SaroError, match=r"reflect_max_new_tokens is only read by method self_reflect"):
        validate_recipe(_recipe([{"name": "a", "source": "x", "reflect_max_new_tokens": 300}]))
    # the base model's first pass is base_max_new_tokens when set
    ok = validate_recipe(
        _recipe(
            [{"name": "b", "source": "@base", "method": "self_reflect", "reflect_max_new_tokens": 96}],
            max_new_tokens=224,
            base_max_new_tokens=96,
        )
    )
    assert ok.eval.models[0].reflect_max_new_tokens == 96
    with pytest.raises(SaroError) as err:
        validate_recipe(_recipe([{"name": "a", "source": "x", "method": "magic"}]))
    assert "\n" not in str(err.value)


def test_standalone_method_option():
    r = build_recipe(
        StandaloneEval(
            models=["base=embedded", "base+reasoning=embedded", "base+reflect=embedded"],
            methods=["base+reasoning=policy_reasoning", "base+reflect=self_reflect"],
            reflect_max_new_tokens=300,
            out="/tmp/x",
        )
    )
    assert [m.method for m in r.eval.models] == ["none", "policy_reasoning", "self_reflect"]
    assert [m.reflect_max_new_tokens for m in r.eval.models] == [None, None, 300]
    with pytest.raises(SaroError, match="no --model is named 'other'"):
        parse_methods(["other=self_reflect"], ["base"])
    with pytest.raises(SaroError, match="unknown method 'magic'"):
        parse_methods(["base=magic"], ["base"])
    with pytest.raises(SaroError, match="NAME=METHOD"):
        parse_methods(["policy_system"], ["base"])
    with pytest.raises(SaroError, match="smaller than the first pass"):
        build_recipe(
            StandaloneEval(
                models=["a=x"], methods=["a=self_reflect"], reflect_max_new_tokens=10, out="/tmp/x"
            )
        )
    with pytest.raises(SaroError, match="no model has --method NAME=self_reflect"):
        build_recipe(StandaloneEval(models=["a=x"], reflect_max_new_tokens=999, out="/tmp/x"))


def test_cli_unknown_method_exits_2(capsys, tmp_path):
    from saro.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "-m", "a=embedded", "--method", "a=magic", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    text = (cap.out + cap.err).strip()
    assert exc.value.code == 2 and "unknown method 'magic'" in text and "Traceback" not in text
    assert len(text.splitlines()) == 1


# --------------------------------------------------------------------------------- hashes and metrics.json


def test_generation_hash_follows_the_method(tmp_path):
    from saro.stage import RunDir, StageContext

    def h(method: str, **kw) -> str:
        r = build_recipe(StandaloneEval(models=["a=/models/a"], methods=[f"a={method}"], out=str(tmp_path)))
        assert r.eval is not None
        r.eval.models[0] = r.eval.models[0].model_copy(update=kw)
        ctx = StageContext(recipe=r, run=RunDir(tmp_path / "x"), stage="eval")
        return R.unit_hashes(ctx)["a"]

    hashes = {m: h(m) for m in M.METHODS}
    assert len(set(hashes.values())) == 4
    assert h("none") == hashes["none"]  # stable
    assert h("self_reflect", reflect_max_new_tokens=999) != hashes["self_reflect"]
    # a method's hash covers the policy texts it shows the model
    assert M.method_fingerprint("policy_reasoning", POLICY) != M.method_fingerprint(
        "policy_reasoning", load_policy()
    )
    assert M.method_fingerprint("none", POLICY) is None


def test_metrics_json_names_each_models_method():
    cfg = EvalConfig(
        models=[
            {"name": "saro", "source": "@train_dpo"},
            {"name": "base+policy", "source": "@base", "method": "policy_system"},
            {"name": "base+reasoning", "source": "@base", "method": "policy_reasoning"},
            {"name": "base+reflect", "source": "@base", "method": "self_reflect"},
        ]
    )
    assert R.methods_info(cfg) == {
        "saro": {"method": "trained", "name": "none"},
        "base+policy": {"method": "prompting", "name": "policy_system"},
        "base+reasoning": {"method": "prompting", "name": "policy_reasoning"},
        "base+reflect": {"method": "inference_time", "name": "self_reflect"},
    }


def test_eval_stage_with_methods_end_to_end(tiny_model_dir, tmp_path):
    """Two methods on the tiny model through the real eval stage: metrics.json carries "methods" and the
    self_reflect records count both passes."""
    from saro.records import read_json
    from saro.standalone import run_standalone

    opts = StandaloneEval(
        models=[f"plain={tiny_model_dir}", f"reason={tiny_model_dir}", f"reflect={tiny_model_dir}"],
        methods=["reason=policy_reasoning", "reflect=self_reflect"],
        reflect_max_new_tokens=6,
        out=str(tmp_path / "run"),
        suites=["harmbench"],
        n=2,
        max_new_tokens=4,
        bootstrap=20,
        threads=1,
        contamination_threshold=None,
        overrides=["prompts.categorize=keyword", "report.formats=[json]", "eval.refusal_accuracy=false"],
    )
    run_standalone(opts)
    metrics = read_json(tmp_path / "run" / "eval" / "metrics.json")
    assert metrics["methods"] == {
        "plain": {"method": "none", "name": "none"},  # a model folder evaluated as it is, not trained by saro
        "reason": {"method": "prompting", "name": "policy_reasoning"},
        "reflect": {"method": "inference_time", "name": "self_reflect"},
    }
    recs = read_jsonl(tmp_path / "run" / "eval" / "reflect" / "generations.jsonl", EvalRecord)
    assert len(recs) == 2
    for r in recs:
        assert 0 < r.meta["draft_tokens"] <= 4 and 0 < r.meta["reflect_tokens"] <= 6
        assert r.meta["tokens"] == r.meta["draft_tokens"] + r.meta["reflect_tokens"]


def test_prefill_through_the_hf_backend(tiny_model_dir, monkeypatch):
    """The HF backend continues a trailing assistant message when the renderer does (renderer patched here the
    way saro.models.generate.render_prompts continues a prefill): the record holds prefill + continuation."""
    import saro.models.generate as G
    from saro.models.generate import HFGenerator
    from saro.models.loading import load_tokenizer

    def continuing(tokenizer, conversations):
        return [
            tokenizer.apply_chat_template(
                list(c),
                tokenize=False,
                add_generation_prompt=c[-1]["role"] != "assistant",
                continue_final_message=c[-1]["role"] == "assistant",
            )
            for c in conversations
        ]

    monkeypatch.setattr(G, "render_prompts", continuing)
    gen = HFGenerator.from_source(str(tiny_model_dir), batch_size=2)
    tok = load_tokenizer(str(tiny_model_dir))
    m = EvalConfig(models=[{"name": "t", "source": "x", "method": "policy_reasoning"}]).models[0]
    p = _prompt(0, prefill="Sure, here", prefill_kind="drift")
    try:
        (r,) = R.generate_group(gen, m, [p], SamplingParams(max_new_tokens=3), POLICY, tok)
    finally:
        gen.close()
    assert r.completion.startswith("Sure, here") and len(r.completion) > len("Sure, here")
    assert r.meta["prefill_chars"] == len("Sure, here") and "turn_tokens" in r.meta


def test_template_stripped_view_and_suite_subset(smollm_tokenizer):
    """``template: stripped`` renders the message texts only (no chat markers), on the model's ``suites`` only;
    both change the generation hash; a non-hf backend or an unknown suite is a one-line error."""
    from saro.errors import SaroError
    from saro.evaluate.eval import STRIPPED_TEMPLATE, _strip_template, prompts_for_model
    from saro.models.generate import render_prompts
    from saro.recipe import BackendSpec, EvalModel
    from saro.records import Prompt

    class _Gen:
        def __init__(self, tok):
            self.tok = tok

    import copy

    tok = copy.deepcopy(smollm_tokenizer)  # the fixture is shared by the session
    gen = _Gen(tok)
    m = EvalModel(name="rw-stripped", source="@train_sft", template="stripped", suites=["a"])
    _strip_template(gen, m, BackendSpec(backend="hf"), tok)
    assert tok.chat_template == STRIPPED_TEMPLATE
    text = render_prompts(tok, [[{"role": "user", "content": "How do I kill a stuck process?"}]])[0]
    assert text == "How do I kill a stuck process?\n\n"
    with pytest.raises(SaroError, match="needs the hf or ct2 backend"):
        _strip_template(gen, m, BackendSpec(backend="openai", model="x"), tok)
    ps = [
        Prompt.make("x", "benign", "s", meta={"suite": "a"}),
        Prompt.make("y", "benign", "s", meta={"suite": "b"}),
    ]
    assert [p.text for p in prompts_for_model(m, ps)] == ["x"]
    with pytest.raises(SaroError, match="'rw-stripped'.suites: c not among"):
        prompts_for_model(m.model_copy(update={"suites": ["c"]}), ps)
