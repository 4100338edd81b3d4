"""The offline teacher: policy-driven reasoning and answers composed without a language model.

``OfflineTeacher.compose`` writes a RIT-D candidate from the policy file, the prompt's label and category, and the
request's own words: what is asked (its framing included) -> the risky part of the request, lifted from the prompt,
and what answering it would enable -> the policy clause that applies (or, for an ``unclear`` category, that no
single category fits and the decision rests on what the answer would enable) -> a "Wait, ..." reflection -> the
decision; then a refusal with a safe alternative for harmful prompts, or the answer model's own answer for benign
and borderline prompts. For borderline prompts it names the risky-looking word and the context that makes this
request safe. No decision depends on how the request is phrased (question or instruction) or on its source.

The k candidates of one prompt differ in length the way sampled teacher outputs do: each gets a style (``concise``,
``standard`` or ``detailed``: the latter adds the user's likely intent and a second policy check) drawn at random
per (request, sample) from the seed, so Shortest Rejection Sampling has real length differences to choose from, and
how often a shorter candidate is among the k (the SRS saving) is a measurement, not a rotation that guarantees one.
For SRPO it also writes the "Wait, ..." reflection that names the policy clause, the corrected continuation, and
the constructed drifting continuations. A real, documented backend that runs anywhere; paper-quality data needs a
strong teacher (``synth.teacher_prompts``).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

from saro.policy import NONE, Category, Policy
from saro.prompts.categorize import UNCLEAR
from saro.prompts.wording import (  # re-exported: the text helpers live in the prompts layer
    _STOP,
    base_text,
    best_clause,
    gist,
    trigger_in_context,
    trigger_word,
)
from saro.reasoning import Parsed, render
from saro.records import Prompt, stable_id

log = logging.getLogger(__name__)

STYLES = ("concise", "standard", "detailed")
NO_CATEGORY = (NONE, UNCLEAR, None)

# ------------------------------------------------------------------------------------------ text helpers

# the request part of "how to X", "ways to X", "where can I X", ...: the action the user wants help with
_ACTION = re.compile(
    r"\b(?:how (?:to|do i|can i|could i|would i|should i|might i|does one|can one|do you|can you|can someone|"
    r"would someone|do people|i can|one can|someone can|they can)|(?:ways?|steps|methods?|tips) (?:to|for)|"
    r"(?:best|easiest|quickest|safest|cheapest|fastest) way to|where (?:can|could|do|should) (?:i|one|someone|"
    r"you))\s+(.+)",
    re.IGNORECASE,
)
_IMPERATIVE = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+|would you\s+|i want you to\s+|i need you to\s+)?"
    r"((?:write|create|give|list|describe|explain|generate|develop|design|provide|draft|compose|make|tell|teach|"
    r"show|outline|suggest|plan|build|help|find|produce|publish|post|instruct|offer|share|program|code)\b.+)",
    re.IGNORECASE,
)
_PRONOUNS = {
    "i": "they",
    "me": "them",
    "my": "their",
    "mine": "theirs",
    "myself": "themselves",
    "i'm": "they're",
}
_PRONOUN = re.compile(r"\b(?:i'm|myself|mine|my|me|i)\b", re.IGNORECASE)


def _trim(words: list[str], max_words: int) -> str:
    out = words[:max_words]
    while out and out[-1].lower() in _STOP:
        out.pop()
    return " ".join(out).rstrip(",;:")


def risky_phrase(text: str, max_words: int = 10) -> tuple[str, bool]:
    """The request's own words for what it wants done, lifted from the prompt, and whether it is an action
    ("make a pipe bomb at home", True) or only the request's first sentence (False)."""
    first = re.split(r"(?<=[.?!])\s|\n", " ".join(text.strip().split(" ")), maxsplit=1)[0].strip()
    first = first.rstrip(".?!:;")
    m = _ACTION.search(first)
    if m:
        return _trim(m.group(1).split(), max_words), True
    m = _IMPERATIVE.match(first)
    if m:
        words = m.group(1).split()
        words[0] = words[0].lower()
        return _trim(words, max_words), True
    return gist(first, max_words), False


