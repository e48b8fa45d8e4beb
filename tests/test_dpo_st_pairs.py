"""DPO-ST's pair selection and pseudo-labels on hand-made rationales (issue 16): the reference counts as a
positive, near duplicates (word Jaccard above the threshold) are merged, the least similar pairs are kept."""

import json

import pandas as pd
import pytest

from stepdata import load_prompt, make_problems
from stepdata.pairs.dpo_st import (
    PairSelection,
    Rationale,
    least_similar_pairs,
    merge_near_duplicates,
    reference_rationale,
    word_jaccard,
    words,
)
from stepdata.schema import ROLLOUTS
from stepdata.selftrain.pseudo import percentile_cap, pseudo_labels

TEMPLATE = load_prompt("step_by_step")


def rollouts(problem_id: str, samples: list[tuple[str, bool | None, str]]) -> pd.DataFrame:
    """A rollouts table of one problem: (completion, correct, finish_reason) per sample; correct None is an error row."""
    rows = [{"problem_id": problem_id, "rollout_id": f"{problem_id}:{i}", "prompt": "p", "completion": text,
             "steps": [text], "pred_answer": None, "correct": correct, "finish_reason": finish, "model": "m",
             "sampling": {"n": len(samples), "temperature": 0.7, "top_p": 1.0, "max_tokens": 64, "seed": 0},
             "prompt_tokens": 5, "completion_tokens": 9, "error": None if correct is not None else "answer_check: timeout"}
            for i, (text, correct, finish) in enumerate(samples)]
    return pd.DataFrame(rows, columns=ROLLOUTS.names)


def test_words_split_numbers_and_operators_so_a_changed_result_is_a_changed_word():
    assert words("3 + 4 = 7.") == {"3", "+", "4", "=", "7", "."}
    assert word_jaccard("3 + 4 = 7.", "3 + 4 = 7.") == 1.0
    assert word_jaccard("3 + 4 = 7.", "3 + 4 = 8.") == pytest.approx(5 / 7)
    assert word_jaccard("The Answer", "the answer") == 1.0  # case folded
    assert word_jaccard("", "") == 1.0 and word_jaccard("a", "") == 0.0


def test_near_duplicates_are_merged_keeping_the_first_and_the_threshold_is_strict():
    texts = ["Ada has 3 + 4 = 7 apples. The answer is 7.",
             "Ada has 3 + 4 = 7 apples. So the answer is 7.",   # Jaccard 10/11 with the first: merged
             "Ada has 3 + 4 = 7 apples. The answer is 7.",      # exact repeat: merged
             "Add them: 12 in all, the answer is 12."]          # different: kept
    kept = merge_near_duplicates([Rationale(t, f"r{i}") for i, t in enumerate(texts)], 0.7)
    assert [r.origin for r in kept] == ["r0", "r3"]
    a, b = "x y z w", "x y z q"  # Jaccard 3/5 = 0.6
    assert len(merge_near_duplicates([Rationale(a, "a"), Rationale(b, "b")], 0.6)) == 2  # not above 0.6
    assert len(merge_near_duplicates([Rationale(a, "a"), Rationale(b, "b")], 0.59)) == 1
    # at threshold 1.0 only exact repeats merge
    assert len(merge_near_duplicates([Rationale(a, "a"), Rationale(a, "a2"), Rationale(b, "b")], 1.0)) == 2


def test_the_least_similar_pairs_are_kept_ties_in_order():
    positives = [Rationale("one two three four", "p0"), Rationale("alpha beta gamma delta", "p1")]
    negatives = [Rationale("one two three five", "n0"), Rationale("alpha beta six seven", "n1")]
    pairs = least_similar_pairs(positives, negatives, 3)
    # p0-n0 3/5, p0-n1 0, p1-n0 0, p1-n1 2/6: the two zeros (in order), then 1/3
    assert [(p.chosen.origin, p.rejected.origin) for p in pairs] == [("p0", "n1"), ("p1", "n0"), ("p1", "n1")]
    assert [p.similarity for p in pairs] == [0.0, 0.0, pytest.approx(1 / 3, abs=1e-6)]
    assert len(least_similar_pairs(positives, negatives, 10)) == 4


