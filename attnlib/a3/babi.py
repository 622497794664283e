"""Generated bAbI-style question-answering stories (Weston et al. 2015, tasks 1 and 2), for A3's
memory-network workload.

The paper evaluated A3 on an end-to-end memory network (MemN2N, Sukhbaatar et al. 2015) on bAbI; bAbI
does not ship offline here, so `generate` writes stories of the same two task families from a seeded
simulation of people moving between places and carrying objects:

- task 1, *single supporting fact*: "mary went to the kitchen . ... where is mary ?" -> the place of
  the person's last move (one sentence answers it);
- task 2, *two supporting facts*: "john picked up the football . john went to the garden . ...
  where is the football ?" -> the place of the object: where it was dropped, or where its holder is now
  (two sentences are needed: who has it, and where that person went).

Vocabulary and sentence templates follow bAbI's (names, places, verbs). Each example has its own
story of ``n_min``..``n_max`` sentences (A3's keys: one memory slot per sentence) and one question.
Everything is returned as integer arrays so that a model and a cache can use it directly.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PEOPLE", "PLACES", "OBJECTS", "generate", "Stories"]

PEOPLE = ("mary", "john", "sandra", "daniel")
PLACES = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen")
OBJECTS = ("football", "apple", "milk")
MOVE = ("moved to the", "went to the", "journeyed to the", "travelled to the", "went back to the")
GET = ("picked up the", "got the", "grabbed the", "took the")
DROP = ("dropped the", "discarded the", "put down the", "left the")


def _words(s: str) -> list[str]:
    return s.split()


def _story(rng, task: int, n_sent: int):
    """One story (list of sentences) and its question and answer, by simulation."""
    where = {}                       # person -> place
    holder = {o: None for o in OBJECTS}
    at = {o: None for o in OBJECTS}  # object -> place when lying somewhere
    sents = []
    while True:
        sents.clear(); where.clear()
        for o in OBJECTS:
            holder[o], at[o] = None, None
        for _ in range(n_sent):
            p = PEOPLE[rng.integers(len(PEOPLE))]
            r = rng.random()
            if task == 2 and p in where and r < 0.45:
                carried = [o for o in OBJECTS if holder[o] == p]
                here = [o for o in OBJECTS if holder[o] is None and at[o] == where[p]]
                free = [o for o in OBJECTS if holder[o] is None and at[o] is None]
                if carried and (r < 0.15 or not (here or free)):
                    o = carried[rng.integers(len(carried))]
                    sents.append(f"{p} {DROP[rng.integers(len(DROP))]} {o}")
                    holder[o], at[o] = None, where[p]
                    continue
                pool = here + free
                if pool:
                    o = pool[rng.integers(len(pool))]
                    sents.append(f"{p} {GET[rng.integers(len(GET))]} {o}")
                    holder[o], at[o] = p, None
                    continue
            place = PLACES[rng.integers(len(PLACES))]
            sents.append(f"{p} {MOVE[rng.integers(len(MOVE))]} {place}")
            where[p] = place
        if task == 1:
            if where:
                p = list(where)[rng.integers(len(where))]
                return list(sents), f"where is {p}", where[p]
        else:
            known = [o for o in OBJECTS if (holder[o] is not None and holder[o] in where) or at[o] is not None]
            if known:
                o = known[rng.integers(len(known))]
                place = at[o] if holder[o] is None else where[holder[o]]
                return list(sents), f"where is the {o}", place


class Stories(dict):
    """Arrays of a generated set: story (N, n_max, J) word ids (0 = padding), n_mem (N,) sentences per
    story, question (N, J), answer (N,) word id, task (N,) 1 or 2; plus vocab (list of words, id 0 = pad)."""


def generate(n_per_task: int, *, tasks=(1, 2), n_min: int = 10, n_max: int = 50, seed: int = 0,
             vocab: list[str] | None = None) -> Stories:
    """``n_per_task`` examples of each task in ``tasks`` (interleaved), stories of ``n_min``..``n_max``
    sentences (uniform), seeded. ``vocab``: reuse a training set's vocabulary (every generated word is
    in the fixed bAbI-like word list, so a test set's words are always known)."""
    if n_per_task < 1 or not 1 <= n_min <= n_max:
        raise ValueError(f"need n_per_task >= 1 and 1 <= n_min <= n_max, got {n_per_task}, {n_min}, {n_max}")
    if not set(tasks) <= {1, 2} or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of (1, 2), got {tasks}")
    rng = np.random.default_rng(seed)
    if vocab is None:
        words = sorted({w for phrase in (*PEOPLE, *PLACES, *OBJECTS, *MOVE, *GET, *DROP, "where is the") for w in _words(phrase)})
        vocab = ["<pad>", *words]
    idx = {w: i for i, w in enumerate(vocab)}
    ex = []
    for i in range(n_per_task):
        for t in tasks:
            sents, q, a = _story(rng, t, int(rng.integers(n_min, n_max + 1)))
            ex.append((t, sents, q, a))
    J = max(max(len(_words(s)) for s in e[1]) for e in ex)
    J = max(J, max(len(_words(e[2])) for e in ex))
    N = len(ex)
    story = np.zeros((N, n_max, J), dtype=np.int64)
    question = np.zeros((N, J), dtype=np.int64)
    for e_i, (t, sents, q, a) in enumerate(ex):
        for s_i, s in enumerate(sents):
            w = [idx[x] for x in _words(s)]
            story[e_i, s_i, :len(w)] = w
        w = [idx[x] for x in _words(q)]
        question[e_i, :len(w)] = w
    return Stories(story=story, n_mem=np.array([len(e[1]) for e in ex]), question=question,
                   answer=np.array([idx[e[3]] for e in ex]), task=np.array([e[0] for e in ex]), vocab=list(vocab),
                   text=[(e[1], e[2], e[3]) for e in ex])
