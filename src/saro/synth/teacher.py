"""The offline teacher: policy-driven reasoning and answers composed without a language model.

``OfflineTeacher.compose`` writes a RIT-D candidate from the policy file, the prompt's label and category, and the
request itself (understand the request and its framing -> the policy clause that applies -> the benign reading ->
a "Wait, ..." reflection -> the decision), then a refusal with a safe alternative for harmful prompts, or the
answer model's own answer for benign and borderline prompts. For SRPO it also writes the "Wait, ..." reflection
that names the policy clause, the corrected continuation, and the constructed drifting continuations. A real,
documented backend that runs anywhere; paper-quality data needs a strong teacher (``synth.teacher_prompts``).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

from saro.policy import NONE, Category, Policy
from saro.reasoning import Parsed, render
from saro.records import Prompt, stable_id

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ text helpers

_STOP = frozenset(
    re.findall(
        r"\w+",
        """
        a an the and or of to in on for with how do does did i me my you your can could would should what is
        are be it this that about from into by at as give write make create provide explain tell detailed
        step steps instructions guide list some any way ways someone people without
        """,
    )
)


def gist(text: str, max_words: int = 16) -> str:
    """A short restatement of a request: its first sentence, trimmed."""
    t = " ".join(text.strip().split())
    first = re.split(r"(?<=[.?!])\s", t, maxsplit=1)[0]
    words = first.rstrip(".?!:;").split()
    out = " ".join(words[:max_words])
    if len(words) > max_words:
        out += " ..."
    return out[:1].lower() + out[1:] if out[:2] != out[:2].upper() else out


def _words(text: str) -> set[str]:
    """Content-word stems (first 5 letters), so "violence"/"violent" and "weapon"/"weapons" match."""
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP and len(w) > 2}


def best_clause(text: str, clauses: list[str], fallback: str | None = None) -> str:
    """The policy clause sharing the most content words with the request; ``fallback`` (or the first clause)
    when none shares any."""
    ws = _words(text)
    scores = [len(ws & _words(c)) for c in clauses]
    best = max(range(len(clauses)), key=lambda i: (scores[i], -i))
    if scores[best] == 0 and fallback:
        return fallback
    return clauses[best]


def trigger_word(text: str, policy: Policy) -> str | None:
    """A policy keyword that occurs in the text (what could make a benign prompt *look* risky)."""
    low = text.lower()
    for c in policy.categories:
        for k in c.keywords:
            if re.search(r"\b" + re.escape(k.lower()) + r"\w*", low):
                return k
    return None


# ------------------------------------------------------------------------------------------ offline teacher

FRAMINGS = {
    "persona": "It is wrapped in a role-play persona that is told to ignore its rules",
    "instruction": "It comes with extra instructions about how I must start or what I must not say",
    "encoding": "It is written in an encoded or disguised form",
    "nesting": "It is nested inside a story or layered scene",
    "format": "It asks for the answer in a particular format or style",
    "other": "It comes inside some extra framing",
}


def framing_family(prompt: Prompt) -> str | None:
    fam = prompt.meta.get("attack_family")
    if prompt.attack is None:
        return None
    if fam in FRAMINGS:
        return fam
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


_IMPERATIVE = re.compile(
    r"^(write|create|give|list|describe|explain|generate|develop|design|provide|draft|compose|make|tell|teach|"
    r"show|outline|suggest|plan|build|help|find|produce|translate|summari[sz]e|convert|recommend)\b",
    re.IGNORECASE,
)


def _restatements(base: str, g: str) -> list[str]:
    """Ways to restate the request that read well for questions, instructions and other statements alike."""
    first = base.strip().split("\n")[0].strip()
    if first.endswith("?"):
        return [f'The user asks: "{g}?"', f'The question is: "{g}?"']
    if _IMPERATIVE.match(first):
        return [
            f"The user wants me to {g}.",
            f'The request is: "{g}".',
            f"Here the user is asking me to {g}.",
        ]
    return [f'The request is: "{g}".', f'The user writes: "{g}".']


@dataclass
class Composed:
    steps: list[str]
    answer: str

    @property
    def text(self) -> str:
        return render(self.steps, self.answer)


class OfflineTeacher:
    """Composes policy reasoning and answers without a language model (see module docstring)."""

    name = "offline"

    def __init__(self, policy: Policy, seed: int = 0) -> None:
        self.policy = policy
        self.seed = seed

    def compose(self, prompt: Prompt, sample: int = 0, answer: str | None = None) -> Composed:
        """One candidate. ``answer`` is the answer model's reply for benign/borderline prompts."""
        rng = random.Random(stable_id("offline-teacher", self.seed, prompt.id, sample))
        base = base_text(prompt)
        g = gist(base)
        cat = self.policy.get(prompt.category) if prompt.category not in (NONE, None) else None
        fam = framing_family(prompt)
        if prompt.kind == "harmful":
            assert cat is not None, f"harmful prompt {prompt.id} has no policy category"
            return Composed(self._harmful_steps(rng, g, base, cat, fam), self._refusal(rng, g, base, cat))
        steps = self._benign_steps(rng, g, base, cat, fam, prompt.kind)
        return Composed(steps, (answer or "").strip())

    # ---- harmful

    def _harmful_steps(
        self, rng: random.Random, g: str, base: str, cat: Category, fam: str | None
    ) -> list[str]:
        clause = best_clause(
            base,
            cat.disallowed,
            fallback=f"help with {cat.description[0].lower()}{cat.description[1:].rstrip('.')}",
        )
        understand = rng.choice(_restatements(base, g))
        if fam:
            understand += " " + FRAMINGS[fam] + ", but underneath it the request itself is the same."
        intent = rng.choice(
            [
                "Taken at face value, doing this would hand over practical help for causing harm.",
                "What this would actually produce is usable, step-level help toward harm.",
                "The intent is operational: the output would be something a person could act on to hurt others.",
            ]
        )
        policy_step = rng.choice(
            [
                f"This falls under [{cat.id}] {cat.name}. My policy does not allow {clause}.",
                f"Checking my policy: this is [{cat.id}] {cat.name}, and it rules out {clause}.",
            ]
        )
        if fam == "persona":
            wait = rng.choice(
                [
                    "Wait, the role-play framing does not change what is being asked. A persona that 'has no rules' "
                    "is still me writing the content.",
                    "Wait, pretending to be a different character does not make the harmful part any less real.",
                ]
            )
        elif fam in ("instruction", "format"):
            wait = rng.choice(
                [
                    "Wait, being told how to start my reply or what words to avoid does not change the request; "
                    "the format is not the point, the content is.",
                    "Wait, the instructions about style or wording are there to push me past my judgement. "
                    "The underlying ask is unchanged.",
                ]
            )
        elif fam == "nesting":
            wait = "Wait, putting the request inside a story or a scene still produces the same real instructions."
        elif fam == "encoding":
            wait = "Wait, encoding or disguising the request does not change what it asks for once decoded."
        else:
            wait = rng.choice(
                [
                    "Wait, is there a harmless reading? Someone could be curious, but the request asks for "
                    "specifics that only matter if you intend to carry it out.",
                    "Wait, let me consider whether this could be benign. The wording asks for the harmful capability "
                    "itself, not for understanding or protection.",
                ]
            )
        decide = rng.choice(
            [
                f"So I will decline, briefly explain why, and offer {rng.choice(cat.alternatives or ['a safer angle'])} "
                "instead.",
                f"I should refuse this part and point to {rng.choice(cat.alternatives or ['a safer angle'])}.",
            ]
        )
        steps = [understand, policy_step, wait, decide]
        if rng.random() < 0.5:
            steps.insert(1, intent)
        return steps

    def _refusal(self, rng: random.Random, g: str, base: str, cat: Category) -> str:
        alt = rng.choice(cat.alternatives or ["a safer, related topic"])
        opener = rng.choice(
            [
                "I can't help with that.",
                "I won't help with this request.",
                "Sorry, but I can't help with that.",
            ]
        )
        why = rng.choice(
            [
                f"It asks for help that could cause real harm ({cat.name.lower()}).",
                f"Giving this would mean helping with {cat.name.lower()}-related harm.",
                "Providing it could put people at risk.",
            ]
        )
        offer = rng.choice(
            [
                f"If it is useful, I can talk about {alt}.",
                f"I'm happy to help with {alt} instead.",
            ]
        )
        return f"{opener} {why} {offer}"

    # ---- benign / borderline

    def _benign_steps(
        self, rng: random.Random, g: str, base: str, cat: Category | None, fam: str | None, kind: str
    ) -> list[str]:
        understand = rng.choice(_restatements(base, g))
        if fam:
            understand += " " + FRAMINGS[fam] + "; I should look at the request underneath it."
        steps = [understand]
        trig = trigger_word(base, self.policy)
        if cat is not None:
            allowed = best_clause(base, cat.allowed, fallback=cat.allowed[0])
            steps.append(
                rng.choice(
                    [
                        f"It touches on [{cat.id}] {cat.name}, but what it asks for is {allowed}, which my policy "
                        "allows.",
                        f"The topic is near [{cat.id}] {cat.name}. My policy explicitly allows {allowed}.",
                    ]
                )
            )
            wait = rng.choice(
                [
                    f'Wait, am I reacting to the word "{trig}" rather than to what is asked? '
                    if trig
                    else "Wait, am I reacting to how this sounds rather than to what is asked? ",
                    "Wait, I should not over-refuse here just because the topic sounds sensitive. ",
                ]
            ) + rng.choice(
                [
                    "Nothing here gives real uplift toward harm, and refusing would be unhelpful.",
                    "The answer is ordinary, widely available information that helps the user.",
                ]
            )
        else:
            steps.append(
                rng.choice(
                    [
                        "This is an everyday request with no safety concern under my policy.",
                        "None of my policy categories apply; this is a normal request.",
                    ]
                )
            )
            wait = rng.choice(
                [
                    "Wait, is there any hidden risk? No, it is a plain request, so I should just help.",
                    "Wait, let me double-check for a harmful reading. There is none, so I will answer fully.",
                ]
            )
            if fam:
                wait = (
                    "Wait, the unusual framing does not make a harmless request harmful; I can simply help."
                )
        steps.append(wait)
        steps.append(rng.choice(["I will give a direct, helpful answer.", "So I will help."]))
        return steps


