"""Provider profiles, detection, reply schemas per dialect, and refusal lines."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from provider_rules import _strict_problem
from pydantic import BaseModel, Field
from stub_server import StubServer

from drpo.backends.json_reply import ReplyParseError, parse_reply
from drpo.backends.providers import (
    detect_provider,
    effective_profile,
    extra_fields,
    is_reasoning_model,
    kind_from_host,
    model_options,
    profile_for,
    resolve_kind,
    static_kind,
)
from drpo.backends.refusals import describe_refusal
from drpo.backends.structured_output import (
    drop_null_optionals,
    openai_strict_schema,
    reply_format,
    wire_schema,
)
from drpo.evals.templates import PairVerdict
from drpo.prompts.aspects import CATALOGUE
from drpo.prompts.judge import judgement_schema
from drpo.prompts.optimizer import ExampleRewrite, PromptProposal
from drpo.prompts.selector import AspectChoice
from drpo.state.settings import ConfigError, RoleSettings

REPLY_MODELS = [
    AspectChoice,
    PromptProposal,
    ExampleRewrite,
    PairVerdict,
    judgement_schema(CATALOGUE[:3]),
]


@pytest.mark.parametrize("model", REPLY_MODELS, ids=lambda m: m.__name__)
def test_every_reply_schema_is_in_openais_strict_subset_only_after_conversion(
    model: type[BaseModel],
) -> None:
    assert _strict_problem(openai_strict_schema(model), ()) is None
    # pydantic's own schema is not (a length keyword, or an optional field not required).
    assert _strict_problem(model.model_json_schema(), ()) is not None


def test_an_optional_field_is_sent_nullable_and_its_null_means_the_default() -> None:
    reply = '{"analysis": "ok", "aspects": ["Clarity"], "new_aspects": null}'
    prepare = lambda data: drop_null_optionals(data, AspectChoice)  # noqa: E731
    assert parse_reply(reply, AspectChoice, prepare).new_aspects == []
    with pytest.raises(ReplyParseError):
        parse_reply(reply, AspectChoice)  # without the strict dialect a null stays invalid


def test_limits_dropped_from_the_wire_are_still_enforced_locally() -> None:
    too_long = json.dumps({"analysis": "x" * 301, "prompt": "a long enough prompt"})
    assert "maxLength" not in json.dumps(openai_strict_schema(PromptProposal))
    with pytest.raises(ReplyParseError, match="analysis"):
        parse_reply(too_long, PromptProposal, lambda d: drop_null_optionals(d, PromptProposal))


class Essay(BaseModel):
    title: str = Field(max_length=80)
    body: str = Field(max_length=9000)


def test_llamacpp_caps_string_lengths_at_2000_and_leaves_smaller_caps() -> None:
    schema = wire_schema(Essay, profile_for("llamacpp", "local"))
    assert schema["properties"]["body"]["maxLength"] == 2000
    assert schema["properties"]["title"]["maxLength"] == 80
    # Every other dialect but OpenAI's sends pydantic's schema untouched.
    assert wire_schema(Essay, profile_for("vllm", "m")) == Essay.model_json_schema()


def test_anthropic_gets_the_schema_in_the_prompt_and_no_response_format() -> None:
    fmt = reply_format(PairVerdict, profile_for("anthropic", "claude-sonnet-4-5"))
    assert fmt.response_format is None
    assert json.loads(fmt.system_suffix.split("schema:\n", 1)[1]) == PairVerdict.model_json_schema()


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("gpt-5-mini", True),
        ("o3", True),
        ("o4-mini", True),
        ("openai/gpt-5", True),
        ("gpt-5-chat-latest", False),
        ("gpt-4o-mini", False),
        ("omni-7b", False),
    ],
)
def test_reasoning_models_are_told_by_name(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


def test_a_reasoning_model_gets_no_sampling_knobs_and_room_to_think() -> None:
    settings = RoleSettings(
        endpoint="https://api.openai.com/v1", model="o3", max_tokens=500, reasoning_effort="low"
    )
    profile = effective_profile(settings, "openai")
    options = model_options(settings, profile)
    assert options["temperature"] is None and options["top_p"] is None
    assert options["max_tokens"] == 500 + 2048 and options["reasoning_effort"] == "low"
    assert not profile.supports_n and not profile.logprobs
    chat = model_options(
        settings.model_copy(update={"model": "gpt-4o-mini"}), profile_for("openai", "gpt-4o-mini")
    )
    assert chat == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 500}


def test_ollama_gets_its_length_cap_as_max_tokens() -> None:
    settings = RoleSettings(endpoint="http://gpu:11434/v1", model="qwen3", max_tokens=300)
    profile = profile_for("ollama", "qwen3")
    assert model_options(settings, profile)["max_tokens"] is None
    assert extra_fields(settings, profile) == {"max_tokens": 300}


def test_settings_override_the_profile() -> None:
    settings = RoleSettings(
        endpoint="http://x/v1", model="m", structured_output="json_object", supports_n=False
    )
    profile = effective_profile(settings, "vllm")
    assert (profile.structured_output, profile.supports_n) == ("json_object", False)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://my-res.openai.azure.com/openai/v1", "azure"),
        ("https://api.anthropic.com/v1", "anthropic"),
        ("http://10.0.0.5:8000/v1", None),
    ],
)
def test_hosts_that_say_what_they_are(url: str, kind: str | None) -> None:
    assert kind_from_host(url) == kind


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("llamacpp", "llamacpp"), ("vllm", "vllm"), ("ollama", "ollama"), (None, "generic")],
)
def test_servers_are_detected_from_their_own_probe(mode: str | None, kind: str) -> None:
    detect_provider.cache_clear()
    with StubServer(provider=mode) as stub:
        assert detect_provider(stub.base_url, "sk-x") == kind


def test_a_setting_that_contradicts_the_endpoint_is_refused() -> None:
    detect_provider.cache_clear()
    with StubServer(provider="ollama") as stub:
        settings = RoleSettings(endpoint=stub.base_url, model="m", provider="vllm")
        with pytest.raises(ConfigError, match="reports itself as 'ollama'"):
            resolve_kind("judge", settings, "sk-x")
        generic = settings.model_copy(update={"provider": "generic"})
        assert resolve_kind("judge", generic, "sk-x") == "generic"  # "don't assume" is no claim
    with pytest.raises(ConfigError, match="contradicts endpoint 'embedded'"):
        resolve_kind("base", RoleSettings(provider="openai"), "")


def bad_request(body: dict[str, object]) -> openai.BadRequestError:
    response = httpx.Response(400, request=httpx.Request("POST", "http://x/v1/chat/completions"))
    return openai.BadRequestError("Error code: 400", response=response, body=body)


def test_a_refusal_names_the_provider_message_and_the_setting_that_fixes_it() -> None:
    error = bad_request(
        {"message": "Invalid schema for response_format 'X': 'maxLength' is not permitted.",
         "type": "invalid_request_error", "param": "response_format", "code": None}
    )  # fmt: skip
    line, fix = describe_refusal(
        "judge", "https://api.openai.com/v1", profile_for("openai", "gpt-4o"), error
    )
    assert line == (
        "https://api.openai.com/v1 (openai) refused the request (HTTP 400): Invalid schema for "
        "response_format 'X': 'maxLength' is not permitted; to fix it set "
        'judge.structured_output = "json_object"'
    )
    assert fix == "judge.structured_output=json_object"
    # Anthropic's body nests the error one level deeper; its `n` refusal points at supports_n.
    nested = bad_request(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "n: must be exactly 1"},
        }
    )
    line, fix = describe_refusal(
        "base", "https://api.anthropic.com/v1", profile_for("anthropic", "c"), nested
    )
    assert "n: must be exactly 1" in line and fix == "base.supports_n=false"


def test_only_the_embedded_llamacpp_is_sent_n_unless_the_role_says() -> None:
    # Older llama-servers refuse `n` > 1; the installed one shares the prompt's processing.
    remote = RoleSettings(endpoint="http://gpu:8080/v1", model="m", provider="llamacpp")
    assert not effective_profile(remote, static_kind(remote)).supports_n
    embedded = RoleSettings(endpoint="embedded", model="qwen2.5-coder-1.5b")
    assert effective_profile(embedded, static_kind(embedded)).supports_n
    opted_out = embedded.model_copy(update={"supports_n": False})
    assert not effective_profile(opted_out, static_kind(opted_out)).supports_n