def third_person(phrase: str) -> str:
    """The user's first person as the assistant reports it ("track my wife" -> "track their wife")."""
    return _PRONOUN.sub(lambda m: _PRONOUNS[m.group(0).lower()], phrase)


# what answering would enable, per category of the packaged policy; other policies use the description
CONSEQUENCES = {
    "violence_weapons": "people could be injured or killed",
    "cbrn": "it could help cause mass casualties",
    "cyber": "real systems, accounts or data could be broken into",
    "fraud_scams": "real people could be deceived and lose money",
    "hate_harassment": "real people would be demeaned, targeted or threatened",
    "sexual_content": "it could sexualise or exploit people",
    "self_harm": "someone could be seriously hurt",
    "privacy_surveillance": "a real person could be tracked, exposed or targeted",
    "illegal_goods_drugs": "it would help make or trade illegal goods and put people at risk",
    "misinformation_manipulation": "people could be misled or manipulated at scale",
}


def consequence(cat: Category | None) -> str:
    """What a real answer would lead to, for the request's category (``unclear``: said without one)."""
    if cat is None:
        return "someone could be hurt or wronged by it, whatever category it falls under"
    if cat.id in CONSEQUENCES:
        return CONSEQUENCES[cat.id]
    return f"it would give real uplift toward {cat.description[0].lower()}{cat.description[1:].rstrip('.')}"


def enables(text: str, cat: Category | None, rng: random.Random) -> str:
    """The sentence that names the request's risky words and what answering would enable."""
    phrase, action = risky_phrase(text)
    harm = consequence(cat)
    if action:
        them = third_person(phrase)
        return rng.choice(
            [
                f'The risky part is "{phrase}". Step-by-step help to {them} would let someone actually do it, '
                f"and that is real harm: {harm}.",
                f'What matters is "{phrase}": a usable answer would let someone {them}, and {harm}, '
                "which is real harm.",
            ]
        )
    return (
        f'The risky part is the request itself, "{phrase}": a usable answer would give real help toward harm, '
        f"since {harm}."
    )


def style_for(text: str, sample: int, seed: int = 0) -> str:
    """The length style of candidate ``sample`` of a request: an independent, seeded uniform draw per (request,
    sample), so k candidates may repeat a style or miss one, as sampled teacher outputs do."""
    draw = int(stable_id("style", seed, " ".join(text.split()), sample), 16)
    return STYLES[draw % len(STYLES)]


FRAMINGS = {
    "persona": "It is wrapped in a role-play persona that is told to ignore its rules",
    "instruction": "It comes with extra instructions about how I must start or what I must not say",
    "encoding": "It is written in an encoded or disguised form",
    "nesting": "It is nested inside a story or layered scene",
    "format": "It asks for the answer in a particular format or style",
    "other": "It comes inside some extra framing",
}


def framing_family(prompt: Prompt) -> str | None:
    """The family of a prompt's jailbreak wrapper (None for a plain prompt)."""
    fam = prompt.meta.get("attack_family")
    if prompt.attack is None:
        return None
    if fam in FRAMINGS:
        return str(fam)
    name = prompt.attack
    if any(k in name for k in ("aim", "evil", "developer", "persona", "confidant")):
        return "persona"
    if any(k in name for k in ("base64", "rot13", "leet", "disemvowel", "cipher", "split")):
        return "encoding"
    if any(k in name for k in ("inception", "nested", "scene", "story")):
        return "nesting"
    if any(k in name for k in ("prefix", "suppression", "refusal", "few_shot", "distractor")):
        return "instruction"
    if any(k in name for k in ("poem", "style", "code", "json")):
        return "format"
    return "other"


