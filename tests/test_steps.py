from hypothesis import given, settings
from hypothesis import strategies as st

from stepdata import join_steps, split_steps, step_body
from stepdata.steps import detect_mode, step_label

MODES = ["auto", "markers", "paragraphs", "lines"]

# Text made of the pieces that matter to the splitter: markers, newlines, blank lines, words.
pieces = st.sampled_from(["Step 1:", "Step 2.", "**Step 3:**", "step 10)", "\n", "\n\n", " ", "\t", "x = 2", "a", "## Step 4:"])
structured_text = st.lists(pieces, max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=300), structured_text), mode=st.sampled_from(MODES))
def test_join_gives_back_the_text_exactly(text, mode):
    steps = split_steps(text, mode)
    assert join_steps(steps) == text
    if text:
        assert all(steps), "no step may be empty"
    # whitespace-only steps exist only when the whole text is whitespace
    if text.strip():
        assert all(s.strip() for s in steps)


def test_markers_keep_marker_with_its_step_and_preamble_as_own_step():
    completion = " First, 3 + 4 = 7.\nStep 2: Then 7 * 2 = 14.\nStep 3: The answer is 14."
    steps = split_steps(completion)
    assert steps == [" First, 3 + 4 = 7.\n", "Step 2: Then 7 * 2 = 14.\n", "Step 3: The answer is 14."]
    assert step_body(steps[1]) == "Then 7 * 2 = 14."


def test_marker_variants_and_mid_line_mentions():
    text = "**Step 1:** a\n### Step 2) b\nstep 3. c, as in Step 1: not a new step\n"
    steps = split_steps(text)
    assert len(steps) == 3
    assert steps[2].startswith("step 3.")


def test_paragraphs_and_lines():
    text = "We add.\nThen more.\n\nNext part.\n \n\nLast."
    assert detect_mode(text) == "paragraphs"
    assert split_steps(text) == ["We add.\nThen more.\n\n", "Next part.\n \n\n", "Last."]
    assert split_steps("a\nb\n\nc", "lines") == ["a\n", "b\n\n", "c"]
    assert detect_mode("one line\nanother") == "lines"


def test_leading_whitespace_joins_the_first_step_and_empty_text():
    assert split_steps("\n\nStep 1: a\nStep 2: b") == ["\n\nStep 1: a\n", "Step 2: b"]
    assert split_steps("") == []
    assert split_steps("   ") == ["   "]


def test_step_labels_are_one_based_for_people():
    assert step_label(0) == "Step 1"
