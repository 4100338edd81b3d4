"""Human labels on a run's own answers: the instrument (the refusal judge) measured where its numbers come from.

``saro label RUN`` draws a blind sample of the run's eval answers, stratified by model and prompt group
(``items``), lets a person label them in the terminal (``terminal``) or in a local HTML page (``page``), or
through a JSONL export and import (``transfer``), and keeps the labels beside the run in ``labels/labels.jsonl``
(``store``). The report stage then shows the judge's agreement with the labels and the rates recomputed from them
(``agreement``, rendered by ``render``); ``testset`` writes the labelled answers as a judge test set.
"""