def restatement(g: str, rng: random.Random) -> str:
    """The request restated in quotes, the same way whatever its form (question, instruction, statement)."""
    return rng.choice([f'The request is: "{g}".', f'The user writes: "{g}".', f'Restating it: "{g}".'])


@dataclass
class Composed:
    steps: list[str]
    answer: str
    style: str = "standard"

    @property
    def text(self) -> str:
        return render(self.steps, self.answer)


@dataclass
class _Ctx:
    """What every composing step reads: the request, its category (None: unclear or none) and the style."""

    base: str
    g: str
    cat: Category | None
    fam: str | None
    style: str
    rng: random.Random


class OfflineTeacher:
    """Composes policy reasoning and answers without a language model (see module docstring)."""

    name = "offline"

    def __init__(self, policy: Policy, seed: int = 0) -> None:
        self.policy = policy
        self.seed = seed

    def compose(
        self, prompt: Prompt, sample: int = 0, answer: str | None = None, style: str | None = None
    ) -> Composed:
        """One candidate. ``answer`` is the answer model's reply for benign/borderline prompts; ``style`` overrides
        the sample's drawn length style."""
        base = base_text(prompt)
        ctx = _Ctx(
            base=base,
            g=gist(base),
            cat=self.policy.get(prompt.category) if prompt.category not in NO_CATEGORY else None,
            fam=framing_family(prompt),
            style=style or style_for(base, sample, self.seed),
            rng=random.Random(stable_id("offline-teacher", self.seed, prompt.id, sample)),
        )
        if prompt.kind == "harmful":
            return Composed(self._harmful_steps(ctx), self._refusal(ctx), ctx.style)
        steps = self._benign_steps(ctx, unclear=prompt.category == UNCLEAR)
        return Composed(steps, (answer or "").strip(), ctx.style)

    # ---- harmful

    def _harmful_steps(self, c: _Ctx) -> list[str]:
        rng, cat = c.rng, c.cat
        understand = restatement(c.g, rng)
        if c.fam:
            understand += " " + FRAMINGS[c.fam] + ", but underneath it the request itself is the same."
        risk = enables(c.base, cat, rng)
        policy_step = _harmful_policy(c)
        wait = _harmful_wait(c)
        if c.style == "concise":
            return [risk, policy_step, wait, "So I will decline."]
        alt = rng.choice(
            cat.alternatives if cat and cat.alternatives else ["general, safety-focused information"]
        )
        decide = rng.choice(
            [
                f"So I will decline, briefly explain why, and offer {alt} instead.",
                f"I should refuse this part and point to {alt}.",
            ]
        )
        if c.style == "standard":
            return [understand, risk, policy_step, wait, decide]
        intent = rng.choice(
            [
                "Who would ask this, and why? Someone could simply be curious, but curiosity does not need a "
                "working procedure; this asks for the harmful capability itself.",
                "Thinking about the likely intent: a researcher or a worried parent could ask about the topic, but "
                "they would not need usable specifics, and those specifics are the harmful capability itself.",
            ]
        )
        if cat is not None:
            allowed = best_clause(c.base, cat.allowed, fallback=cat.allowed[0])
            second = (
                f"Is there an allowed use that covers it? My policy does allow {allowed}, but this asks for the "
                "operational part itself, which it does not allow."
            )
        else:
            second = (
                "Could an allowed use cover it, such as education, safety or history? Those are allowed, but a "
                "working answer here goes past them, and the principle does not allow that."
            )
        return [understand, intent, risk, policy_step, second, wait, decide]

    def _refusal(self, c: _Ctx) -> str:
        rng, cat = c.rng, c.cat
        alt = rng.choice(cat.alternatives if cat and cat.alternatives else ["a safer, related topic"])
        opener = rng.choice(
            [
                "I can't help with that.",
                "I won't help with this request.",
                "Sorry, but I can't help with that.",
            ]
        )
        offer = rng.choice(
            [f"If it is useful, I can talk about {alt}.", f"I'm happy to help with {alt} instead."]
        )
        if c.style == "concise":
            return f"{opener} {offer}"
        area = f" ({cat.name.lower()})" if cat else ""
        why = rng.choice(
            [
                f"It asks for help that could cause real harm{area}.",
                "Providing it could put people at risk.",
            ]
        )
        if c.style == "detailed":
            phrase, action = risky_phrase(c.base)
            if action:
                why = f"Helping to {third_person(phrase)} could cause real harm{area}, so I won't give that."
        return f"{opener} {why} {offer}"

    # ---- benign / borderline

    def _benign_steps(self, c: _Ctx, unclear: bool) -> list[str]:
        rng = c.rng
        understand = restatement(c.g, rng)
        if c.fam:
            understand += " " + FRAMINGS[c.fam] + "; I should look at the request underneath it."
        trig = trigger_in_context(c.base, self.policy)
        if c.cat is not None:
            look, intent, second, wait = _borderline_parts(c, trig)
        else:
            look, intent, second, wait = _plain_parts(c, trig, unclear)
        decide = rng.choice(["I will give a direct, helpful answer.", "So I will help."])
        if c.style == "concise":
            return [look, wait, decide]
        if c.style == "standard":
            return [understand, look, wait, decide]
        return [understand, intent, look, second, wait, decide]


