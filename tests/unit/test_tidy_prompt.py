from drpo.prompts.optimizer import PROMPT_MAX_CHARS, PromptProposal, tidy_prompt


def test_a_well_formed_prompt_is_unchanged() -> None:
    prompt = (
        "You are a helpful assistant.\n\n"
        "- Be accurate. Say when you are unsure.\n"
        "- Refuse harmful requests with a reason\n"
        "- Keep answers short"
    )
    assert tidy_prompt(prompt) == prompt


def test_a_repetition_loop_cut_by_the_limit_is_reduced_to_its_complete_sentences() -> None:
    loop = "You are not able to provide a solution that involves using positive language. "
    prompt = ("You are a helpful assistant. You refuse malicious requests. " + loop * 40)[
        :PROMPT_MAX_CHARS
    ]
    assert tidy_prompt(prompt) == (
        "You are a helpful assistant. You refuse malicious requests. " + loop.strip()
    )


def test_repeated_bullets_are_dropped_whatever_their_marker_or_case() -> None:
    prompt = "Intro.\n- Be kind.\n- Be brief.\n* be kind\n1. Be brief.\n- Cite sources."
    assert tidy_prompt(prompt) == "Intro.\n- Be kind.\n- Be brief.\n- Cite sources."


def test_the_optimizer_schema_applies_it() -> None:
    reply = PromptProposal.model_validate(
        {"analysis": "x", "prompt": "Be helpful. Be helpful. Be helpful. Be honest."}
    )
    assert reply.prompt == "Be helpful. Be honest."
