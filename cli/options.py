"""The commands' options as `Annotated` aliases, so that a command's signature is one line a flag.

Shared aliases keep a flag that several commands take spelled and explained the same way; the
per-command ones hold a long flag's help, which ruff would otherwise wrap over three or four
lines. Defaults stay with each command (`store: StoreOption = DEFAULT_STORE`), where the
reader of its signature looks for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# ---- shared by several commands ---------------------------------------------------------------

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file")]
PresetOption = Annotated[str | None, typer.Option(help="default, quick or paper")]
StoreOption = Annotated[Path, typer.Option(help="run store database")]
# Where a command's store comes from its settings unless the flag is given.
StoreOverrideOption = Annotated[Path | None, typer.Option(help="run store database")]
HostOption = Annotated[str, typer.Option(help="interface to listen on")]
PortOption = Annotated[int, typer.Option(help="TCP port; 0 picks a free one", min=0, max=65535)]

# ---- drpo approve / reject / edit / stop ------------------------------------------------------

CandidateOption = Annotated[str, typer.Option("--candidate", help="the candidate under review")]
CommentOption = Annotated[str, typer.Option(help="why (kept with the decision)")]

# ---- drpo optimize ----------------------------------------------------------------------------

RubricOption = Annotated[
    Path | None, typer.Option(help="rubric file (TOML or JSON): aspects, weights, when")
]
MetricOption = Annotated[
    str | None, typer.Option(help="programmatic metric 'module:function' scoring in [0, 1]")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="don't reuse other runs' replies")]
ReviewPolicyOption = Annotated[
    str | None, typer.Option("--review", help="human approval: none, final, every, threshold")
]
OptimizeSetOption = Annotated[
    list[str] | None, typer.Option("--set", help="any setting, e.g. --set judge.max_tokens=300")
]
BudgetTokensOption = Annotated[
    int | None, typer.Option(help="pause once the run has spent this many tokens")
]
BudgetCallsOption = Annotated[
    int | None, typer.Option(help="pause once the run has made this many paid calls")
]
BudgetTimeOption = Annotated[
    str | None, typer.Option(help="pause after this long running: 90, 90s, 15m, 2h")
]
EstimateOnlyOption = Annotated[
    bool,
    typer.Option("--estimate", help="print the calls and tokens the run needs, and exit"),
]
JudgeCheckOption = Annotated[
    int | None,
    typer.Option("--judge-check", min=1, help="first judge this many judge-check pairs"),
]
NoAdaptOption = Annotated[
    bool,
    typer.Option(
        "--no-adapt",
        help="run the default search in full even when the measured speed says it takes "
        "longer than time_target_minutes",
    ),
]

# ---- drpo serve -------------------------------------------------------------------------------

ServedPromptFileOption = Annotated[
    Path | None,
    typer.Option("--prompt-file", help="serve a `drpo export RUN --format json` file"),
]
AuthTokenEnvOption = Annotated[
    str | None,
    typer.Option(help="require 'Authorization: Bearer <token>'; NAME of the variable holding it"),
]
ServeConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        help="requests in flight to the base model; more wait in line "
        "(default: the embedded server's slots, or the run's max_concurrency)",
        min=1,
    ),
]
MaxBodyBytesOption = Annotated[
    int, typer.Option(help="largest request body accepted (413 above)", min=1)
]
ServedModelNameOption = Annotated[
    str | None, typer.Option(help="the model name clients send (default: drpo-RUN)")
]
BaseEndpointOption = Annotated[
    str | None, typer.Option(help="base model endpoint instead of the run's ('embedded' too)")
]
BaseModelOption = Annotated[str | None, typer.Option(help="base model name instead of the run's")]
BaseApiKeyEnvOption = Annotated[
    str | None, typer.Option(help="NAME of the variable holding the base endpoint's key")
]
BaseModelPathOption = Annotated[
    Path | None, typer.Option(help="GGUF file for an embedded base model")
]
LogLevelOption = Annotated[str, typer.Option(help="uvicorn log level (info logs every request)")]

# ---- drpo eval --------------------------------------------------------------------------------

EvalRunOption = Annotated[
    str | None, typer.Option("--run", help="the DRPO run whose prompt is the drpo condition")
]
ConditionsOption = Annotated[
    str | None,
    typer.Option(help="comma-separated: plain, urial, drpo, file (default: all available)"),
]
EvalPromptFileOption = Annotated[
    Path | None,
    typer.Option(
        "--prompt-file", help="the file condition: a drpo export (.json) or a text prompt"
    ),
]
QueriesOption = Annotated[
    str,
    typer.Option(help="benchmarks with counts (mtbench:30,harmbench:10) or a query file"),
]
PairwiseOption = Annotated[
    str | None,
    typer.Option(help="pairs X:Y to compare (default: drpo against the others; 'none')"),
]
EvalSetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="any setting, e.g. --set judge.model=gpt-4o"),
]
ReportOption = Annotated[
    Path | None, typer.Option("--report", help="write an HTML + Markdown report here")
]
EvalDataDirOption = Annotated[
    Path | None, typer.Option(help="pulled benchmarks (default $DRPO_DATA_DIR)")
]
MetricsOption = Annotated[
    str,
    typer.Option(
        help="judge (absolute + pairwise LLM judging), pairwise (pairwise only) and/or "
        "refusal (refusal and over-refusal rates, no judge call)"
    ),
]