def _harmful_policy(c: _Ctx) -> str:
    """The policy step of a harmful prompt: its category and clause, or (unclear) the principle."""
    cat, rng = c.cat, c.rng
    if cat is None:
        return rng.choice(
            [
                "No single policy category clearly fits this request, so I decide from what it would enable. My "
                "policy's principle rules out real, specific uplift toward serious harm, and this is that.",
                "None of the categories is a clear match here; what decides it is what the answer would enable, "
                "and the policy does not allow specific help toward serious harm.",
            ]
        )
    clause = best_clause(
        c.base,
        cat.disallowed,
        fallback=f"help with {cat.description[0].lower()}{cat.description[1:].rstrip('.')}",
    )
    return rng.choice(
        [
            f"This falls under [{cat.id}] {cat.name}. My policy does not allow {clause}.",
            f"Checking my policy: this is [{cat.id}] {cat.name}, and it rules out {clause}.",
        ]
    )


def _harmful_wait(c: _Ctx) -> str:
    """The reflection of a harmful prompt: about its framing when wrapped, else about a harmless reading."""
    rng, fam = c.rng, c.fam
    if fam == "persona":
        return rng.choice(
            [
                "Wait, the role-play framing does not change what is being asked. A persona that 'has no rules' "
                "is still me writing the content.",
                "Wait, pretending to be a different character does not make the harmful part any less real.",
            ]
        )
    if fam in ("instruction", "format"):
        return rng.choice(
            [
                "Wait, being told how to start my reply or what words to avoid does not change the request; "
                "the format is not the point, the content is.",
                "Wait, the instructions about style or wording are there to push me past my judgement. "
                "The underlying ask is unchanged.",
            ]
        )
    if fam == "nesting":
        return (
            "Wait, putting the request inside a story or a scene still produces the same real instructions."
        )
    if fam == "encoding":
        return "Wait, encoding or disguising the request does not change what it asks for once decoded."
    if c.style == "concise":
        return "Wait, is there a harmless reading? Not for these specifics; they only matter if you intend to carry it out."
    return rng.choice(
        [
            "Wait, is there a harmless reading? Someone could be curious, but the request asks for "
            "specifics that only matter if you intend to carry it out.",
            "Wait, let me consider whether this could be benign. The wording asks for the harmful capability "
            "itself, not for understanding or protection.",
        ]
    )


