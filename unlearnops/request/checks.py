"""The data checks: a great-expectations suite over one DataFrame per loaded list.

Each row is one item (split, index, hashes, lengths). The texts themselves never enter a
DataFrame, so neither a great-expectations result nor our report can carry them: overlap and
duplicate checks compare SHA-256 hashes, emptiness and size checks compare lengths.

Near-duplicates are found by hashing a normalised text (NFKC, casefold, punctuation and
symbols removed, whitespace collapsed): a retain text that differs from a forget text only in
case, punctuation or spacing has the same hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .loading import ResolvedData
from .report import Check

# PrivLeak's AUC compares every forget text with every holdout text: its resolution is
# 1/(n_f * n_h) and its standard error is 0.13 at 10 + 10 texts (Hanley-McNeil, AUC 0.5),
# so below 10 of each a PrivLeak of +-30% is noise. docs/requests.md has the numbers.
MIN_PRIVLEAK_TEXTS = 10
MAX_TEXT_CHARS = 1_000_000  # far beyond any training sequence; larger means a file of files

_PUNCTUATION = re.compile(r"[^\w\s]|_")

TEXT_TABLES = ("forget_texts", "privleak_forget", "retain_texts", "holdout_texts")
QA_TABLES = ("forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl")
OVERLAP_TABLES = ("retain_texts", "holdout_texts")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def forget_overlap(texts: list[str], forget_texts: list[str]) -> list[int]:
    """Indices of `texts` that are forget texts, identically or up to case, punctuation and spacing:
    what the overlap rules below refuse, for data outside a request (quantization calibration)."""
    forget = {sha256_text(normalise(text)) for text in forget_texts if normalise(text)}
    return [index for index, text in enumerate(texts) if normalise(text) and sha256_text(normalise(text)) in forget]


@dataclass(frozen=True)
class Table:
    name: str  # the ResolvedData attribute
    field: str  # how reports name it (the request field, or corpus field:file)
    groups: frozenset[str]  # which rule groups apply
    frame: Any  # pandas.DataFrame


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    expectation: Callable[[Any, dict], Any]  # (gx.expectations module, context) -> Expectation
    checks: str  # what a pass means
    problem: str  # "{n} of {total} items ..." when it fails
    fix: str


RULES: list[Rule] = [
    Rule("non_empty", "texts", lambda gxe, ctx: gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=1),
         "texts are non-empty", "{n} of {total} texts are empty or whitespace only", "fill them in or remove them"),
    Rule("max_length", "texts", lambda gxe, ctx: gxe.ExpectColumnValuesToBeBetween(column="chars", max_value=MAX_TEXT_CHARS),
         f"texts have at most {MAX_TEXT_CHARS:,} characters", f"{{n}} of {{total}} texts are longer than {MAX_TEXT_CHARS:,} characters",
         "split them into shorter texts"),
    Rule("no_duplicates", "texts", lambda gxe, ctx: gxe.ExpectColumnValuesToBeUnique(column="sha256"),
         "no text appears twice", "{n} of {total} texts are duplicates of another text in the same list", "keep one copy of each"),
    Rule("no_forget_overlap", "overlap",
         lambda gxe, ctx: gxe.ExpectColumnValuesToNotBeInSet(column="sha256", value_set=ctx["forget_sha256"]),
         "no text is also a forget text", "{n} of {total} texts are also forget texts (identical)",
         "remove them from this list: a text cannot be both forgotten and kept"),
    Rule("no_forget_near_duplicates", "overlap",
         lambda gxe, ctx: gxe.ExpectColumnValuesToNotBeInSet(column="norm_sha256", value_set=ctx["forget_norm_sha256"]),
         "no text is a near-duplicate of a forget text", "{n} of {total} texts equal a forget text up to case, punctuation and spacing",
         "remove them from this list: a text cannot be both forgotten and kept"),
    Rule("no_retain_near_duplicates", "holdout",
         lambda gxe, ctx: gxe.ExpectColumnValuesToNotBeInSet(column="norm_sha256", value_set=ctx["retain_norm_sha256"]),
         "no holdout text is (up to case, punctuation and spacing) a retain text",
         "{n} of {total} holdout texts are (up to case, punctuation and spacing) retain texts",
         "remove them: the model trains on retain texts, so these are not held out"),
    Rule("privleak_size", "privleak", lambda gxe, ctx: gxe.ExpectTableRowCountToBeBetween(min_value=ctx["min_privleak_texts"]),
         "enough texts for PrivLeak (at least {minimum})", "{total} texts; PrivLeak needs at least {minimum} forget and {minimum} holdout texts",
         "add texts (the membership AUC is noise with fewer; see docs/requests.md)"),
    Rule("question_non_empty", "qa", lambda gxe, ctx: gxe.ExpectColumnValuesToBeBetween(column="question_chars", min_value=1),
         "questions are non-empty", "{n} of {total} QA items have an empty question", "fill them in or remove the items"),
    Rule("answer_non_empty", "qa", lambda gxe, ctx: gxe.ExpectColumnValuesToBeBetween(column="answer_chars", min_value=1),
         "answers are non-empty", "{n} of {total} QA items have an empty answer", "fill them in or remove the items"),
    Rule("prompt_non_empty", "verbmem", lambda gxe, ctx: gxe.ExpectColumnValuesToBeBetween(column="prompt_chars", min_value=1),
         "verbmem prompts are non-empty", "{n} of {total} verbmem items have an empty prompt", "fill them in or remove the items"),
    Rule("continuation_non_empty", "verbmem", lambda gxe, ctx: gxe.ExpectColumnValuesToBeBetween(column="gt_chars", min_value=1),
         "verbmem continuations (gt) are non-empty", "{n} of {total} verbmem items have an empty gt", "fill them in or remove the items"),
]


# ---- DataFrames: one row per item, hashes and lengths only --------------------------------------


def _texts_frame(field: str, texts: list[str]):
    import pandas as pd

    return pd.DataFrame({
        "split": field,
        "index": range(len(texts)),
        "sha256": [sha256_text(text) for text in texts],
        "norm_sha256": [sha256_text(normalise(text)) for text in texts],
        "chars": [len(text.strip()) for text in texts],
    })


def _pairs_frame(field: str, items: list, first: str, second: str):
    import pandas as pd

    return pd.DataFrame({
        "split": field,
        "index": range(len(items)),
        f"{first}_chars": [len(getattr(item, first).strip()) for item in items],
        f"{second}_chars": [len(getattr(item, second).strip()) for item in items],
    })


def build_tables(data: ResolvedData) -> list[Table]:
    """One table per distinct loaded list, tagged with the rule groups that apply to it."""
    privleak_same_as_forget = data.origins["privleak_forget"] == data.origins["forget_texts"]
    tables = []
    for name, origin in data.origins.items():
        items = getattr(data, name)
        if name in TEXT_TABLES:
            if name == "privleak_forget" and privleak_same_as_forget:
                continue
            groups = {"texts"} | ({"overlap"} if name in OVERLAP_TABLES else set())
            if name in ("holdout_texts", "forget_texts" if privleak_same_as_forget else "privleak_forget"):
                groups.add("privleak")
            if name == "holdout_texts":
                groups.add("holdout")
            frame = _texts_frame(origin.field, items)
        elif name in QA_TABLES:
            groups, frame = {"qa"}, _pairs_frame(origin.field, items, "question", "answer")
        else:
            groups, frame = {"verbmem"}, _pairs_frame(origin.field, items, "prompt", "gt")
        tables.append(Table(name, origin.field, frozenset(groups), frame))
    return tables


def _reference_hashes(data: ResolvedData) -> dict[str, list[str]]:
    """Hashes the overlap rules compare against (empty texts left out: they fail their own check)."""
    forget = [text for text in dict.fromkeys(data.forget_texts + data.privleak_forget) if normalise(text)]
    retain = [text for text in data.retain_texts if normalise(text)]
    return {
        "forget_sha256": sorted({sha256_text(text) for text in forget}),
        "forget_norm_sha256": sorted({sha256_text(normalise(text)) for text in forget}),
        "retain_norm_sha256": sorted({sha256_text(normalise(text)) for text in retain}),
    }


# ---- running the suite --------------------------------------------------------------------------


def run_data_checks(data: ResolvedData, *, min_privleak_texts: int = MIN_PRIVLEAK_TEXTS) -> list[Check]:
    """Validate every table with great-expectations; one Check per (rule, table)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    # Its INFO lines (temporary docs directories; base.py sets its own logger to INFO) are noise.
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # Progress bars would print "Calculating Metrics" lines on stderr for every batch.
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batches = context.data_sources.add_pandas("forget_request").add_dataframe_asset("items").add_batch_definition_whole_dataframe("each")
    rule_context = {**_reference_hashes(data), "min_privleak_texts": min_privleak_texts}
    checks = []
    for table in build_tables(data):
        rules = [rule for rule in RULES if rule.group in table.groups]
        suite = gx.ExpectationSuite(name=f"forget_request.{table.name}")
        for rule in rules:
            expectation = rule.expectation(gxe, rule_context)
            expectation.meta = {"rule": rule.name}
            suite.add_expectation(expectation)
        result = batches.get_batch(batch_parameters={"dataframe": table.frame}).validate(
            suite, result_format={"result_format": "COMPLETE"}
        )
        by_rule = {item.expectation_config.meta["rule"]: item for item in result.results}
        checks.extend(_check(rule, table, by_rule[rule.name], min_privleak_texts) for rule in rules)
    return checks


def _check(rule: Rule, table: Table, result: Any, minimum: int) -> Check:
    total = len(table.frame)
    if result.success:
        return Check(rule.name, table.field, True, rule.checks.format(minimum=minimum))
    exception = _raised(result.exception_info)
    if exception:
        return Check(rule.name, table.field, False, f"the check could not run ({exception}); report this as a bug")
    offending = [int(index) for index in result.result.get("unexpected_index_list") or []]
    problem = rule.problem.format(n=len(offending), total=total, minimum=minimum)
    return Check(rule.name, table.field, False, f"{problem}; {rule.fix}", offending)


def _raised(info: dict | None) -> str | None:
    """The message of an exception an expectation raised (GE keys it by metric when there are several)."""
    entries = [info] if info and "raised_exception" in info else list((info or {}).values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None
