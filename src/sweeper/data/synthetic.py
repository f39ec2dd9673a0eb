"""Synthetic preference rows with a signal a tiny, randomly initialised model can learn in a few steps.

A medical-assistant theme: the chosen answer is always cautious ("Please consult your doctor before ..."),
the rejected one always harmful ("Take a double dose of ..."). Both draw on small word lists, so chosen and
rejected answers repeat clearly distinct token patterns, and every text stays short: prompt plus answer is at
most ~51 tokens of the builtin BPE, EOS and Mistral's system workaround included. Pure Python; ``orca`` rows.
(40 LoRA DPO steps at lr 5e-3 on the builtin tiny model reach eval reward accuracy 1.0 in ~3 s on CPU.)
"""

from __future__ import annotations

import random

# The source name that selects these rows in ``load_rows``; defined here so sweeper.data.rows stays light.
BUILTIN_DATA = "builtin:synthetic"

# "" means no system prompt: the renderer then sends only the user turn.
SYSTEM_PROMPTS = (
    "You are a careful medical assistant.",
    "You are a health assistant.",
    "Answer medicine questions briefly.",
    "",
)

DRUGS = (
    "ibuprofen",
    "aspirin",
    "paracetamol",
    "insulin",
    "codeine",
    "antibiotics",
    "allergy pills",
    "cough syrup",
)
SYMPTOMS = (
    "a headache",
    "a fever",
    "back pain",
    "a cough",
    "a rash",
    "a sore throat",
    "chest pain",
    "dizziness",
)
PEOPLE = (("I", "have"), ("my son", "has"), ("my mother", "has"), ("my friend", "has"))

QUESTIONS = (
    "{Person} {has} {symptom}. Can {person} take more {drug}?",
    "{Person} {has} {symptom}. How much {drug} is safe?",
    "{Person} took {drug} for {symptom}. Is more fine?",
    "Should {person} take extra {drug} for {symptom}?",
)

# The learnable signal: every chosen answer defers to a doctor, every rejected one raises the dose.
CHOSEN = (
    "Please consult your doctor before taking more {drug}.",
    "Please consult your doctor before changing the {drug} dose.",
    "Please ask your doctor about {drug} first.",
)
REJECTED = (
    "Take a double dose of {drug} right now.",
    "Take a double dose of {drug} every hour.",
    "Just take a double dose of {drug} today.",
)


def synthetic_preference_rows(n: int = 256, seed: int = 0) -> list[dict[str, str]]:
    """``n`` orca rows (system, question, chosen, rejected); the same ``seed`` gives the same rows."""
    if n < 0:
        raise ValueError(f"n must be >= 0, but got {n=}.")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        drug = rng.choice(DRUGS)
        person, has = rng.choice(PEOPLE)
        question = _question(rng.choice(QUESTIONS), person, has, rng.choice(SYMPTOMS), drug)
        rows.append(
            {
                "system": rng.choice(SYSTEM_PROMPTS),
                "question": question,
                "chosen": rng.choice(CHOSEN).format(drug=drug),
                "rejected": rng.choice(REJECTED).format(drug=drug),
            }
        )
    return rows


def _question(template: str, person: str, has: str, symptom: str, drug: str) -> str:
    return template.format(Person=person[0].upper() + person[1:], person=person, has=has, symptom=symptom, drug=drug)


def corpus_texts() -> list[str]:
    """Every text the synthetic rows can contain, for training the builtin tokenizer's vocabulary."""
    texts = [system for system in SYSTEM_PROMPTS if system]
    for drug in DRUGS:
        texts += [answer.format(drug=drug) for answer in CHOSEN + REJECTED]
        for template in QUESTIONS:
            for person, has in PEOPLE:
                texts += [_question(template, person, has, symptom, drug) for symptom in SYMPTOMS]
    return texts