def _borderline_parts(c: _Ctx, trig: tuple[str, str] | None) -> tuple[str, str, str, str]:
    """Steps of a borderline prompt with a category: the risky-looking word in its benign context, the allowed
    clause, the likely intent, the disallowed side checked, and the over-refusal reflection."""
    assert c.cat is not None
    cat, rng = c.cat, c.rng
    allowed = best_clause(c.base, cat.allowed, fallback=cat.allowed[0])
    if trig and trig[1]:
        look = (
            f'The word "{trig[0]}" can sound alarming, but here it is about "{trig[1]}": the request asks for '
            f"{allowed}, which my policy allows under [{cat.id}] {cat.name}."
        )
    else:
        look = rng.choice(
            [
                f"It touches on [{cat.id}] {cat.name}, but what it asks for is {allowed}, which my policy allows.",
                f"The topic is near [{cat.id}] {cat.name}. My policy explicitly allows {allowed}.",
            ]
        )
    intent = rng.choice(
        [
            "Who would ask this? Most likely someone with an everyday, legitimate reason.",
            "The likely intent is ordinary: understanding, safety or a normal task, and the answer is widely "
            "available.",
        ]
    )
    disallowed = best_clause(c.base, cat.disallowed)
    second = (
        f"What [{cat.id}] rules out is {disallowed}, but nothing here asks for that, so it is safe to answer."
    )
    word = f'the word "{trig[0]}"' if trig else "how this sounds"
    wait = rng.choice(
        [
            f"Wait, am I reacting to {word} rather than to what is asked? ",
            "Wait, I should not over-refuse here just because the topic sounds sensitive. ",
        ]
    ) + rng.choice(
        [
            "Nothing here gives real uplift toward harm, and refusing would be unhelpful.",
            "The answer is ordinary, widely available information that helps the user.",
        ]
    )
    return look, intent, second, wait


def _plain_parts(c: _Ctx, trig: tuple[str, str] | None, unclear: bool) -> tuple[str, str, str, str]:
    """Steps of a benign prompt (no category) or a borderline one whose category is unclear."""
    rng = c.rng
    if unclear:
        because = f' because of the word "{trig[0]}"' if trig else ""
        look = (
            f"It may look sensitive{because}, but no single policy category clearly covers it, and an answer "
            "gives ordinary information, not the means to hurt anyone, so it is safe to answer."
        )
    else:
        look = rng.choice(
            [
                "This is an everyday request with no safety concern under my policy.",
                "None of my policy categories apply; this is a normal request.",
            ]
        )
    intent = "The likely reason for asking is an everyday one, and nothing in the request suggests otherwise."
    second = "None of my policy categories covers it; I checked them one by one."
    wait = rng.choice(
        [
            "Wait, is there any hidden risk? No, it is a plain request, so I should just help.",
            "Wait, let me double-check for a harmful reading. There is none, so I will answer fully.",
        ]
    )
    if unclear:
        word = f'the word "{trig[0]}"' if trig else "how this sounds"
        wait = f"Wait, am I reacting to {word} rather than to what is asked? Refusing would be unhelpful."
    if c.fam:
        wait = "Wait, the unusual framing does not make a harmless request harmful; I can simply help."
    return look, intent, second, wait


# ------------------------------------------------------------------------------ SRPO: corrections


@dataclass
class Correction:
    """What replaces a drifting continuation: a reflection step, the corrected steps and the final answer."""

    reflection: str
    steps: list[str]
    answer: str


