import time

import pytest

from stepdata import extract_answer
from stepdata.answers import last_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the result is \boxed{\frac{1}{\sqrt{2}}} indeed", r"\frac{1}{\sqrt{2}}"),
        (r"\boxed{1} then later \boxed{ {2, 3} }", "{2, 3}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5 is it", "5"),
        ("Janet sells 9 eggs.\n#### 18", "18"),
        ("#### 1,234\n", "1,234"),
        ("Step 3: 4 + 5 = 9.\nThe answer is 9.", "9"),
        ("The answer is $3.5$.", "3.5"),
        ("Final Answer: The final answer is $28 \\%$. I hope it is correct.", "28 \\%"),
        ("answer: 42 dollars", "42 dollars"),
        ("I computed 3 then 4 and finally 12.5 apples", "12.5"),
        ("no digits here", None),
        ("", None),
        (None, None),
    ],
)
def test_extraction(text, expected):
    assert extract_answer(text) == expected


def test_priority_boxed_over_stated_over_last_number():
    text = "The answer is 4. Actually \\boxed{5}. Then 6."
    assert extract_answer(text) == "5"
    assert extract_answer("The answer is 4. Then 6 more.") == "4"


def test_last_number_fallback_can_be_turned_off():
    assert extract_answer("we get 12 apples", last_number_fallback=False) is None
    assert extract_answer("we get 12 apples") == "12"


def test_unbalanced_and_huge_inputs_are_fast():
    unbalanced = r"\boxed{" * 5000 + "1"
    huge = "Step 1: " + "1 + 1 = 2. " * 10_000 + r"\boxed{" + "9" * 100_000 + "}"
    start = time.perf_counter()
    assert last_boxed(unbalanced) is None
    assert extract_answer(huge) == "9" * 100_000
    assert extract_answer("{" * 50_000 + "The answer is 3") == "3"
    assert time.perf_counter() - start < 2.0
