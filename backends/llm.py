"""One client per role: text and structured calls with caching, retries and call records.

Every call goes through `RoleClient.call`, which (1) looks the reply up in the reply cache, keyed
by everything that determines it, (2) otherwise asks the endpoint through LangChain's OpenAI
clients, whose SDK retries with backoff and honours Retry-After, and (3) reports a `CallRecord`
to the run store. A cached reply is recorded as a cache hit and never counted as spent tokens.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import openai
from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel

from drpo.backends.errors import EndpointDown, LLMCallError, StructuredOutputError
from drpo.backends.json_reply import ReplyParseError, parse_reply
from drpo.prompts.base import BasePrompt
from drpo.state.settings import RoleSettings

ModelT = TypeVar("ModelT", bound=BaseModel)
PARSE_ATTEMPTS = 3


@dataclass(frozen=True)
class CallRecord:
    """What the run store keeps about one model call (never the API key)."""

    role: str
    model: str
    endpoint: str
    outcome: str  # ok | cache_hit | invalid | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    cache_key: str = ""
    error: str = ""
    tag: str = ""
    started_at: float = 0.0


@dataclass(frozen=True)
class CachedReply:
    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int


class ReplyCache(Protocol):
    def get(self, key: str) -> CachedReply | None: ...

    def put(self, key: str, reply: CachedReply) -> None: ...


class CallSink(Protocol):
    def record_call(self, record: CallRecord) -> None: ...


@dataclass
class RoleClient:
    """A role's configured model plus the identity used in cache keys and records."""

    role: str
    settings: RoleSettings
    model: BaseLanguageModel[Any]
    endpoint_id: str
    cache: ReplyCache | None = None
    sink: CallSink | None = None
    share_cache: bool = True
    run_id: str = ""

    # ---- keys -------------------------------------------------------------------------------

    def cache_key(self, payload: dict[str, Any], sample_key: str) -> str:
        """Hash of everything that determines a reply.

        Greedy calls are shared across runs when caching is on; sampled calls, and every call
        when caching is off, are keyed by the run too, so a resumed run replays its own replies
        instead of paying for them again, while distinct samples never collide.
        """
        s = self.settings
        sampled = s.temperature > 0
        identity = {
            "endpoint": self.endpoint_id,
            "model": s.model,
            "mode": s.mode,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": s.seed,
            "payload": payload,
            "sample": sample_key if sampled else "",
            "scope": self.run_id if (sampled or not self.share_cache) else "",
        }
        blob = json.dumps(identity, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    # ---- calls ------------------------------------------------------------------------------

    async def text(
        self, prompt: BasePrompt, *, n: int = 1, sample_key: str = "", tag: str = ""
    ) -> list[str]:
        """Ask for `n` free-text replies to a base-model prompt."""
        if prompt.mode == "chat":
            messages: list[BaseMessage] = [SystemMessage(prompt.system), HumanMessage(prompt.user)]
            return await self.call(messages, n=n, sample_key=sample_key, tag=tag)
        return await self.call(
            prompt.text, n=n, sample_key=sample_key, tag=tag, stop=list(prompt.stop)
        )

    async def structured(
        self,
        system: str,
        user: str,
        schema: type[ModelT],
        *,
        n: int = 1,
        sample_key: str = "",
        tag: str = "",
    ) -> list[ModelT]:
        """Ask for `n` replies that validate against `schema`; malformed replies are retried.

        Raises StructuredOutputError when no reply parses after the retries.
        """
        json_schema = schema.model_json_schema()
        mode = self.settings.structured_output
        if mode != "json_schema":
            system += "\n\nThe reply must be one JSON object valid for this JSON schema:\n"
            system += json.dumps(json_schema, ensure_ascii=False)
        response_format: dict[str, Any] | None = None
        if mode == "json_schema":
            response_format = {
                "type": "json_schema",
                "json_schema": {
                    "name": json_schema.get("title", "Reply"),
                    "schema": json_schema,
                    "strict": True,
                },
            }
        elif mode == "json_object":
            response_format = {"type": "json_object"}

        results: list[ModelT] = []
        wanted = n
        last_error = last_reply = ""
        for attempt in range(PARSE_ATTEMPTS):
            messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(user)]
            if attempt and last_error:
                # A changed conversation gives a greedy model a real chance to answer differently.
                messages += [
                    AIMessage(last_reply),
                    HumanMessage(
                        f"That reply was not usable ({last_error}). Reply again with one complete "
                        "JSON object only, keeping every text field short."
                    ),
                ]
            texts = await self.call(
                messages,
                n=wanted,
                sample_key=f"{sample_key}#try{attempt}",
                tag=tag,
                response_format=response_format,
            )
            for text in texts:
                try:
                    results.append(parse_reply(text, schema))
                except ReplyParseError as exc:
                    last_error, last_reply = str(exc), text[:4000]
                    self._record_invalid(tag, last_error)
            wanted = n - len(results)
            if wanted <= 0:
                return results
        if results:
            return results
        raise StructuredOutputError(
            self.role, f"no valid reply after {PARSE_ATTEMPTS} tries: {last_error}"
        )

    async def call(
        self,
        prompt: Sequence[BaseMessage] | str,
        *,
        n: int = 1,
        sample_key: str = "",
        tag: str = "",
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> list[str]:
        """Make one logical call for `n` replies, through the cache."""
        payload: dict[str, Any] = {
            "prompt": prompt if isinstance(prompt, str) else [_message_json(m) for m in prompt],
            "n": n,
            "stop": stop or [],
            "response_format": response_format,
        }
        key = self.cache_key(payload, sample_key)
        started = time.time()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and len(hit.texts) >= n:
                self._record(
                    CallRecord(
                        self.role,
                        self.settings.model,
                        self.endpoint_id,
                        "cache_hit",
                        cache_key=key,
                        tag=tag,
                        started_at=started,
                    )
                )
                return list(hit.texts[:n])
        if n > 1 and not self.settings.supports_n:
            texts: list[str] = []
            prompt_tokens = completion_tokens = 0
            for index in range(n):
                more, p, c = await self._request(
                    prompt, 1, stop, response_format, key, tag, started, sample_index=index
                )
                texts += more
                prompt_tokens += p
                completion_tokens += c
        else:
            texts, prompt_tokens, completion_tokens = await self._request(
                prompt, n, stop, response_format, key, tag, started
            )
        if self.cache is not None:
            self.cache.put(key, CachedReply(tuple(texts), prompt_tokens, completion_tokens))
        return texts

    async def _request(
        self,
        prompt: Sequence[BaseMessage] | str,
        n: int,
        stop: list[str] | None,
        response_format: dict[str, Any] | None,
        key: str,
        tag: str,
        started: float,
        sample_index: int = 0,
    ) -> tuple[list[str], int, int]:
        kwargs: dict[str, Any] = {}
        if response_format is not None:
            # Sent as a raw body field: LangChain's typed `response_format` path raises on a
            # reply cut off at max_tokens, which must instead count as a malformed reply.
            kwargs["extra_body"] = {"response_format": response_format}
        if n > 1:
            kwargs["n"] = n
        seed = self.settings.seed
        if seed is not None:
            # Separate sampled calls must differ, so each gets its own derived seed.
            kwargs["seed"] = seed + sample_index
        t0 = time.perf_counter()
        try:
            result = await self.model.agenerate(
                [prompt] if isinstance(prompt, str) else [list(prompt)],  # type: ignore[list-item]
                stop=stop,
                **kwargs,
            )
        except (
            openai.APIConnectionError,
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.NotFoundError,
        ) as exc:
            message = _one_line(exc)
            self._record(
                CallRecord(
                    self.role,
                    self.settings.model,
                    self.endpoint_id,
                    "error",
                    latency=time.perf_counter() - t0,
                    cache_key=key,
                    error=message,
                    tag=tag,
                    started_at=started,
                )
            )
            raise EndpointDown(self.role, f"{self.endpoint_id}: {message}") from None
        except (openai.OpenAIError, ValueError) as exc:
            message = _one_line(exc)
            self._record(
                CallRecord(
                    self.role,
                    self.settings.model,
                    self.endpoint_id,
                    "error",
                    latency=time.perf_counter() - t0,
                    cache_key=key,
                    error=message,
                    tag=tag,
                    started_at=started,
                )
            )
            raise LLMCallError(self.role, message) from None
        texts, prompt_tokens, completion_tokens = _read_result(result)
        self._record(
            CallRecord(
                self.role,
                self.settings.model,
                self.endpoint_id,
                "ok",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency=time.perf_counter() - t0,
                cache_key=key,
                tag=tag,
                started_at=started,
            )
        )
        return texts, prompt_tokens, completion_tokens

    def _record_invalid(self, tag: str, error: str) -> None:
        self._record(
            CallRecord(
                self.role,
                self.settings.model,
                self.endpoint_id,
                "invalid",
                error=error,
                tag=tag,
                started_at=time.time(),
            )
        )

    def _record(self, record: CallRecord) -> None:
        if self.sink is not None:
            self.sink.record_call(record)


def _message_json(message: BaseMessage) -> dict[str, str]:
    return {"type": message.type, "content": str(message.content)}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _read_result(result: LLMResult) -> tuple[list[str], int, int]:
    generations = result.generations[0]
    texts = [g.text for g in generations]
    usage = (result.llm_output or {}).get("token_usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    if not usage and generations and isinstance(generations[0], ChatGeneration):
        meta = getattr(generations[0].message, "usage_metadata", None) or {}
        prompt_tokens = int(meta.get("input_tokens", 0))
        completion_tokens = int(meta.get("output_tokens", 0))
    return texts, prompt_tokens, completion_tokens
