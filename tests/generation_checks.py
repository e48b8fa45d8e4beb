"""Checks shared by the tests of every generation backend."""

from stepdata.generation import GenerationRequest, SamplingConfig


def chat(rid, question, partial=None):
    messages = [{"role": "user", "content": question}]
    if partial is not None:
        messages.append({"role": "assistant", "content": partial})
    return GenerationRequest.chat(rid, messages)


def texts(results):
    return [[c.text for c in r.completions] for r in results]


def continuation_is_exact(generator, question: str, max_tokens: int = 24) -> int:
    """Greedy from a partial answer must give exactly the tokens greedy gave after that partial answer.

    Returns how many cut points were checked (cuts where the text round-trips to the same tokens).
    """
    greedy = SamplingConfig(temperature=0, max_tokens=max_tokens, seed=0)
    full = generator.generate([chat("full", question, partial="Step 1:")], greedy)[0]
    tokenizer = generator.tokenizer
    prompt_ids = tokenizer(full.prompt_text, add_special_tokens=False).input_ids
    generated = full.completions[0].token_ids
    checked = 0
    for cut in range(1, len(generated) - 1):
        prefix = tokenizer.decode(generated[:cut], skip_special_tokens=True)
        if tokenizer(full.prompt_text + prefix, add_special_tokens=False).input_ids != prompt_ids + generated[:cut]:
            continue  # this cut splits a character or merges across it: not a text boundary
        rest = generator.generate([chat("cont", question, partial="Step 1:" + prefix)],
                                  SamplingConfig(temperature=0, max_tokens=len(generated) - cut, seed=0))[0]
        assert rest.prompt_text == full.prompt_text + prefix
        assert rest.completions[0].token_ids == generated[cut:]
        checked += 1
        if checked == 3:
            break
    return checked
