"""One client per role: text and structured calls with caching, retries and call records.

Every call goes through `RoleClient.call`, which (1) looks the reply up in the reply cache, keyed
by everything that determines it, (2) otherwise asks the endpoint through LangChain's OpenAI
clients, whose SDK retries with backoff and honours Retry-After, and (3) reports a `CallRecord`
to the run store. A cached reply is recorded as a cache hit and never counted as spent tokens.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import openai
from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel

from drpo.backends.errors import (
    EndpointDown,
    EndpointRefused,
    LLMCallError,
    StructuredOutputError,
)
from drpo.backends.json_reply import ReplyParseError, parse_reply
from drpo.backends.logprobs import TokenLogprobs
from drpo.backends.providers import (
    ProviderProfile,
    effective_profile,
    extra_fields,
    static_kind,
)
from drpo.backends.refusals import describe_refusal
from drpo.backends.replicas import FAILOVER_ERRORS, ReplicaPool
from drpo.backends.structured_output import drop_null_optionals, reply_format
from drpo.prompts.base import QUERY_MARK, BasePrompt
from drpo.state.settings import RoleSettings

ModelT = TypeVar("ModelT", bound=BaseModel)
PARSE_ATTEMPTS = 3

# Which part of the schedule the current task belongs to, so every call record can be summed by
# stage and level. A context variable, because LangGraph runs each task in its own context.
_SCOPE: ContextVar[tuple[str, int | None]] = ContextVar("drpo_call_scope", default=("", None))


@contextmanager
def call_scope(stage: str, level: int | None = None) -> Iterator[None]:
    """Attribute the calls made inside the block to `stage` (examples/search/validate), `level`."""
    token = _SCOPE.set((stage, level))
    try:
        yield
    finally:
        _SCOPE.reset(token)


@dataclass(frozen=True)
class CallRecord:
    """What the run store keeps about one model call (never the API key)."""

    role: str
    model: str
    endpoint: str
    outcome: str  # ok | cache_hit | invalid | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of prompt_tokens, those the server took from its prefix cache (0 when it does not say).
    cached_tokens: int = 0
    latency: float = 0.0
    cache_key: str = ""
    error: str = ""
    tag: str = ""
    started_at: float = 0.0
    stage: str = ""
    level: int | None = None
    replica: str = field(default="")


@dataclass(frozen=True)
class CachedReply:
    """A stored reply: its texts, the tokens its call cost, and their logprobs if asked for."""

    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    # Per text, the token logprobs the server returned when they were asked for (else None).
    logprobs: tuple[TokenLogprobs | None, ...] | None = None

    def first(self, n: int) -> CachedReply:
        """The first `n` texts (with their logprobs); the token counts are the whole call's."""
        logprobs = self.logprobs[:n] if self.logprobs is not None else None
        return CachedReply(self.texts[:n], self.prompt_tokens, self.completion_tokens, logprobs)


@dataclass(frozen=True)
class ScoredReply(Generic[ModelT]):
    """A validated structured reply and the token logprobs it was written with, if any."""

    value: ModelT
    logprobs: TokenLogprobs | None = None


class ReplyCache(Protocol):
    """Where replies are cached, keyed by everything that determines them."""

    def get(self, key: str) -> CachedReply | None:
        """The cached reply for `key`, or None."""

    def put(self, key: str, reply: CachedReply, record: CallRecord | None = None) -> None:
        """Store `reply`; when `record` is given, record the paid call in the same transaction.

        A kill between storing a reply and recording its call would otherwise either lose the
        reply (paid again on resume) or lose the record (a paid call missing from the costs).
        """
        ...


class CallSink(Protocol):
    """Where each model call is recorded (the run store's `llm_calls`)."""

    def record_call(self, record: CallRecord) -> None:
        """Record one model call (never its key)."""