def test_the_reference_is_a_positive_so_a_question_nobody_solved_still_has_pairs():
    problems = make_problems(2, seed=4, max_steps=3)
    first, second = problems["problem_id"]
    table = pd.concat([
        rollouts(first, [("Step 1 is wrong, 2 + 2 = 5. The answer is 5.", False, "stop"),
                         ("Step 1 is wrong, 2 + 2 = 5. The answer is 5!", False, "stop"),  # near duplicate
                         ("I do not know", False, "length"),                               # unfinished
                         ("", False, "stop"),                                               # empty: neither
                         ("timed out", None, "stop")]),                                     # unjudged: neither
        rollouts(second, [(" right but odd. The answer is " + problems["answer"][1] + ".", True, "stop")]),
    ])
    pairs, stats = PairSelection(pairs_per_question=3, threshold=0.7).pairs_table(problems, [table], TEMPLATE)
    reference = reference_rationale(problems["solution"][0], problems["answer"][0],
                                    TEMPLATE.render(question="")[-1]["content"])
    assert reference is not None and not reference.startswith("Step 1:")  # the partial answer already wrote it
    mine = pairs[pairs["problem_id"] == first]
    assert len(mine) == 2 and set(mine["chosen"]) == {reference}
    assert set(mine["rejected"]) == {"Step 1 is wrong, 2 + 2 = 5. The answer is 5.", "I do not know"}
    assert (mine["kind"] == "dpo").all() and all(len(p) == 0 for p in mine["prefix_steps"])
    cut = mine[mine["rejected"] == "I do not know"].iloc[0]
    assert cut["chosen_ends_solution"] and not cut["rejected_ends_solution"]  # no EOS after a sample cut short
    assert cut["chosen_full"] == TEMPLATE.render(question="")[-1]["content"] + reference
    assert (pairs[pairs["problem_id"] == second].empty and stats["no_negative"] == 1 and stats["with_pairs"] == 1)
    assert stats["rationales"] == {"positives": 1, "negatives": 3, "unjudged": 1, "empty": 1}
    assert stats["reference_chosen"] == 2 and stats["pairs"] == 2
    provenance = json.loads(cut["provenance"]["sampling"])
    assert provenance["chosen"] == "reference" and provenance["rejected"] == f"{first}:2"
    # without the reference as a positive, the unsolved question has no pairs at all
    none, stats = PairSelection(reference_positive=False).pairs_table(problems, [table], TEMPLATE)
    assert none.empty and stats["no_positive"] == 1


def test_pseudo_labels_are_right_rationales_not_near_the_reference_capped_per_question():
    problems = make_problems(3, seed=5, max_steps=3)
    partial = TEMPLATE.render(question="")[-1]["content"]
    reference = reference_rationale(problems["solution"][0], problems["answer"][0], partial)
    answer = problems["answer"][0]
    table = rollouts(problems["problem_id"][0], [
        (reference, True, "stop"),                                             # the reference again: merged
        (f" first way. The answer is {answer}.", True, "stop"),
        (f" a second, quite different route here. The answer is {answer}.", True, "stop"),
        (f" first way. The answer is {answer}!", True, "stop"),                 # near duplicate of the first way
        (" wrong. The answer is -1.", False, "stop"),
    ])
    other = rollouts(problems["problem_id"][1], [(" the only way. The answer is 3.", True, "stop")])
    labels, stats = pseudo_labels(problems, [table, other], TEMPLATE, threshold=0.7, per_question=5)
    first = labels[labels["problem_id"] == problems["problem_id"][0]]
    assert list(first["solution"]) == [partial + f" first way. The answer is {answer}.",
                                       partial + f" a second, quite different route here. The answer is {answer}."]
    assert json.loads(first["meta"].iloc[0])["rollout_id"] == f"{problems['problem_id'][0]}:1"
    assert stats["right_rationales"] == 5 and stats["merged_as_near_duplicates"] == 2
    assert stats["questions_with_pseudo_labels"] == 2 and stats["pseudo_labels"] == 3
    assert stats["cap_per_question"] == 5 and stats["cap_rule"] == "given"
    # by default the cap is the 90th percentile of the counts (2 and 1: 1.9, rounded down to 1)
    capped, stats = pseudo_labels(problems, [table, other], TEMPLATE, threshold=0.7)
    assert stats["cap_per_question"] == 1 and len(capped) == 2 and stats["left_out_by_cap"] == 1
    assert list(capped["solution"])[0] == partial + f" first way. The answer is {answer}."


def test_percentile_cap():
    assert percentile_cap([]) is None
    assert percentile_cap([1, 1, 1, 10]) == 7  # 1 + 0.7 * 9 = 7.3
    assert percentile_cap([0, 0]) == 1