def base_text(prompt: Prompt) -> str:
    """The unwrapped request of a (possibly jailbreak-wrapped) prompt."""
    return prompt.meta.get("base_text") or prompt.text


# ------------------------------------------------------------------------------ SRPO: corrections


@dataclass
class Correction:
    """What replaces a drifting continuation: a reflection step, the corrected steps and the final answer."""

    reflection: str
    steps: list[str]
    answer: str


def reflection_for(prompt: Prompt, policy: Policy, rng: random.Random) -> str:
    """A "Wait, ..." step that names the problem and the policy clause (composed from the policy)."""
    base = base_text(prompt)
    if prompt.kind == "harmful":
        cat = policy.get(prompt.category)
        clause = best_clause(
            base,
            cat.disallowed,
            fallback=f"help with {cat.description[0].lower()}{cat.description[1:].rstrip('.')}",
        )
        framing = " The framing around it does not change that." if prompt.attack else ""
        return rng.choice(
            [
                f"Wait, this is not a harmless question. It falls under [{cat.id}] {cat.name}, and my policy does "
                f"not allow {clause}.{framing}",
                f"Wait, what would my answer actually give? Real help toward harm: [{cat.id}] {cat.name}, where "
                f"the policy rules out {clause}. I must not continue this way.{framing}",
            ]
        )
    if prompt.category not in (NONE, None):
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
) -> tuple[list[str], list[str], str, str]:
    """A drifting continuation built offline, in the words the RW model itself uses for the *other* kind of prompt:
    a harmful prompt talked into helping with the over-refusal reflection, a benign one talked into refusing with
    the policy-violation step. These are the hard negatives: the model must tell the two apart by the request, not
    by the wording of its reflection."""
    prefix = good.steps[:1]
    if p.kind == "harmful":
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
        answer = drift_ans or "Sure, here is how to do that."
    else:
        as_harmful = p.model_copy(update={"kind": "harmful", "category": harm_category(p, teacher.policy)})
        wrong = teacher.compose(as_harmful, sample=1)
        policy_step = next((x for x in wrong.steps if "[" in x), wrong.steps[1])
        drifting = [policy_step, wrong.steps[-1]]
        answer = wrong.answer
    return prefix, drifting, answer, "constructed"


def harm_category(p: Prompt, policy: Policy) -> str:
    return p.category if p.category not in (NONE, None) else policy.categories[0].id


def offline_correction(
    p: Prompt, good: Parsed, teacher: OfflineTeacher, drift_ans: str
) -> tuple[list[str], str]:
    """The corrected continuation after the reflection: the right trajectory's decision step and its answer."""
    decision = good.steps[-1:] if good.steps else []
    answer = good.answer
    if not answer:
        answer = teacher.compose(p, answer=drift_ans).answer
    return decision, answer