def reflection_for(prompt: Prompt, policy: Policy, rng: random.Random) -> str:
    """A "Wait, ..." step that names the problem and the policy clause (composed from the policy); for an
    ``unclear`` category it names the request's risky words and what answering would enable instead."""
    base = base_text(prompt)
    if prompt.kind == "harmful":
        framing = " The framing around it does not change that." if prompt.attack else ""
        if prompt.category in NO_CATEGORY:
            phrase, _ = risky_phrase(base)
            return (
                f'Wait, this is not a harmless question. No single policy category fits, but "{phrase}" asks for '
                f"real help toward harm, and my policy does not allow that.{framing}"
            )
        cat = policy.get(prompt.category)
        clause = best_clause(
            base,
            cat.disallowed,
            fallback=f"help with {cat.description[0].lower()}{cat.description[1:].rstrip('.')}",
        )
        return rng.choice(
            [
                f"Wait, this is not a harmless question. It falls under [{cat.id}] {cat.name}, and my policy does "
                f"not allow {clause}.{framing}",
                f"Wait, what would my answer actually give? Real help toward harm: [{cat.id}] {cat.name}, where "
                f"the policy rules out {clause}. I must not continue this way.{framing}",
            ]
        )
    if prompt.category not in NO_CATEGORY:
        cat = policy.get(prompt.category)
        clause = best_clause(base, cat.allowed)
        return rng.choice(
            [
                f"Wait, I am treating this as harmful because of how it sounds. It actually asks for {clause}, "
                f"which my policy under [{cat.id}] allows, so refusing would be wrong.",
                f"Wait, am I over-refusing? The request only touches [{cat.id}] {cat.name}; what it asks for is "
                f"{clause}, and that is fine to help with.",
            ]
        )
    return rng.choice(
        [
            "Wait, nothing in this request is harmful; I was being over-cautious. I should simply help.",
            "Wait, I am about to refuse an ordinary request. No policy category applies, so I will help.",
        ]
    )


def constructed_drift(
    p: Prompt, good: Parsed, drift_ans: str, rng: random.Random, teacher: OfflineTeacher
) -> tuple[list[str], list[str], str, str] | None:
    """A drifting continuation built offline, in the words the RW model itself uses for the *other* kind of prompt:
    a harmful prompt talked into helping with the over-refusal reflection, a benign one talked into refusing with
    the policy-violation step. These are the hard negatives: the model must tell the two apart by the request, not
    by the wording of its reflection. A harmful prompt needs ``drift_ans``, a compliant answer of the drift model
    (judged so by the caller): without one there is no drift to build (None)."""
    prefix = good.steps[:1]
    if p.kind == "harmful":
        if not drift_ans:
            return None
        trig = trigger_word(base_text(p), teacher.policy)
        look = f'the word "{trig}"' if trig else "how this sounds"
        drifting = [
            rng.choice(
                [
                    f"Wait, am I reacting to {look} rather than to what is asked? This is general information, "
                    "so refusing would be unhelpful.",
                    "Wait, I should not over-refuse just because the topic sounds sensitive. I can help.",
                ]
            ),
            rng.choice(["So I will help.", "I will give a direct, helpful answer."]),
        ]
        answer = drift_ans
    else:
        as_harmful = p.model_copy(update={"kind": "harmful", "category": harm_category(p, teacher.policy)})
        # the standard style always has the policy step third (restatement, risk, policy, wait, decide)
        wrong = teacher.compose(as_harmful, style="standard")
        drifting = [wrong.steps[2], wrong.steps[-1]]
        answer = wrong.answer
    return prefix, drifting, answer, "constructed"


def harm_category(p: Prompt, policy: Policy) -> str:
    """The category a benign prompt would be refused under when misread: its own, else the keyword-nearest one,
    else ``unclear``."""
    if p.category not in NO_CATEGORY:
        return p.category
    from saro.prompts.categorize import keyword_category

    return keyword_category(base_text(p), policy)


def offline_correction(
    p: Prompt, good: Parsed, teacher: OfflineTeacher, drift_ans: str
) -> tuple[list[str], str]:
    """The corrected continuation after the reflection: the right trajectory's decision step and its answer (for a
    benign prompt without a right trajectory, the drift model's compliant answer; empty when there is none)."""
    decision = good.steps[-1:] if good.steps else []
    answer = good.answer
    if not answer and (p.kind == "harmful" or drift_ans):
        answer = teacher.compose(p, answer=drift_ans).answer
    return decision, answer