@runtime_checkable
class CallWatcher(Protocol):
    """A sink that also hears when each request is sent (the progress display's ETA does)."""

    def call_started(self, role: str, endpoint: str) -> None:
        """Hear that `role` just sent a request to `endpoint`."""
        ...


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
    # Several replicas of the endpoint; `model` is then the first replica's client.
    pool: ReplicaPool | None = None
    # The hash of a run's own rubric (empty for the built-in one, so old keys stay valid).
    rubric_hash: str = ""
    # What the endpoint accepts (structured output, n); the factory sets the detected one.
    profile: ProviderProfile | None = None
    # llama.cpp slots to pin calls to by their shared prefix (`id_slot`); 0: the server picks.
    pinned_slots: int = 0

    def __post_init__(self) -> None:
        if self.profile is None:
            self.profile = effective_profile(self.settings, static_kind(self.settings))

    @property
    def rules(self) -> ProviderProfile:
        """The endpoint's profile (always set after construction)."""
        assert self.profile is not None
        return self.profile

    def _counts_choices_by_logprobs(self, n: int) -> bool:
        """Whether `n` choices' completion tokens must be counted from their logprobs: llama.cpp
        reports only the first choice's in `usage`."""
        return n > 1 and self.rules.supports_n and self.rules.kind == "llamacpp"

    @property
    def gives_logprobs(self) -> bool:
        """Ask for token logprobs: the role allows it and its provider returns them."""
        return self.settings.logprobs and self.rules.logprobs

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
            **({"rubric": self.rubric_hash} if self.rubric_hash else {}),
        }
        if s.reasoning_effort is not None:
            identity["reasoning_effort"] = s.reasoning_effort
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
        replies = await self._structured_replies(system, user, schema, n, sample_key, tag, 0)
        return [reply.value for reply in replies]

    async def structured_with_logprobs(
        self, system: str, user: str, schema: type[ModelT], *, top_logprobs: int, tag: str = ""
    ) -> ScoredReply[ModelT]:
        """One structured reply with its token logprobs (None when the endpoint sent none)."""
        (reply,) = await self._structured_replies(system, user, schema, 1, "", tag, top_logprobs)
        return reply

    async def _structured_replies(
        self,
        system: str,
        user: str,
        schema: type[ModelT],
        n: int,
        sample_key: str,
        tag: str,
        top_logprobs: int,
    ) -> list[ScoredReply[ModelT]]:
        wire = reply_format(schema, self.rules)
        system += wire.system_suffix
        response_format = wire.response_format
        prepare = functools.partial(drop_null_optionals, model=schema) if wire.drops_nulls else None

        results: list[ScoredReply[ModelT]] = []
        wanted = n
        last_error = last_reply = ""
        for attempt in range(PARSE_ATTEMPTS):
            messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(user)]
            if attempt and last_error:
                # A changed conversation gives a greedy model a real chance to answer differently.
                messages += [
                    AIMessage(last_reply),
                    HumanMessage(
                        f"That reply was not usable ({last_error}). Reply again (attempt "
                        f"{attempt + 1} of {PARSE_ATTEMPTS}) with one complete JSON object only, "
                        "keeping every text field short."
                    ),
                ]
            reply = await self._call_reply(
                messages,
                n=wanted,
                sample_key=f"{sample_key}#try{attempt}",
                tag=tag,
                response_format=response_format,
                top_logprobs=top_logprobs,
            )
            logprobs = reply.logprobs or (None,) * len(reply.texts)
            for text, token_logprobs in zip(reply.texts, logprobs, strict=False):
                try:
                    results.append(ScoredReply(parse_reply(text, schema, prepare), token_logprobs))
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
        reply = await self._call_reply(
            prompt, n=n, sample_key=sample_key, tag=tag, stop=stop, response_format=response_format
        )
        return list(reply.texts)

    async def _call_reply(
        self,
        prompt: Sequence[BaseMessage] | str,
        *,
        n: int = 1,
        sample_key: str = "",
        tag: str = "",
        stop: list[str] | None = None,
        response_format: dict[str, Any] | None = None,
        top_logprobs: int = 0,
    ) -> CachedReply:
        payload: dict[str, Any] = {
            "prompt": prompt if isinstance(prompt, str) else [_message_json(m) for m in prompt],
            "n": n,
            "stop": stop or [],
            "response_format": response_format,
        }
        if top_logprobs:
            # Only then: keys of calls without logprobs stay what they were (their cache holds).
            payload["top_logprobs"] = top_logprobs
        key = self.cache_key(payload, sample_key)
        started = time.time()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and len(hit.texts) >= n:
                self._record(self._hit(key, tag, started))
                return hit.first(n)
        if n > 1 and not self.rules.supports_n:
            return await self._one_request_per_choice(
                prompt, n, stop, response_format, key, tag, started, top_logprobs
            )
        return await self._request(
            prompt, n, stop, response_format, key, tag, started, top_logprobs=top_logprobs
        )

    async def _one_request_per_choice(
        self,
        prompt: Sequence[BaseMessage] | str,
        n: int,
        stop: list[str] | None,
        response_format: dict[str, Any] | None,
        key: str,
        tag: str,
        started: float,
        top_logprobs: int,
    ) -> CachedReply:
        """`n` choices from an endpoint that gives one per request.

        One request per choice, all in flight at once (they are independent samples, and a
        server with parallel slots serves them side by side), each cached under its own key as
        soon as it arrives, so a crash after some replays those and pays the rest.
        """

        async def choice(index: int) -> CachedReply:
            part_key = hashlib.sha256(f"{key}/choice{index}".encode()).hexdigest()
            part = self.cache.get(part_key) if self.cache is not None else None
            if part is not None and part.texts:
                self._record(self._hit(part_key, tag, started))
                return part
            return await self._request(
                prompt, 1, stop, response_format, part_key, tag, started, index, top_logprobs
            )

        # Every sibling is awaited before an error propagates, so none is left running
        # (and unrecorded) when the run pauses.
        outcomes = await asyncio.gather(
            *(choice(index) for index in range(n)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        parts = [outcome for outcome in outcomes if isinstance(outcome, CachedReply)]
        answered = [part.first(1) for part in parts if part.texts]
        reply = CachedReply(
            tuple(part.texts[0] for part in answered),
            sum(part.prompt_tokens for part in parts),
            sum(part.completion_tokens for part in parts),
            tuple((part.logprobs or (None,))[0] for part in answered) if top_logprobs else None,
        )
        if self.cache is not None:
            self.cache.put(key, reply)
        return reply

    def _hit(self, key: str, tag: str, started: float) -> CallRecord:
        return self._new_record("cache_hit", cache_key=key, tag=tag, started_at=started)

    def _new_record(self, outcome: str, **fields: Any) -> CallRecord:
        stage, level = _SCOPE.get()
        return CallRecord(
            self.role,
            self.settings.model,
            self.endpoint_id,
            outcome,
            stage=stage,
            level=level,
            **fields,
        )

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
        top_logprobs: int = 0,
    ) -> CachedReply:
        """Send one request; store its reply and record the paid call before returning it."""
        kwargs = self._request_options(prompt, n, response_format, sample_index, top_logprobs)
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                result, replica = await self._generate(prompt, stop, kwargs, key, tag, started)
                break
            except (
                openai.APIConnectionError,
                openai.AuthenticationError,
                openai.PermissionDeniedError,
                openai.NotFoundError,
            ) as exc:
                message = self._describe(exc)
                self._record_error(key, tag, started, t0, message)
                raise EndpointDown(self.role, f"{self.endpoint_id}: {message}") from None
            except (openai.APIResponseValidationError, ValueError) as exc:
                # The server answered, but the body is garbled (cut JSON, a gateway's HTML
                # page). The SDK retries only transport errors and error statuses; a garbled
                # body is just as transient, so it gets the same number of retries here.
                message = f"unreadable reply: {_one_line(exc)}"
                self._record_error(key, tag, started, t0, message)
                if attempt + 1 < attempts:
                    await asyncio.sleep(backoff_seconds(attempt))
                    continue
                raise LLMCallError(
                    self.role, f"{message} (after {self.settings.retries} retries)"
                ) from None
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                # The same request would be refused again: no retry, and the line names the
                # setting that changes it.
                message, fix = describe_refusal(self.role, self.endpoint_id, self.rules, exc)
                self._record_error(key, tag, started, t0, message)
                raise EndpointRefused(self.role, message, fix) from None
            except openai.OpenAIError as exc:
                message = self._describe(exc)
                self._record_error(key, tag, started, t0, message)
                raise LLMCallError(self.role, message) from None
        return self._keep_reply(result, replica, key, tag, started, t0, top_logprobs)

    def _request_options(
        self,
        prompt: Sequence[BaseMessage] | str,
        n: int,
        response_format: dict[str, Any] | None,
        sample_index: int,
        top_logprobs: int,
    ) -> dict[str, Any]:
        """The request's keyword arguments beyond the messages, as this endpoint accepts them."""
        kwargs: dict[str, Any] = {}
        if top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        elif self._counts_choices_by_logprobs(n):
            kwargs["logprobs"] = True
        extra = extra_fields(self.settings, self.rules)
        if response_format is not None:
            # Sent as a raw body field: LangChain's typed `response_format` path raises on a
            # reply cut off at max_tokens, which must instead count as a malformed reply.
            extra["response_format"] = response_format
        if self.pinned_slots > 1:
            extra["id_slot"] = slot_for(prompt, self.pinned_slots)
        if extra:
            kwargs["extra_body"] = extra
        if n > 1:
            kwargs["n"] = n
        seed = self.settings.seed
        if seed is not None:
            # Separate sampled calls must differ, so each gets its own derived seed.
            kwargs["seed"] = seed + sample_index
        return kwargs

    def _keep_reply(
        self,
        result: Any,
        replica: str,
        key: str,
        tag: str,
        started: float,
        t0: float,
        top_logprobs: int,
    ) -> CachedReply:
        """Turn a paid result into the cached reply, storing it with its call record."""
        texts, usage = _read_result(result)
        if self._counts_choices_by_logprobs(len(texts)):
            usage = _usage_of_all_choices(usage, _read_logprobs(result))
        reply = CachedReply(
            tuple(texts),
            usage.prompt_tokens,
            usage.completion_tokens,
            _read_logprobs(result) if top_logprobs else None,
        )
        record = self._new_record(
            "ok",
            replica=replica,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            latency=time.perf_counter() - t0,
            cache_key=key,
            tag=tag,
            started_at=started,
        )
        if self.cache is not None and _same_object(self.cache, self.sink):
            # One store is both cache and call log (the run recorder): one transaction, so a
            # kill can never leave a paid call recorded without its reply, or the reverse.
            self.cache.put(key, reply, record)
        else:
            if self.cache is not None:
                self.cache.put(key, reply)
            self._record(record)
        return reply

    async def _generate(
        self,
        prompt: Sequence[BaseMessage] | str,
        stop: list[str] | None,
        kwargs: dict[str, Any],
        key: str,
        tag: str,
        started: float,
    ) -> tuple[LLMResult, str]:
        """Send the request, to the role's one endpoint or to one of its replicas.

        With replicas, a failing replica is marked unhealthy and the request moves on to the
        next one, each failure recorded; the last failure is raised like a single endpoint's.
        """
        batch: list[Any] = [prompt] if isinstance(prompt, str) else [list(prompt)]
        if self.pool is None:
            self._started()
            result = await self.model.agenerate(batch, stop=stop, **kwargs)  # type: ignore[attr-defined]
            return result, ""
        attempts = len(self.pool.replicas) + self.settings.retries
        tried: set[str] = set()
        for attempt in range(attempts):
            if len(tried) >= len(self.pool.replicas):
                await asyncio.sleep(backoff_seconds(attempt - len(self.pool.replicas)))
            async with self.pool.use(tried) as replica:
                t0 = time.perf_counter()
                self._started()
                try:
                    result = await replica.model.agenerate(batch, stop=stop, **kwargs)  # type: ignore[attr-defined]
                except FAILOVER_ERRORS as exc:
                    self.pool.mark_unhealthy(replica)
                    tried.add(replica.url)
                    if attempt + 1 == attempts:
                        raise
                    message = f"{self._describe(exc)}; trying another replica"
                    self._record_error(key, tag, started, t0, message, replica=replica.url)
                    continue
            self.pool.mark_healthy(replica)
            return result, replica.url
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _describe(self, exc: openai.OpenAIError) -> str:
        """One line saying what failed, after how many retries, and why."""
        retries = self.settings.retries
        after = f"after {retries} retr{'y' if retries == 1 else 'ies'}"
        if isinstance(exc, openai.APITimeoutError):
            return f"no reply within {self.settings.timeout:g} s ({after})"
        if isinstance(exc, openai.APIConnectionError):
            return f"endpoint unreachable: {_root_reason(exc)} ({after})"
        if isinstance(exc, openai.APIStatusError):
            retried = f", {after}" if exc.status_code == 429 or exc.status_code >= 500 else ""
            return f"HTTP {exc.status_code}{retried}: {_one_line(exc)}"
        return _one_line(exc)

    def _record_error(
        self, key: str, tag: str, started: float, t0: float, message: str, replica: str = ""
    ) -> None:
        self._record(
            self._new_record(
                "error",
                replica=replica,
                latency=time.perf_counter() - t0,
                cache_key=key,
                error=message,
                tag=tag,
                started_at=started,
            )
        )

    def _record_invalid(self, tag: str, error: str) -> None:
        self._record(
            self._new_record(
                "invalid",
                error=error,
                tag=tag,
                started_at=time.time(),
            )
        )

    def _record(self, record: CallRecord) -> None:
        if self.sink is not None:
            self.sink.record_call(record)

    def _started(self) -> None:
        # Each request sent is followed by exactly one `ok` or `error` record.
        if isinstance(self.sink, CallWatcher):
            self.sink.call_started(self.role, self.endpoint_id)


def slot_for(prompt: Sequence[BaseMessage] | str, slots: int) -> int:
    """The llama.cpp slot for a prompt: a stable hash of its shared prefix, modulo `slots`.

    A slot keeps the KV cache of the last prompt it processed, so calls that begin alike (one
    judge prompt per query's aspects, one base prompt per candidate) reuse it on the same slot
    and repay it in full on another. The shared prefix is the system message, or a completion
    prompt up to its query.
    """
    if isinstance(prompt, str):
        prefix = prompt.rsplit(QUERY_MARK, 1)[0]
    else:
        prefix = str(prompt[0].content) if prompt else ""
    digest = hashlib.sha256(prefix.encode()).digest()
    return int.from_bytes(digest[:8], "big") % slots


def _message_json(message: BaseMessage) -> dict[str, str]:
    return {"type": message.type, "content": str(message.content)}


def _same_object(first: object, second: object) -> bool:
    return first is second


def backoff_seconds(attempt: int) -> float:
    """The SDK's backoff for retry `attempt` (0-based): 0.5 s doubling to 8 s, less ≤25 % jitter."""
    return min(0.5 * 2.0**attempt, 8.0) * (1 - 0.25 * random.random())


def _root_reason(exc: BaseException) -> str:
    """The reason at the bottom of an exception chain ("Connection refused"), in one line.

    The SDK and LangChain wrap a refused connection as "Connection error."; the socket error
    underneath says what actually happened.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in reversed(chain):
        if isinstance(error, OSError) and error.errno is not None and error.errno > 0:
            return os.strerror(error.errno)
        text = _one_line(error)
        if text and text != type(error).__name__:
            return text
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _read_logprobs(result: LLMResult) -> tuple[TokenLogprobs | None, ...]:
    """Each choice's token logprobs (LangChain keeps them in generation_info), None if absent."""
    found: list[TokenLogprobs | None] = []
    for generation in result.generations[0]:
        logprobs = (generation.generation_info or {}).get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        found.append(content if isinstance(content, list) else None)
    return tuple(found)


@dataclass(frozen=True)
class _Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


def _usage_of_all_choices(usage: _Usage, logprobs: tuple[TokenLogprobs | None, ...]) -> _Usage:
    """`usage` with the completion tokens of every choice, one logprob per token, where each
    choice has them (else `usage` as reported)."""
    if not logprobs or any(content is None for content in logprobs):
        return usage
    written = sum(len(content) for content in logprobs if content is not None)
    return replace(usage, completion_tokens=max(written, usage.completion_tokens))


def _read_result(result: LLMResult) -> tuple[list[str], _Usage]:
    generations = result.generations[0]
    texts = [g.text for g in generations]
    usage = (result.llm_output or {}).get("token_usage") or {}
    if usage:
        # OpenAI's field, which llama.cpp and vLLM fill too: prompt tokens the server did not
        # have to process again because an earlier request shared their prefix.
        details = usage.get("prompt_tokens_details") or {}
        return texts, _Usage(
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            int(details.get("cached_tokens") or 0),
        )
    if generations and isinstance(generations[0], ChatGeneration):
        meta = getattr(generations[0].message, "usage_metadata", None) or {}
        return texts, _Usage(
            int(meta.get("input_tokens", 0)),
            int(meta.get("output_tokens", 0)),
            int((meta.get("input_token_details") or {}).get("cache_read") or 0),
        )
    return texts, _Usage()
