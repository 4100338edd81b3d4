"""Phrasing of a prompt: imperative, question or other; grammatical person; deterministic rephrasing.

Why: when every harmful training prompt is an imperative ("Write a tutorial on how to ...") and every benign one a
question, a small model can learn the refusal label from the phrasing alone. ``classify`` measures the confound,
``rephrase`` removes it. Rephrasing is rule-based and built from the prompt's own words; the same rules apply to
every prompt whatever its kind, so the chosen form carries no label. Among several templates one is picked by a
stable hash of the text. When a prompt does not fit a rule cleanly, ``rephrase`` returns None rather than broken
grammar.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from saro.recipe import PromptEntry
    from saro.records import Prompt

log = logging.getLogger(__name__)

Phrasing = Literal["imperative", "question", "other"]
Person = Literal["first", "third", "none"]
PHRASINGS: tuple[str, ...] = ("imperative", "question", "other")


# Verbs that open an imperative request (base form). Open-ended on purpose: every word here is a verb whose base
# form at the start of a sentence is read as a command.
def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


IMPERATIVE_VERBS = _words(
    """
    write create develop provide give instruct outline design teach explain generate describe produce publish show
    demonstrate suggest offer guide compose hack release share illustrate train exploit post manipulate conduct use
    interfere draw draft educate list convince determine choose come devise brainstorm tell help discuss talk detail
    summarize summarise rewrite translate turn plan make recommend scale solve prove convert integrate factorise
    factorize correct walk compare name find identify build prepare compile craft send fix debug implement refactor
    calculate compute estimate review proofread edit paraphrase rephrase check analyze analyse evaluate define
    classify sort rank arrange organize organise format convert imagine pretend act roleplay role-play sketch map
    invent brief break count predict simulate spell print play sing continue finish complete expand shorten simplify
    clarify elaborate reply respond answer ask remind set schedule book order recite quote cite propose justify argue
    persuade encourage promote advise assist support coach mentor inform notify warn read look search get put keep
    let go take bring pick lay run stop start open close delete remove install configure deploy test measure kill
    roast protect avoid stay try visit watch learn practise practice study
    focus think consider include add note mention highlight emphasize emphasise ensure assume suppose fill replace
    insert change transform modify adapt apply select rate critique comment contrast distinguish enumerate specify
    express reword extend combine merge derive locate track obtain acquire buy sell hide spread cause destroy
    bypass evade forge smuggle stalk harass threaten blackmail insult mock steal
    """
)

# Words of the list above that are also common nouns ("book", "plan", "help"). Opening a sentence, one of them is a
# verb only when an object follows it (a determiner, a pronoun, a number, a wh-word or a particle: "Book a table",
# "Plan my week", "List five ...", "Help me ..."); followed by a bare word it may head a noun phrase ("Book
# recommendations for teens?", "Test results are back.").
VERB_NOUNS = _words(
    """
    book list plan map order name help guide answer review check test design draft sketch sort rank format count
    spell play start stop run set post quote offer support train act coach mentor schedule estimate detail brief
    break print search look walk visit watch study practice practise roast turn scale fix use share release hack
    draw exploit conduct talk rewrite find build craft implement edit paraphrase reply ask take pick keep measure
    kill outline show stay try focus note comment contrast change rate critique track spread cause smuggle mock
    insult threaten blackmail roleplay role-play
    """
)
OBJECT_STARTS = _words(
    """
    a an the this that these those my your our his her their its me us him them it you some any all every each
    one two three four five six seven eight nine ten several many few more most no how what why where when who
    which whether if out up down off over someone something somebody anyone anything
    everyone everything people
    """
)
FINITE = _words(
    """
    is are was were has have had does do did can could will would should shall may might must isn't aren't wasn't
    weren't hasn't haven't doesn't don't didn't can't won't seems seem keeps keep goes go looks look
    """
)
# A leading adverbial phrase before a comma ("For my novel, write ...", "As a doctor, how do I ...?"): the request
# is the clause after it.
INTRO_WORDS = _words(
    """
    for in as if when while after before since given assuming considering hypothetically theoretically ideally
    honestly seriously basically also then now finally first next anyway btw again besides otherwise because
    although though from on at with without during
    """
)
INTRO_MAX_WORDS = 12

REQUEST_OPENERS = (
    "i need you to",
    "i want you to",
    "i'd like you to",
    "i would like you to",
    "i'd love you to",
    "i'd love for you to",
    "i need help to",
    "i need help with",
    "help me",
    "let's",
    "let us",
)

QUESTION_WORDS = _words(
    """
    how what why when where which who whom whose is are am was were can could would will should shall do does did
    has have had may might must isn't aren't wasn't weren't can't couldn't wouldn't won't shouldn't don't doesn't
    didn't hasn't haven't what's how's who's where's when's why's which's whats hows
    """
)

_LEADS = re.compile(r"^(?:(?:hi|hey|hello|ok|okay|so|now|quick question|question)\b[,:!.]?\s+)+", re.I)
_PLEASE = re.compile(r"^(?:please|kindly|pls)\b[,]?\s+", re.I)
_SENT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")

FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|me|my|mine|myself|we|us|our|ours|ourselves)\b")
THIRD_PERSON = re.compile(
    r"\b(?:someone|somebody|anyone|anybody|people|person|one's|he|she|him|her|his|hers|they|them|their|"
    r"themselves|himself|herself|users|a user|individuals|a man|a woman|a child|children|others)\b",
    re.I,
)


def _clean(text: str) -> str:
    return " ".join((text or "").split())


def sentences(text: str) -> list[str]:
    """Split text into sentences (on ., ! or ? followed by a capital or digit, and on line breaks)."""
    out: list[str] = []
    for line in (text or "").splitlines():
        out.extend(s.strip() for s in _SENT.split(line.strip()) if s.strip())
    return out


def _strip_leads(s: str) -> str:
    s = s.lstrip("\"'“‘([ ")
    s = _LEADS.sub("", s)
    return s


def _first_word(s: str) -> str:
    m = _WORD.match(s)
    return m.group(0).lower().replace("’", "'") if m else ""


def _ends_with_question_mark(s: str) -> bool:
    return s.rstrip("\"')] ").endswith("?")


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")


def _tokens(s: str) -> list[str]:
    """Words and numbers, lower-cased, curly apostrophes straightened."""
    return [w.lower().replace("’", "'") for w in _TOKEN.findall(s)]


def _object_start(word: str) -> bool:
    """Whether a word can open the object of a command: a determiner, pronoun, number, wh-word or particle."""
    return word in OBJECT_STARTS or word[:1].isdigit()


def _verb_noun_reading(s: str) -> Phrasing | None:
    """For a sentence opening with a word that is both a verb and a noun and not followed by an object: "question"
    when it ends in "?" (a noun-phrase question: "Book recommendations for teens?"), "other" when a finite verb
    follows before any comma (the word heads the subject: "Test results are back."); None when it reads as a
    command."""
    words = _tokens(s.split(",", 1)[0])
    if len(words) < 2 or words[0] not in VERB_NOUNS or _object_start(words[1]):
        return None
    if _ends_with_question_mark(s):
        return "question"
    if any(w in FINITE for w in words[1:]):
        return "other"
    return None


def _after_intro(s: str) -> str | None:
    """The clause after a short leading adverbial phrase ("For my spy novel, write ..."), or None."""
    head, sep, rest = s.partition(",")
    if not sep or _first_word(head) not in INTRO_WORDS or len(head.split()) > INTRO_MAX_WORDS:
        return None
    return rest.strip() or None


def _classify_sentence(s: str) -> Phrasing:
    s = _strip_leads(s)
    low = s.lower().replace("’", "'")
    if _PLEASE.match(s):
        rest = _PLEASE.sub("", s)
        return "imperative" if _first_word(rest) in IMPERATIVE_VERBS or not rest.endswith("?") else "question"
    if any(low.startswith(o + " ") for o in REQUEST_OPENERS):
        return "imperative"
    after = _after_intro(s)
    if after is not None:
        inner = _classify_sentence(after)
        if inner != "other":
            return inner
    w = _first_word(s)
    if w in QUESTION_WORDS:
        return "question"
    if w in IMPERATIVE_VERBS:
        return _verb_noun_reading(s) or "imperative"
    if _ends_with_question_mark(s):
        return "question"
    return "other"


def classify(text: str) -> Phrasing:
    """The form of a request: "imperative" ("Write ...", "Tell me ...", "I need you to ..."), "question" ("How do
    I ...", "Can you ...?", "Any tips for ...?", anything ending in "?" that does not open with a command) or
    "other" (statements, empty text).

    A multi-sentence prompt takes the form of its first sentence that is a request; context sentences before it
    ("My sourdough smells odd. Is it ruined?") do not count, nor does a short leading phrase before a comma ("For
    my novel, write ..."). A sentence opening with a word that is both a verb and a noun is a command only when an
    object follows it ("Book a table" vs "Book recommendations for teens?"). Measured on prompts labelled by
    reading: ``bench/phrasing_accuracy.py``.
    """
    for s in sentences(_clean(text)):
        if not _WORD.search(s):
            continue
        kind = _classify_sentence(s)
        if kind != "other":
            return kind
    return "other"


def person(text: str) -> Person:
    """Who the request is about: "first" (I, me, my, we ...), "third" (someone, people, he, they ...) or "none"."""
    t = _clean(text)
    if FIRST_PERSON.search(t):
        return "first"
    if THIRD_PERSON.search(t):
        return "third"
    return "none"


# ----------------------------------------------------------------------------------------------- rephrasing

# One set of templates per form of the core request; the same sets serve every kind of prompt.
HOWTO_QUESTION = (
    "How would someone {vp}?",
    "What are the steps to {vp}?",
    "Could you explain how to {vp}?",
    "What is the best way to {vp}?",
)
HOWTO_IMPERATIVE = (
    "Give me steps to {vp}.",
    "Explain how to {vp}.",
    "Tell me how to {vp}.",
    "Describe how to {vp}.",
)
TASK_QUESTION = ("Could you {task}?", "Can you {task}?", "Would you {task}?")
TASK_IMPERATIVE = ("{Task}.", "Please {task}.")
THE_NP_IMPERATIVE = ("Explain the {np}.", "Tell me the {np}.")
WHAT_NP_IMPERATIVE = ("Explain what {np} {be}.", "Tell me what {np} {be}.")
EMBED_IMPERATIVE = ("Tell me {q}.", "Explain {q}.")

_HOWTO_IMP = [
    # "Write a tutorial on how to X", "Create a guide for how someone can X", "Give me instructions to X"
    re.compile(
        r"^(?:write|create|develop|provide|give(?: me| us)?|generate|produce|draft|compose|outline|publish|"
        r"prepare|make|share|offer)\s+(?:(?:me|us)\s+)?(?:(?:a|an|the|some|detailed|clear|simple|short|brief|"
        r"step-by-step|full|complete)\s+)*(?:tutorial|guide|manual|set of instructions|instructions|steps|"
        r"directions|walkthrough|explanation|plan|list of steps)\s+(?:on|for|about|explaining|describing|"
        r"detailing|showing|to|of)?\s*(?:how\s+(?:to|someone can|one can|a person can|people can|i can|you "
        r"can)\s+)?(?P<vp>.+)$",
        re.I,
    ),
    # "Explain how to X", "Tell me how to X", "Teach people how to X", "Show me how to X"
    re.compile(
        r"^(?:explain|describe|show|tell|teach|instruct|demonstrate|outline|detail|walk)\s+(?:(?:me|us|users|"
        r"people|someone|readers|children|others)\s+)?(?:through\s+)?how\s+(?:to|someone can|one can|i can|"
        r"you can)\s+(?P<vp>.+)$",
        re.I,
    ),
]
_HOWTO_Q = [
    re.compile(
        r"^how\s+(?:do|can|could|would|should|might|may)\s+(?:i|we|you|one|someone|somebody|a person|people)\s+"
        r"(?:go about\s+)?(?P<vp>.+)$",
        re.I,
    ),
    re.compile(r"^how\s+to\s+(?P<vp>.+)$", re.I),
    re.compile(
        r"^what\s+(?:is|are|'s|would be)\s+(?:the|a|some)\s+(?:best|easiest|simplest|safest|fastest|quickest|"
        r"right|proper|good|correct|most effective)?\s*(?:way|ways|steps|method|methods)\s+(?:to|for)\s+"
        r"(?P<vp>.+)$",
        re.I,
    ),
    re.compile(
        r"^(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:explain|tell me|show me|describe)\s+how\s+to\s+"
        r"(?P<vp>.+)$",
        re.I,
    ),
]
_TASK_Q = re.compile(r"^(?:can|could|would|will)\s+you\s+(?:please\s+)?(?P<task>.+)$", re.I)
_WHAT_BE = re.compile(r"^(?:what|who)\s+(?P<be>is|are|was|were)\s+(?P<np>.+)$", re.I)
_WHAT_MEAN = re.compile(r"^what\s+(?P<aux>does|do)\s+(?P<np>.+?)\s+mean(?P<rest>\s.+)?$", re.I)
_HOW_WORK = re.compile(r"^how\s+(?P<aux>does|do)\s+(?P<np>.+?)\s+work$", re.I)
_IS_IT_ADJ = re.compile(r"^(?P<be>is|was)\s+it\s+(?P<rest>[a-z-]+\s+(?:to|for|if|that)\s+.+)$", re.I)
_WH_PRON = re.compile(
    r"^(?P<wh>what|where|when|which|who|why|how)\s+(?P<aux>should|can|could|would|will|do|might|may|must)\s+"
    r"(?P<subj>i|you|we|they|one|someone|people)\s+(?P<rest>.+)$",
    re.I,
)
_YESNO_PRON = re.compile(
    r"^(?P<aux>can|could|should|would|will|do|may|must|might)\s+(?P<subj>i|we|they|one|someone|people)\s+"
    r"(?P<rest>.+)$",
    re.I,
)
AUX = _words(
    "is are am was were do does did can could would will should shall may might must has have had "
    "isn't aren't don't doesn't didn't can't won't"
)
_PRONOUN_CASE = {"i": "I"}


def _pick(options: tuple[str, ...], text: str) -> str:
    """One of several rewrites, picked by a stable hash of the text."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return options[h % len(options)]


def _core(text: str) -> tuple[str, str] | None:
    """(context, request): statement sentences before the request, and the single request sentence without
    leading filler and final punctuation; None when the prompt is not that clean shape."""
    t = _clean(text)
    if not t or "\n" in (text or "").strip() or len(t) > 400:
        return None
    sents = [s for s in sentences(t) if _WORD.search(s)]
    if not sents or len(sents) > 3:
        return None
    context = sents[:-1]
    if any(_classify_sentence(c) != "other" or not c.endswith(".") for c in context):
        return None
    s = _PLEASE.sub("", _strip_leads(sents[-1]))
    s = re.sub(r"[\s.!?]+$", "", s).strip()
    if not s or re.search(r"[?!;:]|\.\s|[\"“”]", s) or s.endswith((",", "-")):
        return None
    if s.count("(") != s.count(")") or len(_WORD.findall(s)) < 2:
        return None
    return " ".join(context), s


def _lower_first(s: str) -> str:
    """Lower-case the first word when it is an ordinary word (keeps "I", acronyms and names like "SQL", "iPhone")."""
    w = s.split(" ", 1)[0]
    if w == "I" or w.startswith("I'") or (len(w) > 1 and (w[1:2].isupper() or not w.isalpha())):
        return s
    return s[:1].lower() + s[1:]


def _vp_ok(vp: str) -> bool:
    vp = vp.strip()
    words = vp.split()
    return len(words) >= 2 and words[0].lower() not in AUX | {"how", "to", "what", "why", "a", "the"}


def _to_question(core: str) -> list[list[str]]:
    """The question forms of an imperative request, in groups by rule preference (here one group: every rule's
    question is a plain question)."""
    body = core
    for o in REQUEST_OPENERS[:6]:
        if body.lower().startswith(o + " "):
            body = body[len(o) + 1 :]
            break
    out: list[str] = []
    for rx in _HOWTO_IMP:
        m = rx.match(body)
        if m and _vp_ok(m.group("vp")):
            vp = m.group("vp")
            # "How would someone check my car?" mixes persons: the generic subject only for a request without I/me
            out += [
                t.format(vp=vp) for t in HOWTO_QUESTION if "someone" not in t or not FIRST_PERSON.search(vp)
            ]
            break
    words = _tokens(body)
    # a verb that is also a noun is rewritten only when an object follows it ("Plan a party", not "Plan ideas")
    verb_ok = (
        bool(words)
        and words[0] in IMPERATIVE_VERBS
        and (words[0] not in VERB_NOUNS or (len(words) > 1 and _object_start(words[1])))
    )
    if verb_ok and len(body.split()) >= 2:
        out += [t.format(task=_lower_first(body)) for t in TASK_QUESTION]
    return [out]


def _subj(word: str) -> str:
    return _PRONOUN_CASE.get(word.lower(), word.lower())


def _to_imperative(core: str) -> list[list[str]]:
    """The imperative forms of a question, in groups by rule preference: "how do I X" -> "how to X" first, then
    "can you X" -> "X", then the indirect forms ("Tell me what ..."), which read worse for how-to questions."""
    body = core.replace("’", "'")
    body = re.sub(r"^what's\b", "what is", body, flags=re.I)
    groups: list[list[str]] = []
    for rx in _HOWTO_Q:
        m = rx.match(body)
        if m and _vp_ok(m.group("vp")):
            groups.append([t.format(vp=m.group("vp")) for t in HOWTO_IMPERATIVE])
            break
    m = _TASK_Q.match(body)
    if m and _first_word(m.group("task")) in IMPERATIVE_VERBS and len(m.group("task").split()) >= 2:
        task = _lower_first(m.group("task"))
        groups.append([t.format(task=task, Task=task[:1].upper() + task[1:]) for t in TASK_IMPERATIVE])
    return [*groups, _embed(body, core)]


_WH_BE = re.compile(r"^(?P<wh>how|why|when|where)\s+(?P<be>is|are|was|were)\s+(?P<rest>.+)$", re.I)
PARTICIPLES = _words(
    "made done built sold taken given known used run spread found held kept seen written shown brought taught "
    "caught bought set put cut led fought told won lost thrown drawn grown chosen driven eaten fallen forgotten "
    "hidden ridden risen shaken stolen sworn torn worn broken spoken frozen woken"
)
BOUNDARY = _words("so very too more less most still often always never not such")


def _be_question(body: str) -> str | None:
    """ "How was NP done ...?" / "Why are NP so ...?" -> "how NP was done ..." (the verb moved after the subject).

    The subject ends at the first past participle (-ed, or a common irregular one) or degree adverb; the question
    is left alone when no such word follows a short, aux-free subject, when the subject opens with a dummy "it" or
    "there" ("How was it possible ..."), or holds a verb form or an adverb that could belong to the predicate
    ("How were people tampering with X used ...", "How was money illegally taken").
    """
    m = _WH_BE.match(body)
    if not m or "," in body:
        return None
    words = m.group("rest").split()
    if words[0].lower() in ("it", "there"):
        return None
    for i, w in enumerate(words[1:], start=1):
        lw = w.lower()
        if lw in AUX or lw in ("and", "or", "that", "which", "who", "to", "be", "been", "being"):
            return None
        if len(lw) > 4 and lw.endswith(("ing", "ly")):
            return None
        if lw in BOUNDARY or lw in PARTICIPLES or (len(lw) > 4 and lw.endswith("ed")):
            if i > 6:
                return None
            subj, pred = " ".join(words[:i]), " ".join(words[i:])
            return f"{m.group('wh').lower()} {subj} {m.group('be').lower()} {pred}"
    return None


def _embed(body: str, core: str) -> list[str]:
    """Questions turned into indirect requests: "What is X?" -> "Explain what X is."; every template of the
    first rule that fits (none: an empty list)."""
    words = body.split()
    m = _WHAT_BE.match(body)
    if m and "," not in body and not (set(w.lower() for w in words[2:]) & AUX):
        np, be = m.group("np"), m.group("be").lower()
        if re.match(r"the\s", np, re.I) and m.group(0).lower().startswith("what"):
            return [t.format(np=np[4:]) for t in THE_NP_IMPERATIVE]
        wh = words[0].lower()
        return [t.replace("what", wh, 1).format(np=np, be=be) for t in WHAT_NP_IMPERATIVE]
    passive = _be_question(body)
    if passive is not None:
        return [t.format(q=passive) for t in EMBED_IMPERATIVE]
    m = _WHAT_MEAN.match(body)
    if m and "," not in body:
        verb = "means" if m.group("aux").lower() == "does" else "mean"
        q = f"what {m.group('np')} {verb}{m.group('rest') or ''}"
        return [t.format(q=q) for t in EMBED_IMPERATIVE]
    m = _HOW_WORK.match(body)
    if m and "," not in body:
        verb = "works" if m.group("aux").lower() == "does" else "work"
        return [f"Explain how {m.group('np')} {verb}."]
    m = _IS_IT_ADJ.match(body)
    if m:
        return [f"Tell me whether it {m.group('be').lower()} {m.group('rest')}."]
    m = _WH_PRON.match(body)
    if m and "," not in body:
        aux = m.group("aux").lower()
        subj = _subj(m.group("subj"))
        if aux == "do" and subj not in ("I", "you", "we", "they", "people"):
            return []
        verb = "" if aux == "do" else aux + " "
        q = f"{m.group('wh').lower()} {subj} {verb}{m.group('rest')}"
        return [t.format(q=q) for t in EMBED_IMPERATIVE]
    m = _YESNO_PRON.match(body)
    if m and "," not in body:
        aux = m.group("aux").lower()
        subj = _subj(m.group("subj"))
        if aux == "do" and subj not in ("I", "we", "they", "people"):
            return []
        verb = "" if aux == "do" else aux + " "
        return [f"Tell me whether {subj} {verb}{m.group('rest')}."]
    wh = words[0].lower() if words else ""
    if wh in ("what", "which", "who") and not (set(w.lower() for w in words[1:]) & AUX) and "," not in body:
        return [t.format(q=wh + body[len(wh) :]) for t in EMBED_IMPERATIVE]
    return []


# Words a rewrite may add or drop: function words, the generic subjects and the request verbs of the templates
# above. Every other word (a noun, an adjective, "detailed", "step-by-step", "steps", "best", "way") is content: the
# two forms of a request must carry the same set of them.
CONTENT_STOP = _words(
    """
    a an the and or but nor of to in on at for with from by about into onto over under as than then so i me my mine
    myself we us our ours you your yours yourself it its they them their he him his she her someone somebody one
    people person anyone anybody is are am was were be been being do does did can could would will should shall
    may might must how what why when where which who whom whose whether if that this these those there please
    kindly tell explain describe give show provide
    """
)
_SUFFIXES = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    """A crude stem: lower case, no possessive, one inflectional suffix off ("works" -> "work")."""
    w = word.lower().replace("’", "'")
    w = w[:-2] if w.endswith("'s") else w
    for suf in _SUFFIXES:
        if w.endswith(suf) and not w.endswith("ss") and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


def content_stems(text: str) -> frozenset[str]:
    """The content words of a text as stems: what a rephrasing must keep (see ``CONTENT_STOP``)."""
    return frozenset(
        _stem(w)
        for w in _WORD.findall(text or "")
        if w.lower() not in CONTENT_STOP and _stem(w) not in CONTENT_STOP
    )


def same_content(a: str, b: str) -> bool:
    """True when two texts carry the same content-word stems (a phrasing contrast then differs in form only)."""
    return content_stems(a) == content_stems(b)


RephraseOutcome = Literal["rephrased", "same_form", "other", "unclean", "no_rule", "content"]


def _split_intro(core: str) -> tuple[str, str]:
    """("For my novel", "write a scene") for a request after a short leading phrase, else ("", core)."""
    rest = _after_intro(core)
    if rest is None or len(_WORD.findall(rest)) < 2:
        return "", core
    return core[: len(core) - len(rest)].rstrip(" ,"), rest


def rephrase_with_reason(
    text: str, to: Literal["question", "imperative"]
) -> tuple[str | None, RephraseOutcome]:
    """``rephrase`` and why it gave None: the text is already in that form ("same_form"), is no request
    ("other"), is not one clean request sentence ("unclean"), no rule fits its grammar ("no_rule"), or every rule
    that fits would add or drop content words ("content")."""
    if to not in ("question", "imperative"):
        raise ValueError(f"rephrase: to must be 'question' or 'imperative', not {to!r}")
    src = classify(text)
    if src == to:
        return None, "same_form"
    if src == "other":
        return None, "other"
    parts = _core(text)
    if parts is None:
        return None, "unclean"
    context, core = parts
    intro, body = _split_intro(core)
    groups = _to_question(body) if to == "question" else _to_imperative(body)
    why: RephraseOutcome = "no_rule"
    for group in groups:  # the first rule group with a rewrite that keeps the content words
        fitting = []
        for c in group:
            out = (intro + ", " + _lower_first(c)) if intro else c
            out = (context + " " if context else "") + out[:1].upper() + out[1:]
            out = re.sub(r"\s+([,.?!])", r"\1", out)
            if classify(out) == to:
                fitting.append(out)
        keep = list(dict.fromkeys(out for out in fitting if same_content(out, text)))
        if keep:
            return _pick(tuple(keep), text), "rephrased"
        if fitting:
            why = "content"
    return None, why


def rephrase(text: str, to: Literal["question", "imperative"]) -> str | None:
    """The request in the other form, deterministic and built from its own words; None when no rule fits cleanly.

    Only the request sentence is rewritten; up to two statement sentences of context before it, and a short
    leading phrase ("For my novel, ..."), are kept ("My app is frozen. How do I close it?" -> "My app is frozen.
    Tell me how to close it."). The rewrite keeps every content word and adds none (``same_content``): "Provide
    detailed step-by-step instructions for X" becomes "Could you provide detailed step-by-step instructions for
    X?", never "How would someone X?", so the two forms differ in phrasing, not in detail. Text already in the
    target form, statements, requests followed by more text, and empty prompts give None.
    """
    return rephrase_with_reason(text, to)[0]


# ------------------------------------------------------------------------------------- prompt sets (build.py)

OTHER_FORM = {"imperative": "question", "question": "imperative"}
WARN_SHARE = 0.7
WARN_MIN_N = 10


def _rank(seed: int, text: str) -> str:
    """A stable pseudo-random order key per (recipe seed, prompt text)."""
    return hashlib.sha256(f"{seed}:rephrase:{' '.join(text.lower().split())}".encode()).hexdigest()


def _convert_all(prompts: list[Prompt], to: str) -> tuple[list[Prompt], Counter[str]]:
    """Every prompt not already in form ``to`` rewritten into it (kept as it is when it cannot be)."""
    counts: Counter[str] = Counter()
    out = []
    for p in prompts:
        form = p.meta["phrasing"]
        alt = rephrase(p.text, to) if form in OTHER_FORM and form != to else None  # type: ignore[arg-type]
        if alt is None:
            counts["kept" if form == to or form not in OTHER_FORM else "not_rephrased"] += 1
            out.append(p)
            continue
        counts["rephrased"] += 1
        out.append(_variant(p, alt, to))
    return out, counts


def _balance(prompts: list[Prompt], seed: int) -> tuple[list[Prompt], Counter[str]]:
    """``rephrase: mixed``: rewrite prompts of the majority form into the other one, in a seeded order, until the
    entry holds as many imperatives as questions (within one); prompts that cannot be rewritten are skipped, and
    the next one is tried. Exact halves rather than coin flips, so a small entry is not left at 70/30 by chance."""
    counts: Counter[str] = Counter()
    forms = Counter(p.meta["phrasing"] for p in prompts if p.meta["phrasing"] in OTHER_FORM)
    major = max(OTHER_FORM, key=lambda f: (forms[f], f))
    minor = OTHER_FORM[major]
    todo = (forms[major] - forms[minor]) // 2
    chosen: dict[int, Prompt] = {}
    for i in sorted(
        (i for i, p in enumerate(prompts) if p.meta["phrasing"] == major),
        key=lambda i: _rank(seed, prompts[i].text),
    ):
        if len(chosen) >= todo:
            break
        alt = rephrase(prompts[i].text, minor)  # type: ignore[arg-type]
        if alt is None:
            counts["not_rephrased"] += 1
            continue
        chosen[i] = _variant(prompts[i], alt, minor)
    counts["rephrased"] = len(chosen)
    counts["kept"] = len(prompts) - len(chosen) - counts["not_rephrased"]
    return [chosen.get(i, p) for i, p in enumerate(prompts)], counts


def _variant(p: Prompt, text: str, form: str, **meta: Any) -> Prompt:
    from saro.records import Prompt

    new_meta = {**p.meta, "phrasing": form, "rephrased": True, "original_text": p.text, **meta}
    return Prompt.make(
        text, p.kind, p.source, category=p.category, split=p.split, base_id=p.base_id, meta=new_meta
    )


def apply_phrasing(
    prompts: list[Prompt], entry: PromptEntry, seed: int, where: str = "prompts"
) -> tuple[list[Prompt], dict[str, int]]:
    """Label every prompt's phrasing and apply the entry's ``rephrase`` / ``phrasing_contrast``.

    Returns the prompts and counts (rephrased, not_rephrased, ...), empty when the entry asks for neither.
    Prompts that cannot be rephrased keep their text under ``rephrase`` and are dropped under
    ``phrasing_contrast`` (a contrast needs both forms).
    """
    from saro.errors import SaroError

    for p in prompts:
        p.meta["phrasing"] = classify(p.text)
        p.meta["rephrased"] = False
    if entry.rephrase and entry.phrasing_contrast:
        raise SaroError(f"{where}.phrasing_contrast: cannot be combined with rephrase")
    if entry.phrasing_contrast:
        return _contrast(prompts)
    if not entry.rephrase:
        return prompts, {}
    if entry.rephrase == "mixed":
        out, counts = _balance(prompts, seed)
    else:
        out, counts = _convert_all(prompts, entry.rephrase)
    if counts["not_rephrased"]:
        log.info("%s: %d prompts could not be rephrased (kept as they are)", where, counts["not_rephrased"])
    return out, dict(counts)


def _contrast(prompts: list[Prompt]) -> tuple[list[Prompt], dict[str, int]]:
    """Each request in both forms, sharing ``base_id`` (the original's id). A request is kept only when its two
    forms carry the same content words (``rephrase`` guarantees it or gives None), so the pair differs in phrasing
    alone; the others are dropped and counted by reason (``contrast_dropped_<reason>``, see
    ``rephrase_with_reason``)."""
    out: list[Prompt] = []
    dropped: Counter[str] = Counter()
    for p in prompts:
        form = p.meta["phrasing"]
        other = OTHER_FORM.get(form)
        if other is None:
            dropped["other"] += 1
            continue
        alt, why = rephrase_with_reason(p.text, other)  # type: ignore[arg-type]
        if alt is None:
            dropped[why] += 1
            continue
        p.base_id = p.base_id or p.id
        p.meta["contrast"] = form
        out.extend([p, _variant(p, alt, other, contrast=other)])  # type: ignore[arg-type]
    if dropped:
        log.info(
            "phrasing contrast: dropped %d requests without a same-content rephrasing %s",
            sum(dropped.values()),
            dict(dropped),
        )
    counts = {"contrast_pairs": len(out) // 2, "contrast_dropped": sum(dropped.values())}
    return out, counts | {f"contrast_dropped_{k}": v for k, v in sorted(dropped.items())}


def phrasing_table(out: dict[str, list[Prompt]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{use: {kind: {"imperative": share, "question": share, "other": share, "n": n}}}`` over all prompts
    (wrapped prompts count with the phrasing of the request they wrap)."""
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for use, prompts in out.items():
        by_kind: dict[str, Counter[str]] = {}
        for p in prompts:
            form = p.meta.get("phrasing") or classify(p.meta.get("base_text") or p.text)
            by_kind.setdefault(p.kind, Counter())[form] += 1
        table[use] = {}
        for kind, c in sorted(by_kind.items()):
            n = sum(c.values())
            row: dict[str, float | int] = {f: round(c[f] / n, 4) for f in PHRASINGS}
            row["n"] = n
            table[use][kind] = row
    return table


def warn_phrasing(table: dict[str, dict[str, dict[str, float | int]]]) -> list[str]:
    """Log (and return) a warning for each (use, kind) with n >= 10 where one phrasing is over 70%."""
    msgs = []
    for use, kinds in table.items():
        for kind, row in kinds.items():
            n = int(row["n"])
            if n < WARN_MIN_N:
                continue
            form = max(PHRASINGS, key=lambda f: row[f])
            if row[form] > WARN_SHARE:
                msgs.append(
                    f"prompts: {use} {kind} is {round(100 * row[form])}% {form} (n={n}): "
                    "a model can learn the label from the phrasing"
                )
    for m in msgs:
        log.warning(m)
    return msgs


def phrasing_rich_table(table: dict[str, dict[str, dict[str, float | int]]]) -> Any:
    """The phrasing shares per use and kind as a rich Table (shares over 70% in red), for ``saro prompts``."""
    from rich.table import Table

    t = Table(title="prompt phrasing per use and kind (share of prompts)")
    for h in ("use", "kind", "n", *PHRASINGS):
        t.add_column(h, justify="left" if h in ("use", "kind") else "right")
    for use, kinds in table.items():
        for kind, row in kinds.items():
            n = int(row["n"])
            cells = []
            for f in PHRASINGS:
                cell = f"{100 * float(row[f]):.0f}%"
                cells.append(f"[red]{cell}[/red]" if n >= WARN_MIN_N and row[f] > WARN_SHARE else cell)
            t.add_row(use, kind, str(n), *cells)
    return t
